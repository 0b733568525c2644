"""Training and drill commands: train the model through Feast, regenerate the drill reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from skewless.cli.app import Cutoff, Day, app, parse_day, run
from skewless.core.config import NEXT_WEEK_COMMITS_SERVICE

drills_app = typer.Typer(no_args_is_help=True, help="Drills: what goes wrong without the platform, measured.")


@app.command()
def train(
    cutoff: Cutoff = None,
    until: Day = None,
    service: Annotated[str, typer.Option(help="The registered feature service to train on (its features are "
                                              "recorded on the model version).")] = NEXT_WEEK_COMMITS_SERVICE,
) -> None:
    """Train next_week_commits on a feature service (through Feast); log and register it in MLflow.

    --until bounds the data to the weeks that ended by that day (default: all the data).
    """
    import time

    from training import train as stage

    t0 = time.perf_counter()
    day = parse_day(until) if until else None
    result = run(lambda: stage.train(cutoff=cutoff, until=day, service=service))
    typer.echo(f"run id:        {result.run_id}")
    typer.echo(f"model version: {stage.MODEL_NAME} {result.model_version} "
               f"(tag {stage.FEATURE_SERVICE_TAG}={result.feature_service})")
    typer.echo(f"features:      {', '.join(result.training_set.features)}")
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
    from skewless import features, lake
    from skewless.ops import feast_ops
    from skewless.lake import ingest as ingest_stage
    from skewless.core.config import PROJECT_ROOT, commit_sources
    from skewless.drills import leakage as drills

    def go():
        typer.echo(str(ingest_stage.ingest([source] if source else commit_sources())), err=True)
        day = lake.newest_commit_day()
        for r in features.build(day):
            typer.echo(str(r), err=True)
        feast_ops.apply()
        variant = features.build_variant(features.REPO_ACTIVITY, "authored_at", day)
        return drills.run_leakage({features.REPO_ACTIVITY.name: variant}, out or PROJECT_ROOT / "reports",
                                  cutoff=cutoff)

    result = run(go)
    typer.echo(result.markdown.read_text())
    typer.echo(f"wrote {result.markdown} and {result.png}")


@drills_app.command("fresh-model")
def drills_fresh_model(
    source: Annotated[Optional[Path], typer.Option(
        help="Commits to ingest first (default: ../shared data when present, else the sample).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Report directory (default: <project>/reports).")] = None,
    cutoff: Cutoff = None,
) -> None:
    """Regenerate the fresh-vs-daily report: next-week-commits trained on the daily and on the fresh service,
    scored on the same Monday and mid-week instants.

    In the active home (use a dedicated SKEWLESS_HOME): ingest --source (idempotent), build the feature tables,
    apply, backfill the live views' history (`skewless stream backfill`), then train and score both ways.
    """
    from skewless import features, lake
    from skewless.core.config import PROJECT_ROOT, commit_sources
    from skewless.drills import fresh_model
    from skewless.lake import ingest as ingest_stage
    from skewless.ops import feast_ops

    def go():
        typer.echo(str(ingest_stage.ingest([source] if source else commit_sources())), err=True)
        for r in features.build(lake.newest_commit_day()):
            typer.echo(str(r), err=True)
        feast_ops.apply()
        typer.echo(f"backfilled {fresh_model.backfill_history()} commit version(s)", err=True)
        return fresh_model.run_fresh_model(out or PROJECT_ROOT / "reports", cutoff=cutoff)

    result = run(go)
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
    from skewless.drills import skew

    result = run(lambda: skew.run(source=source, weeks=weeks, home=home, report=out or skew.REPORT,
                                  echo=lambda m: typer.echo(m, err=True)))
    typer.echo(result.markdown())
    typer.echo(f"wrote {result.report}", err=True)
