"""The fresh path's commands: ``skewless events push|serve`` (the intake) and ``skewless stream run|rebuild-online|
reconcile|replay-check|fetch`` (the processor, its consistency checks, a logged fetch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from skewless.cli.app import run

events_app = typer.Typer(no_args_is_help=True, help="Send commit events to the stream (the fresh path's intake).")
stream_app = typer.Typer(no_args_is_help=True, help="The stream processor: events -> online store and lake.")


@events_app.command("push")
def events_push(
    sources: Annotated[list[Path], typer.Argument(
        help="Local git repositories (their commits not yet stored, and retractions of commits no longer "
             "reachable), Parquet or JSONL files of commit events.")],
    name: Annotated[Optional[str], typer.Option("--name", help="OWNER/NAME of ONE git repository.")] = None,
    ref: Annotated[Optional[str], typer.Option("--ref", help="Ref of ONE git repository (default branch).")] = None,
) -> None:
    """Validate commit events (the rules of `skewless ingest`), stamp their arrival and append them to the log."""
    from skewless.stream import intake

    for pushed in run(lambda: intake.push(sources, name=name, ref=ref)):
        typer.echo(pushed)


@events_app.command("serve")
def events_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8090,
) -> None:
    """The push webhook: POST /events (skewless JSON) and POST /github (GitHub push payload) into the log."""
    from skewless.core.config import profile, webhook_secret
    from skewless.stream import open_log
    from skewless.stream.webhook import make_server

    log_ = run(lambda: open_log(profile()))
    secret = webhook_secret()
    server = make_server(host, port, log_, secret)
    signed = "signed requests only" if secret else "UNSIGNED requests accepted: set SKEWLESS_WEBHOOK_SECRET"
    typer.echo(f"webhook ready on http://{host}:{server.server_address[1]} -> {log_.where} ({signed})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log_.close()


@stream_app.command("run")
def stream_run(
    once: Annotated[bool, typer.Option("--once", help="Drain the events waiting in the log, then exit.")] = False,
    max_batch: Annotated[int, typer.Option(help="Events per micro-batch.", min=1)] = 5_000,
    metrics_port: Annotated[Optional[int], typer.Option(
        help="Port of the processor's Prometheus /metrics (0: no metrics server; default 9109, none with --once).",
        min=0)] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface the /metrics server listens on.")] = "127.0.0.1",
) -> None:
    """Apply pushed commit events: live features online (visible to get_online_features at once) and
    abukix.commits / abukix.commit_events (visible to get_historical_features), then acknowledge them.
    While it runs, its lag, throughput and errors are on /metrics (runbooks/stream-freshness-slo-violation.md)."""
    from skewless.stream import processor

    if metrics_port is None:
        metrics_port = 0 if once else 9109

    def on_batch(stats) -> None:
        if not once:
            typer.echo(stats)

    try:
        stats = run(lambda: processor.run(once=once, max_batch=max_batch, on_batch=on_batch,
                                          metrics_port=metrics_port, metrics_host=metrics_host))
    except KeyboardInterrupt:
        return
    typer.echo(stats)


@stream_app.command("rebuild-online")
def stream_rebuild_online() -> None:
    """Rewrite the live views' online state from abukix.commit_events (after the online store lost it)."""
    from skewless.stream import processor

    typer.echo(f"wrote {run(processor.rebuild_online)} version(s) online")


@stream_app.command("backfill")
def stream_backfill() -> None:
    """Give the live views the history ingested in batch: every commit of abukix.commits without a version gets one
    (known at its committed_at, source "backfill"), then the online state is rebuilt. Idempotent."""
    from skewless.lake import events
    from skewless.stream import processor

    def go() -> tuple[int, int]:
        return events.backfill(), processor.rebuild_online()

    written, online = run(go)
    typer.echo(f"backfilled {written} commit(s) into the event history; wrote {online} version(s) online")


def _instant(option: str, value: Optional[str]):
    """An ISO 8601 instant with its UTC offset (``2026-12-07T10:00:00Z``), or now (UTC) when not given."""
    from datetime import datetime, timezone

    if value is None:
        return datetime.now(timezone.utc)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r} is not an ISO 8601 instant (e.g. 2026-12-07T10:00:00Z)") from None
    if at.tzinfo is None:
        raise typer.BadParameter(f"{option} {value!r} has no UTC offset: add Z (UTC) or +HH:MM")
    return at.astimezone(timezone.utc)


Record = Annotated[bool, typer.Option("--record", help="Record the result for monitoring (the exporter serves it), "
                                                      "as the stream_consistency_hourly DAG does.")]


def _report(result, record: bool, recorder) -> None:
    """Print a consistency check's result, record it for monitoring when asked (``recorder``, from
    ``skewless.ops.consistency``), and exit 1 when it found a disagreement."""
    typer.echo(result)
    if record:
        run(lambda: recorder(result.record()))
        typer.echo("recorded for monitoring")
    if not result.ok:
        raise typer.Exit(1)


@stream_app.command("reconcile")
def stream_reconcile(
    until: Annotated[Optional[str], typer.Option(
        help="Check the events that arrived before this instant (ISO 8601 with offset; default: now).")] = None,
    record: Record = False,
) -> None:
    """Check that every settled event of the log landed exactly once in abukix.commit_events and that abukix.commits
    holds what the versions say; exit 1 on any disagreement (runbooks/stream-lake-reconciliation-failed.md)."""
    from skewless.stream import reconcile as stage

    from skewless.ops import consistency

    at = _instant("--until", until)
    _report(run(lambda: stage.reconcile(at)), record, consistency.record_reconciliation)


@stream_app.command("replay-check")
def stream_replay_check(
    since: Annotated[Optional[str], typer.Option(
        help="First request time to replay (ISO 8601 with offset; default: one hour before --until).")] = None,
    until: Annotated[Optional[str], typer.Option(
        help="Replay fetches logged before this instant (ISO 8601 with offset; default: now).")] = None,
    service: Annotated[Optional[str], typer.Option(
        help="Feature service whose logged fetches are replayed (default: the fresh service).")] = None,
    record: Record = False,
) -> None:
    """Replay the logged online fetches of a feature service as the entity rows of a point-in-time
    get_historical_features; print the mismatch ratio per feature; exit 1 on any mismatch
    (runbooks/fetch-replay-consistency-failed.md)."""
    from datetime import timedelta

    from serving import replay
    from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE
    from skewless.ops import consistency

    end = _instant("--until", until)
    start = _instant("--since", since) if since is not None else end - timedelta(hours=1)
    _report(run(lambda: replay.check(start, end, service or NEXT_WEEK_COMMITS_LIVE_SERVICE)), record,
            consistency.record_replay)


@stream_app.command("fetch")
def stream_fetch(
    entities: Annotated[list[str], typer.Argument(help="Entities (repositories, owner/name) to fetch.")],
    service: Annotated[Optional[str], typer.Option(
        help="Feature service to fetch (default: the fresh service).")] = None,
) -> None:
    """Fetch a feature service's online features and log them with their request time (the serving log that
    `skewless stream replay-check` replays); prints one JSON line per entity."""
    import json

    from serving.fetch import LoggedFetcher
    from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE

    fetcher = run(lambda: LoggedFetcher(service or NEXT_WEEK_COMMITS_LIVE_SERVICE))
    for row in run(lambda: fetcher.fetch(entities)):
        typer.echo(json.dumps({fetcher.join_key: row.entity, "ts": row.ts.isoformat(), **row.features}))
