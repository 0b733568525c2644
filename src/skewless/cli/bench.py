"""The benchmark command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from skewless.cli.app import app, run


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (seconds, not minutes): checks the paths agree.")]
    = False,
    out: Annotated[Optional[Path], typer.Option(help="Report folder (default: <project>/bench_results).")] = None,
    workdir: Annotated[Optional[Path], typer.Option(
        help="Data and logs (default: <out>/work-full or work-quick; reused when the sizes are unchanged).")] = None,
    redis: Annotated[str, typer.Option(help="Redis host:port for the materialization paths.")] = "127.0.0.1:6379",
    redis_db: Annotated[int, typer.Option(help="An EMPTY Redis database number (written, then flushed).")] = 4,
    repeats: Annotated[Optional[int], typer.Option(help="Runs per fast path at the headline size (default 3).")]
    = None,
    cap_gb: Annotated[float, typer.Option(help="RSS cap per path: stock Feast above it is stopped (DNF).")] = 12.0,
    timeout: Annotated[float, typer.Option(help="Seconds per path before it is stopped (DNF).")] = 900.0,
    only: Annotated[Optional[str], typer.Option(
        help="Run one section: 'historical' (get_historical_features vs raw DuckDB ASOF JOIN and stock Feast), "
             "'materialization' (with online reads) or 'streaming' (the stream processor vs JetStream's own "
             "throughput and latency, live vs daily reads and training retrieval).")] = None,
    cluster: Annotated[bool, typer.Option(help="Also materialize into a 3-master Redis Cluster started on free "
                                               "loopback ports (needs redis-server and redis-cli).")] = True,
    pg: Annotated[str, typer.Option(help="streaming: PostgreSQL server (no database) where the section creates, then "
                                         "drops, a database of its own.")] = "postgresql+psycopg://postgres@127.0.0.1:5432",
    nats: Annotated[str, typer.Option(help="streaming: NATS JetStream server (throwaway streams, deleted after).")]
    = "nats://127.0.0.1:4222",
    stream_rate: Annotated[Optional[int], typer.Option(help="streaming: events/s of the fixed-rate runs (default "
                                                            "5000; --quick 300).")] = None,
    stream_seconds: Annotated[Optional[float], typer.Option(help="streaming: seconds of the fixed-rate runs (default "
                                                                 "30).")] = None,
    stream_events: Annotated[Optional[int], typer.Option(help="streaming: events of the full-speed runs (default "
                                                              "200000).")] = None,
    stream_entity_rows: Annotated[Optional[int], typer.Option(
        help="streaming: entity rows of the live-vs-daily training retrieval (default and full size 1000000; "
             "--quick 2000).")] = None,
) -> None:
    """Benchmark skewless's Feast extensions against stock Feast and the raw DuckDB/Redis limits."""
    from skewless import bench as stage
    from skewless.core.config import PROJECT_ROOT

    host, _, port = redis.partition(":")
    if not port.isdigit():
        raise typer.BadParameter(f"--redis {redis!r} is not host:port")
    out_dir = out or PROJECT_ROOT / "bench_results"
    work = workdir or out_dir / ("work-quick" if quick else "work-full")
    from skewless.bench.runner import SECTIONS

    if only is not None and only not in SECTIONS:
        raise typer.BadParameter(f"--only {only!r}: choose one of {', '.join(SECTIONS)}")
    import dataclasses

    overrides = {k: v for k, v in (("stream_rate", stream_rate), ("stream_seconds", stream_seconds),
                                   ("stream_events", stream_events), ("stream_entity_rows", stream_entity_rows))
                 if v is not None}
    bad = [k for k, v in overrides.items() if v <= 0]
    if bad:
        raise typer.BadParameter(f"--{bad[0].replace('_', '-')} must be positive")
    sizes = dataclasses.replace(stage.QUICK if quick else stage.FULL, **overrides)
    command = ("skewless bench" + (" --quick" if quick else "") + (f" --only {only}" if only else "")
               + "".join(f" --{k.replace('_', '-')} {v:g}" for k, v in overrides.items()))
    _, files = run(lambda: stage.run(quick, work, out_dir, host, int(port), redis_db, repeats, cap_gb, timeout,
                                     echo=lambda m: typer.echo(m, err=True), command=command,
                                     sections=(only,) if only else None, cluster=cluster, sizes=sizes,
                                     pg=pg, nats=nats))
    typer.echo(files["markdown"].read_text())
    typer.echo("wrote " + ", ".join(str(p) for p in files.values()), err=True)
