"""Serving command: the KServe predictor over the online store."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

from skewless.cli.app import app, run
from skewless.core.config import NEXT_WEEK_COMMITS_MODEL
from skewless.core.errors import SkewlessError


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    model_name: Annotated[str, typer.Option(help="Registered MLflow model (also the KServe model name).")]
    = NEXT_WEEK_COMMITS_MODEL,
    model_version: Annotated[Optional[str], typer.Option(
        help="Model version number or alias (default: the latest version).")] = None,
    max_instances: Annotated[int, typer.Option(help="Largest batch accepted (more: 400).")] = 1000,
    access_log: Annotated[bool, typer.Option(help="Log one line per HTTP request.")] = False,
    serving_time: Annotated[Optional[str], typer.Option(
        help="REPLAY ONLY (demos, tests on past data): apply the views' TTL at this UTC time (ISO 8601) "
             "instead of the wall clock. Never in live serving.")] = None,
) -> None:
    """Serve the model over KServe's v1/v2 REST protocol with features from the Feast online store."""
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

    def go():
        try:
            server.serve(host, port, model_name, model_version, access_log=access_log, serving_time=at,
                         echo=lambda m: typer.echo(m, err=True), max_instances=max_instances)
        except OSError as e:  # the address is taken or cannot be bound
            raise SkewlessError(f"cannot serve on {host}:{port}: {e}") from e

    run(go)
