"""The ``skewless`` command: one typed sub-command per stage."""

from __future__ import annotations

import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
features_app = typer.Typer(no_args_is_help=True, help="Feature tables in Iceberg.")
app.add_typer(features_app, name="features")
monitor_app = typer.Typer(no_args_is_help=True, help="Prometheus metrics: freshness, materialization, parity.")
app.add_typer(monitor_app, name="monitor")
repos_app = typer.Typer(no_args_is_help=True, help="Repositories stored in abukix.commits.")
app.add_typer(repos_app, name="repos")
quarantine_app = typer.Typer(no_args_is_help=True, help="Rows that `ingest --skip-invalid` set aside.")
app.add_typer(quarantine_app, name="quarantine")

SAMPLE = Path(__file__).parent / "data" / "sample_commits.parquet"

Day = Annotated[Optional[str], typer.Option("--until", help="Last UTC day (YYYY-MM-DD) to include.")]


def _day(value: str | None, default: date | None = None) -> date:
    if value is None:
        if default is None:
            raise typer.BadParameter("--until is required here")
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"--until {value!r} is not a day in YYYY-MM-DD form") from None


def _latest_commit_day() -> date:
    """The UTC day of the newest commit in the lake (the default --until of build and materialize)."""
    import pyarrow.compute as pc

    from skewless import lake

    t = lake.commits_table()
    col = t.scan(selected_fields=("committed_at",)).to_arrow()["committed_at"]
    if len(col) == 0:
        raise lake.LakeError("abukix.commits is empty; run `skewless ingest` first")
    return pc.max(col).as_py().astimezone(timezone.utc).date()


def _run(fn):
    """Turn expected errors into one clear line and exit code 1 (no stack trace for bad input)."""
    from skewless.config import ProfileError
    from skewless.feast_ext.redis_cluster import ClusterNodeError
    from skewless.ingest import IngestError
    from skewless.lake import LakeError

    try:
        return fn()
    except (IngestError, LakeError, ProfileError, ClusterNodeError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.callback()
def _main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show what the libraries (Feast, MLflow, KServe) log, print and warn.")] = False,
) -> None:
    from skewless import terminal
    from skewless.config import activate

    terminal.configure(verbose)

    _run(activate)


@app.command()
def env() -> None:
    """Print the active profile's environment as shell exports: eval "$(skewless env)"."""
    from skewless.config import profile

    for k, v in profile().feast_env().items():
        print(f"export {k}='{v}'")


@app.command()
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="Parquet files or local git repositories.")],
    name: Annotated[Optional[str], typer.Option(
        "--name", help="OWNER/NAME to store ONE git repository under (default: its GitHub/GitLab origin, else its "
                       "directory name, which the output states).")] = None,
    ref: Annotated[Optional[str], typer.Option(
        "--ref", help="Branch, tag or commit of ONE git repository whose history is ingested (default: the "
                      "default branch).")] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Apply stored commits that arrive with other values as corrections (reported), and "
                          "accept a wholly rewritten history under its own name.")] = False,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Set rows that break a rule aside in abukix.commits_quarantine instead of failing "
                               "the whole call.")] = False,
) -> None:
    """Ingest commit events into the Iceberg table abukix.commits (idempotent, all-or-nothing).

    A git repository's stored history becomes exactly the commits reachable from the ingested ref: commits that
    disappeared (amend, rebase, force-push) are retracted and reported. See README "Ingest" for the rules.
    """
    from skewless import ingest as stage

    typer.echo(_run(lambda: stage.ingest(sources, show_progress=sys.stderr.isatty(), name=name, ref=ref,
                                         replace=replace, skip_invalid=skip_invalid)))


@repos_app.command("rename")
def repos_rename(
    old: Annotated[str, typer.Argument(help="The name the repository is stored under.")],
    new: Annotated[str, typer.Argument(help="Its new name, OWNER/NAME (unused).")],
) -> None:
    """Store every commit of a repository under a new name (one Iceberg commit; `features build` restates both)."""
    from skewless import ingest as stage

    typer.echo(_run(lambda: stage.rename_repo(old, new)))


@quarantine_app.command("list")
def quarantine_list(
    source: Annotated[Optional[str], typer.Option("--source", help="Only the rows of this source.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows (newest first); 0: all.")] = 50,
) -> None:
    """The rows set aside by `ingest --skip-invalid`: when, source, rule, reason and the row as read."""
    from skewless import ingest as stage

    t = _run(lambda: stage.quarantined(source, limit or None))
    if t.num_rows == 0:
        typer.echo("no quarantined rows")
        return
    for r in t.to_pylist():
        typer.echo(f"{r['quarantined_at']:%Y-%m-%dT%H:%M:%SZ}  {r['source']}  {r['rule']}: {r['reason']}\n"
                   f"    {r['row']}")


@features_app.command("build")
def features_build(
    until: Day = None,
    engine: Annotated[Optional[str], typer.Option(help="duckdb | spark (default: SKEWLESS_ENGINE, else duckdb); "
                                                       "same SQL, same tables, see ADR 0008.")] = None,
) -> None:
    """Compute the feature tables into Iceberg through --until (default: the newest commit's day)."""
    import os

    from skewless import features
    from skewless.config import profile

    # The one profile function still decides: --engine only stands in for SKEWLESS_ENGINE.
    p = _run(lambda: profile({**os.environ, "SKEWLESS_ENGINE": engine}) if engine else profile())
    day = _run(lambda: _day(until) if until else _latest_commit_day())
    for r in _run(lambda: features.build(day, p, progress=lambda m: typer.echo(m, err=True))):
        typer.echo(str(r))


@features_app.command("describe")
def features_describe(
    write_readme: Annotated[bool, typer.Option(help="Write it into README.md between its markers.")] = False,
) -> None:
    """Print the feature catalogue (from the Feast definitions) as Markdown."""
    from skewless import catalog_doc
    from skewless.config import PROJECT_ROOT

    if write_readme:
        _run(lambda: catalog_doc.write_readme(PROJECT_ROOT / "README.md"))
    else:
        typer.echo(_run(catalog_doc.markdown))


@app.command()
def apply() -> None:
    """Register the feature repository (same effect as `feast apply` with the profile's yaml)."""
    from skewless import feast_ops

    _run(feast_ops.apply)


@app.command()
def plan() -> None:
    """Show what `apply` would change (same as `feast plan`)."""
    from skewless import feast_ops

    _run(feast_ops.plan)


@app.command()
def guard(
    base: Annotated[str, typer.Option(help="Git revision to compare the working tree with.")] = "HEAD~1",
    registry: Annotated[bool, typer.Option(help="Also treat services named by model versions in the profile's "
                                                "MLflow registry as in use.")] = True,
) -> None:
    """CI guard: `feast plan` of the working tree against --base; exit 1 if a service in use loses, renames or
    retypes a feature."""
    from skewless import feature_guard

    try:
        outcome = _run(lambda: feature_guard.run(base, use_registry=registry, echo=typer.echo))
    except feature_guard.GuardError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def lineage(
    sink: Annotated[Optional[str], typer.Option(help="file | server (default: server when DATAHUB_GMS_URL is set, "
                                                     "else file).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="File of the file sink (default "
                                                     "$SKEWLESS_HOME/lineage/lineage.json).")] = None,
) -> None:
    """Emit DataHub lineage: Iceberg tables → Feast views and services → registered MLflow models."""
    from skewless import lineage as stage

    try:
        lin, where = _run(lambda: stage.emit(sink, out))
    except stage.LineageError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    for note in lin.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"{len(lin.mcps)} metadata change proposals for {len(lin.urns())} entities "
               f"({len(lin.urns('dataset'))} Iceberg tables, {len(lin.urns('mlFeatureTable'))} feature views and "
               f"services, {len(lin.urns('mlModel'))} model versions) -> {where}")


@app.command()
def materialize(
    until: Day = None,
    record: Annotated[bool, typer.Option("--record", help="Then record the success for monitoring "
                                                          "(skewless_materialization_last_success_*), as the daily "
                                                          "DAG does.")] = False,
) -> None:
    """Load the online store incrementally with the values as of --until (default: last built day)."""
    from skewless import feast_ops, features

    def go():
        day = _day(until) if until else min(d for d in features.built_through().values() if d)
        return feast_ops.materialize(day)

    for r in _run(go):
        typer.echo(str(r))
    if record:
        from skewless import freshness

        typer.echo(f"recorded materialization at {_run(freshness.record_materialization).isoformat()}")


@app.command()
def parity(
    sample: Annotated[int, typer.Option(help="Entities sampled per feature view (0: all).")] = 200,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    record: Annotated[bool, typer.Option("--record", help="Record the result for monitoring (skewless_parity_*), "
                                                          "as the daily DAG does.")] = False,
) -> None:
    """Compare online values with point-in-time offline values; exit 1 on any mismatch."""
    from skewless import parity as stage

    results = _run(lambda: stage.check(sample=sample or None, seed=seed))
    typer.echo(stage.report(results))
    if record:
        from skewless import freshness

        _run(lambda: freshness.record_parity(results))
        typer.echo("recorded for monitoring")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    model_name: Annotated[str, typer.Option(help="Registered MLflow model (also the KServe model name).")]
    = "next_week_commits",
    model_version: Annotated[Optional[str], typer.Option(
        help="Model version number or alias (default: the latest version).")] = None,
    max_instances: Annotated[int, typer.Option(help="Largest batch accepted (more: 400).")] = 1000,
    access_log: Annotated[bool, typer.Option(help="Log one line per HTTP request.")] = False,
    serving_time: Annotated[Optional[str], typer.Option(
        help="REPLAY ONLY (demos, tests on past data): apply the views' TTL at this UTC time (ISO 8601) "
             "instead of the wall clock. Never in live serving.")] = None,
) -> None:
    """Serve the model over KServe's v1/v2 REST protocol with features from the Feast online store."""
    from skewless.skew import SkewError

    if not 1 <= max_instances <= 100_000:
        raise typer.BadParameter(f"--max-instances {max_instances} is outside [1, 100000]")
    at = None
    if serving_time is not None:
        try:
            at = datetime.fromisoformat(serving_time)
        except ValueError:
            raise typer.BadParameter(f"--serving-time {serving_time!r} is not an ISO 8601 time") from None
        at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    typer.echo("loading KServe, MLflow and Feast ...", err=True)  # the imports alone take seconds
    from serving import server

    try:
        _run(lambda: server.serve(host, port, model_name, model_version, access_log=access_log, serving_time=at,
                                  echo=lambda m: typer.echo(m, err=True), max_instances=max_instances))
    except (SkewError, OSError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command()
def status() -> None:
    """Where the deployment stands: snapshots, built/materialized days, newest online values, findings (read-only)."""
    from skewless import status as stage

    typer.echo(_monitor_run(lambda: stage.render(stage.read())))


@app.command()
def demo(
    source: Annotated[Optional[Path], typer.Option(help="Commits to ingest (default: the shipped sample).")] = None,
) -> None:
    """The main job on the active profile: ingest → build → apply → materialize → show rows and parity."""
    from skewless import demo as stage

    ok = _run(lambda: stage.run(source or SAMPLE, echo=typer.echo))
    if not ok:
        raise typer.Exit(1)


def _monitor_run(fn):
    from monitoring.exporter import ExporterError
    from skewless.freshness import FreshnessError

    try:
        return _run(fn)
    except (ExporterError, FreshnessError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@monitor_app.command("serve")
def monitor_serve(
    port: Annotated[int, typer.Option(help="TCP port of the /metrics endpoint.")] = 9798,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
) -> None:
    """Serve /metrics for Prometheus: online freshness, materialization and parity per feature view."""
    from monitoring import exporter

    _monitor_run(lambda: exporter.serve(port, host, echo=lambda m: typer.echo(m, err=True)))


@monitor_app.command("export")
def monitor_export(
    out: Annotated[Optional[Path], typer.Option(help="Textfile to write (*.prom; default "
                                                     "$SKEWLESS_HOME/monitoring/skewless.prom); '-' prints.")] = None,
) -> None:
    """Read the metrics once and write them atomically (node_exporter textfile format)."""
    from monitoring import exporter

    if out is not None and str(out) == "-":
        typer.echo(_monitor_run(exporter.render), nl=False)
        return
    path, _ = _monitor_run(lambda: exporter.write_textfile(out))
    typer.echo(str(path))


drills_app = typer.Typer(no_args_is_help=True, help="Drills: what goes wrong without the platform, measured.")
app.add_typer(drills_app, name="drills")


def _train_run(fn):
    from skewless.snapshots import SnapshotPinError
    from training.dataset import DatasetError
    from training.drills import DrillError
    from training.labels import LabelError
    from training.train import TrainingError

    try:
        return _run(fn)
    except (DatasetError, DrillError, LabelError, SnapshotPinError, TrainingError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


Cutoff = Annotated[Optional[str], typer.Option(
    help="First Monday (YYYY-MM-DD) of the evaluation split (default: the last 26 observed weeks).")]


@app.command()
def train(cutoff: Cutoff = None, until: Day = None) -> None:
    """Train next_week_commits on its feature service (through Feast); log and register it in MLflow.

    --until bounds the data to the weeks that ended by that day (default: all the data).
    """
    import time

    from training import train as stage

    t0 = time.perf_counter()
    day = _day(until) if until else None
    result = _train_run(lambda: stage.train(cutoff=cutoff, until=day))
    typer.echo(f"run id:        {result.run_id}")
    typer.echo(f"model version: {stage.MODEL_NAME} {result.model_version} "
               f"(tag {stage.FEATURE_SERVICE_TAG}={result.feature_service})")
    typer.echo("snapshots:     " + ", ".join(f"{k}@{v}" for k, v in sorted(result.snapshots.items())))
    typer.echo(f"evaluation:    weeks from {result.cutoff:%Y-%m-%d}; trained in {time.perf_counter() - t0:.1f}s")
    typer.echo(stage.metrics_table(result.metrics))


@drills_app.command("leakage")
def drills_leakage(
    source: Annotated[Optional[Path], typer.Option(
        help="Commits to ingest first (default: ../shared data when present, else the sample).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Report directory (default: <project>/reports).")] = None,
    cutoff: Cutoff = None,
) -> None:
    """Regenerate the leakage drill report (point-in-time vs latest-value vs authored_at features).

    In the active home (use a dedicated SKEWLESS_HOME): ingest --source (idempotent), build the feature tables,
    apply, build the drill-only authored_at variant, then train and score the three ways.
    """
    from skewless import feast_ops, features, ingest as ingest_stage
    from skewless.config import PROJECT_ROOT, commit_sources
    from training import drills

    def go():
        typer.echo(str(ingest_stage.ingest([source] if source else commit_sources())), err=True)
        day = _latest_commit_day()
        for r in features.build(day):
            typer.echo(str(r), err=True)
        feast_ops.apply()
        variant = features.build_variant(features.REPO_ACTIVITY, "authored_at", day)
        return drills.run_leakage({features.REPO_ACTIVITY.name: variant}, out or PROJECT_ROOT / "reports",
                                  cutoff=cutoff)

    result = _train_run(go)
    typer.echo(result.markdown.read_text())
    typer.echo(f"wrote {result.markdown} and {result.png}")


@drills_app.command("skew")
def drills_skew(
    source: Annotated[Optional[Path], typer.Option(
        help="Commits to ingest (default: ../shared data when present, else the sample).")] = None,
    weeks: Annotated[int, typer.Option(help="Backtest Mondays (the model trains on the weeks before).")] = 26,
    home: Annotated[Optional[Path], typer.Option(
        help="Scratch home, wiped on every run (default: $SKEWLESS_HOME/drills/skew).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Report file (default: <project>/reports/skew_drill.md).")]
    = None,
) -> None:
    """Regenerate the serving-skew drill report: injected serving skews vs parity, KS/PSI and accuracy.

    Works in its own scratch local home (ingest, build, apply, train, then replay the backtest weeks through the
    predictor with honest and skewed online readers); the active home is not touched.
    """
    from skewless import skew

    try:
        result = _train_run(lambda: skew.run(source=source, weeks=weeks, home=home, report=out or skew.REPORT,
                                             echo=lambda m: typer.echo(m, err=True)))
    except skew.SkewError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(result.markdown())
    typer.echo(f"wrote {result.report}", err=True)


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
        help="Run one section: 'historical' (get_historical_features vs raw DuckDB ASOF JOIN and stock Feast) or "
             "'materialization' (with online reads).")] = None,
    cluster: Annotated[bool, typer.Option(help="Also materialize into a 3-master Redis Cluster started on free "
                                               "loopback ports (needs redis-server and redis-cli).")] = True,
) -> None:
    """Benchmark skewless's Feast extensions against stock Feast and the raw DuckDB/Redis limits."""
    from skewless import bench as stage
    from skewless.bench.runner import BenchError
    from skewless.config import PROJECT_ROOT

    host, _, port = redis.partition(":")
    if not port.isdigit():
        raise typer.BadParameter(f"--redis {redis!r} is not host:port")
    out_dir = out or PROJECT_ROOT / "bench_results"
    work = workdir or out_dir / ("work-quick" if quick else "work-full")
    from skewless.bench.runner import SECTIONS

    if only is not None and only not in SECTIONS:
        raise typer.BadParameter(f"--only {only!r}: choose one of {', '.join(SECTIONS)}")
    command = "skewless bench" + (" --quick" if quick else "") + (f" --only {only}" if only else "")
    try:
        _, files = stage.run(quick, work, out_dir, host, int(port), redis_db, repeats, cap_gb, timeout,
                             echo=lambda m: typer.echo(m, err=True), command=command,
                             sections=(only,) if only else None, cluster=cluster)
    except BenchError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(files["markdown"].read_text())
    typer.echo("wrote " + ", ".join(str(p) for p in files.values()), err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
