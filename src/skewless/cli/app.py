"""The ``skewless`` Typer app, its global options and the ONE error handler every command goes through."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

import typer

from skewless.core.errors import SkewlessError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The ``skewless`` command: one typed sub-command per stage.")

Day = Annotated[Optional[str], typer.Option("--until", help="Last UTC day (YYYY-MM-DD) to include.")]
Cutoff = Annotated[Optional[str], typer.Option(
    help="First Monday (YYYY-MM-DD) of the evaluation split (default: the last 26 observed weeks).")]


def parse_day(value: str | None, default: date | None = None) -> date:
    """A --until value as a day (or ``default``), with a usage error naming the option."""
    if value is None:
        if default is None:
            raise typer.BadParameter("--until is required here")
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"--until {value!r} is not a day in YYYY-MM-DD form") from None


def run(fn):
    """Run ``fn``; a :class:`SkewlessError` (a user's mistake or an unavailable resource) becomes one red line on
    stderr and its exit code, never a traceback. Any other exception is a bug and keeps its traceback."""
    try:
        return fn()
    except SkewlessError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(e.exit_code) from None


@app.callback()
def main_options(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show what the libraries (Feast, MLflow, KServe) log, print and warn.")] = False,
) -> None:
    from skewless.core import terminal
    from skewless.core.config import activate

    terminal.configure(verbose)

    run(activate)
