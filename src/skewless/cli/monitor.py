"""Monitoring commands: the Prometheus /metrics endpoint and the textfile export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from skewless.cli.app import run

monitor_app = typer.Typer(no_args_is_help=True, help="Prometheus metrics: freshness, materialization, parity.")


@monitor_app.command("serve")
def monitor_serve(
    port: Annotated[int, typer.Option(help="TCP port of the /metrics endpoint.")] = 9798,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
) -> None:
    """Serve /metrics for Prometheus: online freshness, materialization and parity per feature view."""
    from monitoring import exporter

    run(lambda: exporter.serve(port, host, echo=lambda m: typer.echo(m, err=True)))


@monitor_app.command("export")
def monitor_export(
    out: Annotated[Optional[Path], typer.Option(help="Textfile to write (*.prom; default "
                                                     "$SKEWLESS_HOME/monitoring/skewless.prom); '-' prints.")] = None,
) -> None:
    """Read the metrics once and write them atomically (node_exporter textfile format)."""
    from monitoring import exporter

    if out is not None and str(out) == "-":
        typer.echo(run(exporter.render), nl=False)
        return
    path, _ = run(lambda: exporter.write_textfile(out))
    typer.echo(str(path))
