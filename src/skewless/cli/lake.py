"""Stage 1 commands: ingest into ``abukix.commits``, rename a repository, list the quarantine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from skewless.cli.app import app, run

repos_app = typer.Typer(no_args_is_help=True, help="Repositories stored in abukix.commits.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Rows that `ingest --skip-invalid` set aside.")


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
    from skewless.lake import ingest as stage

    typer.echo(run(lambda: stage.ingest(sources, show_progress=sys.stderr.isatty(), name=name, ref=ref,
                                         replace=replace, skip_invalid=skip_invalid)))


@repos_app.command("rename")
def repos_rename(
    old: Annotated[str, typer.Argument(help="The name the repository is stored under.")],
    new: Annotated[str, typer.Argument(help="Its new name, OWNER/NAME (unused).")],
) -> None:
    """Store every commit of a repository under a new name (one Iceberg commit; `features build` restates both)."""
    from skewless.lake import ingest as stage

    typer.echo(run(lambda: stage.rename_repo(old, new)))


@quarantine_app.command("list")
def quarantine_list(
    source: Annotated[Optional[str], typer.Option("--source", help="Only the rows of this source.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows (newest first); 0: all.")] = 50,
) -> None:
    """The rows set aside by `ingest --skip-invalid`: when, source, rule, reason and the row as read."""
    from skewless.lake import ingest as stage

    t = run(lambda: stage.quarantined(source, limit or None))
    if t.num_rows == 0:
        typer.echo("no quarantined rows")
        return
    for r in t.to_pylist():
        typer.echo(f"{r['quarantined_at']:%Y-%m-%dT%H:%M:%SZ}  {r['source']}  {r['rule']}: {r['reason']}\n"
                   f"    {r['row']}")
