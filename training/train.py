"""Train next-week-commits: Poisson gradient boosting on the feature service, tracked and registered in MLflow.

``train()`` builds the training set (:mod:`training.dataset`), splits it in time, fits the model, scores it and
the two label baselines on both splits, and logs everything to MLflow: parameters, metrics, the feature service
and its features, the Iceberg snapshot id of every table read (tags ``iceberg.snapshot.<namespace.table>``), and
the model, registered as ``next_week_commits`` with the version tags ``feature_service=<service>`` (the predictor
reads its feature list from that tag, never from code) and ``features=<the exact feature list>`` (ADR 0020: the
feature guard and the predictor check the definitions against it). The service is a choice (``service=``,
``skewless train --service NAME``), :data:`DEFAULT_SERVICE` unless told.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
import pandas as pd

from skewless.core.config import (FEATURE_SERVICE_TAG, FEATURES_TAG, NEXT_WEEK_COMMITS_MODEL,
                                  NEXT_WEEK_COMMITS_SERVICE, Profile, profile)
from skewless.core.errors import SkewlessError
from training import dataset
from training.labels import BASELINES, KEYS, LABEL

if TYPE_CHECKING:
    from feast import FeatureStore
    from sklearn.pipeline import Pipeline

MODEL_NAME = NEXT_WEEK_COMMITS_MODEL
EXPERIMENT = NEXT_WEEK_COMMITS_MODEL
#: The feature service trained on unless another is chosen (declared once, in skewless.core.config).
DEFAULT_SERVICE = NEXT_WEEK_COMMITS_SERVICE
#: Run tag prefix of the snapshot ids read (``iceberg.snapshot.abukix.commits`` ...).
SNAPSHOT_TAG = "iceberg.snapshot."
#: Run tag: URI of the logged model (what :func:`register` registers).
MODEL_URI_TAG = "model_uri"
#: Predictions are floored here for the Poisson deviance only (it is undefined for a prediction of 0).
DEVIANCE_FLOOR = 1e-3
DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 150,
    "max_leaf_nodes": 7,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
    "early_stopping": False,
    "random_state": 0,
}
PREDICTORS = ("model",) + BASELINES
#: The one type of this pipeline that skops does not trust by default (we wrote the file ourselves); MLflow stores
#: the list with the model so that loaders accept it.
SKOPS_TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)
METRICS = ("mae", "rmse", "poisson_deviance")


class TrainingError(SkewlessError, RuntimeError):
    """Training could not run or its result could not be recorded (the message says why)."""


def make_model(feature_names: list[str] | tuple[str, ...], params: Mapping[str, Any] | None = None) -> "Pipeline":
    """The model: select the features BY NAME (column order cannot matter), then Poisson gradient boosting.

    Missing values (a feature with no data as of the week) are handled natively by the booster.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    select = ColumnTransformer([("features", "passthrough", list(feature_names))], remainder="drop",
                               verbose_feature_names_out=False)
    booster = HistGradientBoostingRegressor(loss="poisson", **{**DEFAULT_PARAMS, **(params or {})})
    return Pipeline([("select", select), ("model", booster)])


def features_of(frame: pd.DataFrame, feature_names: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The model input: the named feature columns as float64 (nulls as NaN)."""
    missing = [n for n in feature_names if n not in frame.columns]
    if missing:
        raise TrainingError(f"the frame lacks the feature column(s) {', '.join(missing)}")
    return frame[list(feature_names)].astype("float64")


def scores(y: np.ndarray | pd.Series, pred: np.ndarray | pd.Series) -> dict[str, float]:
    """MAE, RMSE and mean Poisson deviance (predictions floored at DEVIANCE_FLOOR for the deviance)."""
    from sklearn.metrics import mean_absolute_error, mean_poisson_deviance, mean_squared_error

    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    return {
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "poisson_deviance": float(mean_poisson_deviance(y, np.maximum(pred, DEVIANCE_FLOOR))),
    }


@dataclass
class Fit:
    """A fitted model with its split, predictions and metrics."""

    model: "Pipeline"
    feature_names: tuple[str, ...]
    cutoff: pd.Timestamp
    predictions: pd.DataFrame  #: keys, split, label, one column per predictor
    metrics: pd.DataFrame  #: index (split, predictor); columns mae, rmse, poisson_deviance
    n_train: int
    n_test: int

    def metric_dict(self) -> dict[str, float]:
        """Flat metric names for MLflow: ``<split>_<metric>`` (model), ``<split>_<metric>_<baseline>``."""
        out = {}
        for (split, predictor), row in self.metrics.iterrows():
            for m in METRICS:
                out[f"{split}_{m}" if predictor == "model" else f"{split}_{m}_{predictor}"] = float(row[m])
        return out


def fit(ts: dataset.TrainingSet, cutoff: pd.Timestamp | str | None = None,
        params: Mapping[str, Any] | None = None) -> Fit:
    """Fit on the weeks before ``cutoff`` and score the model and the baselines on both splits."""
    train, test, cut = dataset.split(ts.frame, cutoff)
    model = make_model(ts.feature_names, params)
    model.fit(features_of(train, ts.feature_names), train[LABEL].to_numpy(float))
    parts, rows = [], []
    for name, part in (("train", train), ("test", test)):
        pred = part[KEYS + [LABEL]].assign(split=name)
        pred["model"] = model.predict(features_of(part, ts.feature_names))
        for b in BASELINES:
            pred[b] = part[b].to_numpy(float)
        for predictor in PREDICTORS:
            rows.append({"split": name, "predictor": predictor, **scores(pred[LABEL], pred[predictor])})
        parts.append(pred)
    metrics = pd.DataFrame(rows).set_index(["split", "predictor"])
    return Fit(model=model, feature_names=ts.feature_names, cutoff=cut,
               predictions=pd.concat(parts, ignore_index=True), metrics=metrics, n_train=len(train),
               n_test=len(test))


def metrics_table(metrics: pd.DataFrame) -> str:
    """The metrics as a fixed-width text table (one row per split and predictor)."""
    return metrics.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}")


# --- MLflow ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_version: str | None  #: None when trained with register=False
    cutoff: pd.Timestamp
    metrics: pd.DataFrame
    snapshots: dict[str, int | None]
    feature_service: str
    training_set: dataset.TrainingSet

    def __str__(self) -> str:
        snaps = ", ".join(f"{k}@{v}" for k, v in sorted(self.snapshots.items()))
        registered = (f"registered {MODEL_NAME} version {self.model_version}" if self.model_version
                      else "not registered")
        return (f"MLflow run {self.run_id}; {registered} "
                f"(feature service {self.feature_service}); evaluation from {self.cutoff:%Y-%m-%d}; "
                f"snapshots {snaps}\n{metrics_table(self.metrics)}")


@contextlib.contextmanager
def mlflow_session(p: Profile) -> Iterator[tuple[Any, Any, str]]:
    """(mlflow, client, experiment id) on the profile's tracking server and registry, for the block only.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` (which the profile honours as an override),
    so the previous values are restored afterwards: a later profile (another home) must not inherit this one's.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from skewless.core import mlflow_home

    p.home.mkdir(parents=True, exist_ok=True)
    mlflow_home.ensure(p)  # before MLflow creates the database with its Default experiment in ./mlruns
    uri = p.mlflow_tracking_uri
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            p.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            exp_id = client.create_experiment(EXPERIMENT, artifact_location=p.mlflow_artifacts.as_uri())
        else:
            exp_id = exp.experiment_id
        yield mlflow, client, exp_id
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train(cutoff: pd.Timestamp | str | None = None, params: Mapping[str, Any] | None = None,
          p: Profile | None = None, store: "FeatureStore | None" = None, until: date | None = None,
          register: bool = True, service: str = DEFAULT_SERVICE) -> TrainResult:
    """Build the training set of feature service ``service``, fit, evaluate, log to MLflow and (unless
    ``register=False``) register the model.

    ``until`` bounds the data to the UTC days through it (see :func:`training.dataset.build`); a candidate logged
    with ``register=False`` can be registered later with :func:`register`.
    """
    import sklearn
    from mlflow.models import infer_signature
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

    from skewless.core import mlflow_home

    p = p or profile()
    if cutoff is not None:
        cutoff = dataset.monday(cutoff)  # bad input fails before any work
    ts = dataset.build(service, store=store, until=until)
    features_tag, refs = mlflow_home.features_tag(ts.features), ",".join(ts.features)
    if len(features_tag) > MAX_TAG_VAL_LENGTH or len(refs) > MAX_PARAM_VAL_LENGTH:  # MLflow would truncate them
        raise TrainingError(f"feature service {service} has {len(ts.features)} features: their list does not fit an "
                            f"MLflow tag ({MAX_TAG_VAL_LENGTH} characters); split the service")
    result = fit(ts, cutoff, params)
    x_example = features_of(ts.frame.head(5), ts.feature_names)
    signature = infer_signature(x_example, result.model.predict(x_example))
    all_params = {**DEFAULT_PARAMS, **(params or {})}
    with mlflow_session(p) as (mlflow, client, exp_id), mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_params({
            **{f"model.{k}": v for k, v in all_params.items()},
            "model.loss": "poisson",
            "cutoff": f"{result.cutoff:%Y-%m-%d}",
            "until": until.isoformat() if until else "",
            "n_train": result.n_train,
            "n_test": result.n_test,
            "n_repos": ts.frame["repo"].nunique(),
            "feature_service": ts.feature_service,
            "features": refs,
            "label": "commits with committed_at in [Monday, Monday + 7 days), observed weeks only",
        })
        mlflow.set_tags({
            FEATURE_SERVICE_TAG: ts.feature_service,
            FEATURES_TAG: features_tag,
            **{f"{SNAPSHOT_TAG}{ident}": str(snap) for ident, snap in ts.snapshots.items()},
        })
        mlflow.log_metrics(result.metric_dict())
        mlflow.log_dict({"feature_service": ts.feature_service, "features": ts.features},
                        "feature_service.json")
        mlflow.log_text(metrics_table(result.metrics), "metrics.txt")
        info = mlflow.sklearn.log_model(
            result.model, name="model", signature=signature, input_example=x_example,
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}",
                              f"pandas=={pd.__version__}", f"numpy=={np.__version__}"],
        )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    version = _register_run(run.info.run_id, p) if register else None
    return TrainResult(run_id=run.info.run_id, model_version=version, cutoff=result.cutoff,
                       metrics=result.metrics, snapshots=ts.snapshots, feature_service=ts.feature_service,
                       training_set=ts)


def register(run_id: str, p: Profile | None = None) -> str:
    """Register the model a training run logged as the next version of ``next_week_commits``; return the version.

    The version carries the run's feature service (``feature_service`` tag: serving reads its features from it), its
    exact feature list (``features`` tag) and the Iceberg snapshots its training set was read from.
    """
    return _register_run(run_id, p or profile())


def _register_run(run_id: str, p: Profile) -> str:
    """:func:`register` (a separate name: :func:`train`'s ``register`` flag shadows it there)."""
    with mlflow_session(p) as (mlflow, client, _):
        tags = client.get_run(run_id).data.tags
        if MODEL_URI_TAG not in tags or FEATURE_SERVICE_TAG not in tags:
            raise TrainingError(f"MLflow run {run_id} logged no next_week_commits model (tags {MODEL_URI_TAG}, "
                                f"{FEATURE_SERVICE_TAG} missing): not a training run")
        mv = mlflow.register_model(tags[MODEL_URI_TAG], MODEL_NAME)
        version = str(mv.version)
        client.set_model_version_tag(MODEL_NAME, version, FEATURE_SERVICE_TAG, tags[FEATURE_SERVICE_TAG])
        if FEATURES_TAG in tags:
            client.set_model_version_tag(MODEL_NAME, version, FEATURES_TAG, tags[FEATURES_TAG])
        for k, v in tags.items():
            if k.startswith(SNAPSHOT_TAG):
                client.set_model_version_tag(MODEL_NAME, version, k, v)
    return version


def run_pins(run_id: str, p: Profile | None = None) -> tuple[str, dict[str, int], date | None]:
    """The feature service, snapshot pins and data bound (``until``) a training run logged."""
    with mlflow_session(p or profile()) as (_, client, _):
        data = client.get_run(run_id).data
    tags, params = data.tags, data.params
    if FEATURE_SERVICE_TAG not in tags:
        raise TrainingError(f"MLflow run {run_id} has no {FEATURE_SERVICE_TAG} tag: not a training run")
    pins = {k[len(SNAPSHOT_TAG):]: int(v) for k, v in tags.items() if k.startswith(SNAPSHOT_TAG) and v != "None"}
    until = date.fromisoformat(params["until"]) if params.get("until") else None
    return tags[FEATURE_SERVICE_TAG], pins, until


def rebuild(run_id: str, p: Profile | None = None, store: "FeatureStore | None" = None) -> dataset.TrainingSet:
    """The training set of run ``run_id``, rebuilt from the Iceberg snapshots (and data bound) it logged."""
    service, pins, until = run_pins(run_id, p)
    return dataset.build(service, pins=pins, store=store, until=until)


def busiest_repo(fitted: Fit) -> str:
    """The repository with the largest weekly count in the evaluation weeks (a telling one to plot)."""
    test = fitted.predictions[fitted.predictions["split"] == "test"]
    return str(test.loc[test[LABEL].idxmax(), "repo"])


def plot_repo(fitted: Fit, repo: str, ax=None):
    """Plot actual vs predicted weekly commits of one repository (model and baselines); returns the axes."""
    import matplotlib.pyplot as plt

    pred = fitted.predictions[fitted.predictions["repo"] == repo].sort_values("event_timestamp")
    if pred.empty:
        known = ", ".join(sorted(fitted.predictions["repo"].unique()))
        raise TrainingError(f"no predictions for repo {repo!r}; repos: {known}")
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 4))
    ax.plot(pred["event_timestamp"], pred[LABEL], color="black", lw=1, label="actual")
    ax.plot(pred["event_timestamp"], pred["model"], color="tab:blue", lw=1.2, label="model")
    ax.plot(pred["event_timestamp"], pred["mean_4w"], color="tab:orange", lw=0.8, alpha=0.7, label="4-week mean")
    ax.axvline(fitted.cutoff, color="grey", ls="--", lw=1, label="train | test")
    ax.set_title(f"{repo}: commits per week (next-week prediction)")
    ax.set_ylabel("commits")
    ax.legend(loc="upper left")
    return ax
