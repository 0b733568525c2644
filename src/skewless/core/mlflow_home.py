"""The profile's MLflow tracking database, created with every artifact location inside ``SKEWLESS_HOME``.

MLflow creates its database on first use together with the experiment "Default" (id 0), whose artifact location
is ``./mlruns/0`` of the process's working directory: state outside the home, different for every cwd. When the
tracking URI is the profile's own SQLite file and it does not exist yet, :func:`ensure` creates it first with
``SKEWLESS_HOME/mlartifacts`` as the default artifact root, so "Default" keeps its artifacts in
``mlartifacts/0``. A tracking URI from ``MLFLOW_TRACKING_URI`` (a server) is left to its owner.

:func:`latest_version` is the one reading of "the latest registered version" (the predictor's default, the gate's
comparison).
"""

from __future__ import annotations

from skewless.core.config import Profile


def ensure(p: Profile) -> None:
    """Create the profile's MLflow SQLite database with its default artifact root in the home (see module doc)."""
    db = p.home / "mlflow.db"
    if p.mlflow_tracking_uri != f"sqlite:///{db}" or db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    p.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(p.mlflow_tracking_uri, p.mlflow_artifacts.as_uri())


def latest_version(client, name: str):
    """The newest registered version of model ``name`` (the highest version number), or None if it has none.

    ``client`` is an ``MlflowClient``; the predictor serves this version by default and the weekly gate compares a
    candidate with it.
    """
    versions = client.search_model_versions(f"name = '{name}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None
