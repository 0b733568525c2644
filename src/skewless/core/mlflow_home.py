"""The profile's MLflow tracking database, created with every artifact location inside ``SKEWLESS_HOME``.

MLflow creates its database on first use together with the experiment "Default" (id 0), whose artifact location
is ``./mlruns/0`` of the process's working directory: state outside the home, different for every cwd. When the
tracking URI is the profile's own SQLite file and it does not exist yet, :func:`ensure` creates it first with
``SKEWLESS_HOME/mlartifacts`` as the default artifact root, so "Default" keeps its artifacts in
``mlartifacts/0``. A tracking URI from ``MLFLOW_TRACKING_URI`` (a server) is left to its owner.

:func:`features_tag` / :func:`recorded_features` write and read the exact feature list a model version was trained on
(tag ``features``, ADR 0020). :func:`latest_version` is the one reading of "the latest registered version" (the predictor's default, the gate's
comparison).
"""

from __future__ import annotations

import json
from typing import Mapping

from skewless.core.config import FEATURES_TAG, Profile


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


def features_tag(features: Mapping[str, str]) -> str:
    """The ``features`` tag value of a feature list (``view:feature`` -> Feast type, order kept)."""
    return json.dumps(dict(features), separators=(",", ":"))


def recorded_features(tags: Mapping[str, str] | None) -> dict[str, str] | None:
    """The feature list a run / model version recorded (``view:feature`` -> Feast type, in order), or None when it
    recorded none (trained before ADR 0020). A tag that is not such a list is a ValueError naming it."""
    raw = (tags or {}).get(FEATURES_TAG)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None  # a run of training before ADR 0020 tagged the feature names only, without views and types
    if not isinstance(value, dict) or not all(isinstance(k, str) and ":" in k and isinstance(v, str)
                                              for k, v in value.items()):
        raise ValueError(f"tag {FEATURES_TAG}={raw[:200]!r} is not a feature list "
                         "({\"view:feature\": \"Feast type\", ...}); it was not written by skewless training")
    return value
