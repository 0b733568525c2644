"""The main job: ``skewless demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from skewless.cli.app import app, run
from skewless.data import SAMPLE_COMMITS


@app.command()
def demo(
    source: Annotated[Optional[Path], typer.Option(help="Commits to ingest (default: the shipped sample).")] = None,
) -> None:
    """The main job on the active profile: ingest → build → apply → materialize → show rows and parity."""
    from skewless import demo as stage

    ok = run(lambda: stage.run(source or SAMPLE_COMMITS, echo=typer.echo))
    if not ok:
        raise typer.Exit(1)
