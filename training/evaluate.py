"""Compare a candidate training run with the registered next_week_commits model (the weekly DAG's gate).

The registered model (its latest version) is scored on the candidate's own evaluation weeks: the candidate's
training set is rebuilt from the snapshots and data bound it logged (:func:`training.train.rebuild`), with the
features of the feature service the registered version is tagged with, and split at the candidate's cutoff. The
metric is the mean Poisson deviance (the training objective); the candidate is better when its metric is strictly
lower, or when nothing is registered yet. Retraining on the same data therefore never promotes twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from skewless.core import mlflow_home
from skewless.core.config import Profile, profile
from skewless.core.errors import SkewlessError
from training import dataset, train
from training.labels import LABEL

if TYPE_CHECKING:
    from feast import FeatureStore

METRIC = "poisson_deviance"


class EvaluationError(SkewlessError, RuntimeError):
    """The comparison cannot be made (the message says why)."""


@dataclass(frozen=True)
class Comparison:
    run_id: str
    metric: str
    candidate: float
    registered: float | None  #: None when no version is registered
    registered_version: str | None
    n_rows: int
    better: bool

    def __str__(self) -> str:
        if self.registered is None:
            return (f"candidate run {self.run_id}: test {self.metric} {self.candidate:.4f}; no registered "
                    f"{train.MODEL_NAME} version: better")
        return (f"candidate run {self.run_id}: test {self.metric} {self.candidate:.4f} vs registered version "
                f"{self.registered_version} {self.registered:.4f} on the same {self.n_rows} repo-weeks: "
                f"{'better' if self.better else 'not better'}")


def compare(run_id: str, p: Profile | None = None, store: "FeatureStore | None" = None) -> Comparison:
    """Score the latest registered version on the candidate run's evaluation weeks (see the module docstring)."""
    p = p or profile()
    _, pins, until = train.run_pins(run_id, p)
    with train.mlflow_session(p) as (mlflow, client, _):
        run = client.get_run(run_id)
        key = f"test_{METRIC}"
        if key not in run.data.metrics or "cutoff" not in run.data.params:
            raise EvaluationError(f"MLflow run {run_id} has no {key} metric or cutoff param: not a training run")
        candidate = run.data.metrics[key]
        cutoff = run.data.params["cutoff"]
        latest = mlflow_home.latest_version(client, train.MODEL_NAME)
        if latest is None:
            return Comparison(run_id, METRIC, candidate, None, None, 0, True)
        service = latest.tags.get(train.FEATURE_SERVICE_TAG)
        if not service:
            raise EvaluationError(f"{train.MODEL_NAME} version {latest.version} has no "
                                  f"{train.FEATURE_SERVICE_TAG} tag; its features cannot be fetched")
        model = mlflow.pyfunc.load_model(f"models:/{train.MODEL_NAME}/{latest.version}")
    ts = dataset.build(service, pins=pins, store=store, until=until)
    _, test, _ = dataset.split(ts.frame, cutoff)
    registered = train.scores(test[LABEL], model.predict(train.features_of(test, ts.feature_names)))[METRIC]
    return Comparison(run_id, METRIC, candidate, registered, str(latest.version), len(test),
                      candidate < registered)
