"""Feast and operations commands: env, apply, plan, guard, lineage, materialize, parity, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from skewless.cli.app import Day, app, parse_day, run


@app.command()
def env() -> None:
    """Print the active profile's environment as shell exports: eval "$(skewless env)"."""
    from skewless.core.config import profile

    for k, v in profile().feast_env().items():
        print(f"export {k}='{v}'")


@app.command()
def apply() -> None:
    """Register the feature repository (same effect as `feast apply` with the profile's yaml)."""
    from skewless.ops import feast_ops

    run(feast_ops.apply)


@app.command()
def plan(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print Feast's own `feast plan` output "
                                                                  "(every changed field as proto dumps).")] = False,
) -> None:
    """Show what `apply` would change: per feature view and service, the features added, removed or retyped and
    any other property changed; "no changes" when the registry holds the definitions already."""
    from skewless.core import terminal
    from skewless.ops import feast_ops

    typer.echo(run(lambda: feast_ops.plan(verbose=verbose or terminal.verbose())))


@app.command()
def guard(
    base: Annotated[str, typer.Option(help="Git revision to compare the working tree with.")] = "HEAD~1",
    registry: Annotated[bool, typer.Option(help="Also treat services named by model versions in the profile's "
                                                "MLflow registry as in use, and check the features each version "
                                                "recorded against the working tree.")] = True,
) -> None:
    """CI guard: `feast plan` of the working tree against --base; exit 1 if a service in use loses, renames or
    retypes a feature, or a registered model version no longer finds a feature it was trained on."""
    from skewless.ops import feature_guard

    outcome = run(lambda: feature_guard.run(base, use_registry=registry, echo=typer.echo))
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
    from skewless.ops import lineage as stage

    lin, where = run(lambda: stage.emit(sink, out))
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
    from skewless import features
    from skewless.ops import feast_ops

    def go():
        day = parse_day(until) if until else min(d for d in features.built_through().values() if d)
        return feast_ops.materialize(day)

    for r in run(go):
        typer.echo(str(r))
    if record:
        from skewless.ops import freshness

        typer.echo(f"recorded materialization at {run(freshness.record_materialization).isoformat()}")


@app.command()
def parity(
    sample: Annotated[int, typer.Option(help="Entities sampled per feature view (0: all).")] = 200,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    record: Annotated[bool, typer.Option("--record", help="Record the result for monitoring (skewless_parity_*), "
                                                          "as the daily DAG does.")] = False,
) -> None:
    """Compare online values with point-in-time offline values; exit 1 on any mismatch."""
    from skewless.ops import parity as stage

    results = run(lambda: stage.check(sample=sample or None, seed=seed))
    typer.echo(stage.report(results))
    if record:
        from skewless.ops import freshness

        run(lambda: freshness.record_parity(results))
        typer.echo("recorded for monitoring")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Where the deployment stands: snapshots, built/materialized days, newest online values, findings (read-only)."""
    from skewless.ops import status as stage

    typer.echo(run(lambda: stage.render(stage.read())))
