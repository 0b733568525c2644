"""Stage 2 commands: build the feature tables, describe the catalogue."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from skewless.cli.app import Day, parse_day, run

features_app = typer.Typer(no_args_is_help=True, help="Feature tables in Iceberg.")


@features_app.command("build")
def features_build(
    until: Day = None,
    engine: Annotated[Optional[str], typer.Option(help="duckdb | spark (default: SKEWLESS_ENGINE, else duckdb); "
                                                       "same SQL, same tables, see ADR 0008.")] = None,
) -> None:
    """Compute the feature tables into Iceberg through --until (default: the newest commit's day)."""
    import os

    from skewless import features, lake
    from skewless.core.config import profile

    # The one profile function still decides: --engine only stands in for SKEWLESS_ENGINE.
    p = run(lambda: profile({**os.environ, "SKEWLESS_ENGINE": engine}) if engine else profile())
    day = run(lambda: parse_day(until) if until else lake.newest_commit_day())
    for r in run(lambda: features.build(day, p, progress=lambda m: typer.echo(m, err=True))):
        typer.echo(str(r))


@features_app.command("describe")
def features_describe(
    write_readme: Annotated[bool, typer.Option(help="Write it into README.md between its markers.")] = False,
) -> None:
    """Print the feature catalogue (from the Feast definitions) as Markdown."""
    from skewless.ops import catalog_doc
    from skewless.core.config import PROJECT_ROOT

    if write_readme:
        run(lambda: catalog_doc.write_readme(PROJECT_ROOT / "README.md"))
    else:
        typer.echo(run(catalog_doc.markdown))
