"""The ``skewless`` command: one typed sub-command per stage, one module per sub-app, one error handler
(:func:`skewless.cli.app.run`)."""

# Imported in the order of the data flow, which is the order `skewless --help` lists the commands in.
from skewless.cli import lake  # noqa: I001
from skewless.cli import features
from skewless.cli import stream
from skewless.cli import store
from skewless.cli import train
from skewless.cli import serving
from skewless.cli import monitor
from skewless.cli import bench
from skewless.cli import demo
from skewless.cli.app import app

app.add_typer(features.features_app, name="features")
app.add_typer(lake.repos_app, name="repos")
app.add_typer(lake.quarantine_app, name="quarantine")
app.add_typer(stream.events_app, name="events")
app.add_typer(stream.stream_app, name="stream")
app.add_typer(monitor.monitor_app, name="monitor")
app.add_typer(train.drills_app, name="drills")

__all__ = ["app", "bench", "demo", "features", "lake", "main", "monitor", "serving", "store", "stream", "train"]


def main() -> None:
    app()
