"""KServe predictor of next-week commits: the registered MLflow model fed by the Feast online store.

``load()`` resolves the registered model version in MLflow (latest, a version number or an alias), reads the
feature service name from the version's ``feature_service`` tag, resolves that service in the ONE FeatureStore
the predictor keeps, checks that its views are materialized and that the online store answers, and loads the
model. The feature list comes from the feature service: no feature name is written in this package.

Requests name repositories; features are fetched with ``get_online_features(features=<service>, ...)``.

Protocol (see also ``serving/server.py``)
-----------------------------------------
v1 ``POST /v1/models/<name>:predict``::

    request   {"instances": ["owner/name", {"repo": "owner/name"}, ...]}
    response  {"predictions": [12.3, {"error": "no online features for repo 'x/y'"}],
               "model_name": "...", "model_version": "3", "feature_service": "next_week_commits_v1"}

v2 ``POST /v2/models/<name>/infer``::

    request   {"inputs": [{"name": "repo", "datatype": "BYTES", "shape": [2], "data": ["owner/name", "x/y"]}]}
    response  outputs "predictions" (FP64, [n], null where the instance failed) and
              "errors" (BYTES, [n], "" where the instance succeeded, else the reason)

``predictions[i]`` answers instance ``i``. An instance without usable online features gets an error naming it,
never an imputed number: ``no online features for repo 'x/y'`` (unknown repository, or every value null) or
``online features for repo 'x/y' are stale: ...`` (the store holds a row, but older than its view's TTL:
materialization is behind). Malformed payloads and batches over ``max_instances`` get 400; while the model, the
registry or the online store is not ready, readiness is false and predict answers 503 with the reason; readiness
is re-checked on request, so a store materialized after start-up makes the predictor ready without a restart. An
online read that fails or misses ``fetch_timeout_seconds`` answers 503.

Every answered instance is appended to the serving log (:mod:`serving.feature_log`) with the features served.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

# kserve parses sys.argv when imported (kserve.model_server); shield it from the host program's arguments.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve.errors import InvalidInput
    from kserve.model import InferenceVerb
    from kserve.protocol.infer_type import InferRequest
finally:
    sys.argv = _argv

from serving.feature_log import FeatureLog
from serving.metrics import metrics
from serving.trees import compile_regressor, probe_rows
from skewless.ops import online
from skewless.core import mlflow_home
from skewless.core.config import FEATURE_SERVICE_TAG, NEXT_WEEK_COMMITS_MODEL, Profile, profile
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

log = logging.getLogger(__name__)

DEFAULT_MODEL = NEXT_WEEK_COMMITS_MODEL
MAX_INSTANCES = 1000
MAX_REPO_CHARS = 200
#: Seconds between two readiness re-checks of a predictor that is not ready.
RECHECK_SECONDS = 2.0
#: Deadline of one request's online read + prediction (the Redis client has its own socket timeouts too).
FETCH_TIMEOUT_SECONDS = 5.0
#: Redis socket (connect and read) timeout added to the connection string unless the operator set one.
REDIS_TIMEOUT_SECONDS = 1.0
AS_OF_CACHE_SECONDS = 30.0
_PROBE_ENTITY = "__skewless_readiness_probe__"
_TS = "__ts"  # feast.online_response.TIMESTAMP_POSTFIX


class NotReady(SkewlessError, RuntimeError):
    """The predictor cannot serve yet; the message says why and what to run."""


class OnlineStoreUnavailable(SkewlessError, RuntimeError):
    """The online store did not answer a request (error or deadline); the server maps it to 503."""


@dataclass
class Outcome:
    """The answer for one instance: a prediction, or an error naming the instance."""

    repo: str
    prediction: float | None = None
    error: str | None = None
    features: dict[str, Any] | None = None


@dataclass
class _Batch:
    repos: list[str]
    v2: bool
    request_id: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)


def array_predictor(model: Any, feature_names: list[str], columns: list[str], fast: bool = True
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """``model.predict`` over a float matrix whose columns are ``feature_names``.

    Training's model (``training.train.make_model``) is a Pipeline of a by-name column selector and a booster fitted on
    the selector's array output. For that shape the selector is only a column permutation, so the booster is called
    on the permuted matrix directly: exact, and faster for one row than building a DataFrame for the selector. A
    HistGradientBoostingRegressor booster is evaluated by :class:`serving.trees.CompiledForest` (the same numbers,
    faster still; both speed-ups are measured in BENCHMARKS.md, section 2); the returned function then carries it as ``.forest`` and the
    permutation as ``.index``, so that the caller can check it. Any other model gets the DataFrame of ``columns``
    it was fitted on.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    def by_frame(values: np.ndarray) -> np.ndarray:
        return model.predict(pd.DataFrame(values, columns=feature_names)[columns])

    if not (fast and isinstance(model, Pipeline) and len(model.steps) == 2):
        return by_frame
    select, booster = model.steps[0][1], model.steps[1][1]
    if not isinstance(select, ColumnTransformer) or hasattr(booster, "feature_names_in_"):
        return by_frame
    kept = [t for t in select.transformers_ if not (isinstance(t[1], str) and t[1] == "drop")]
    if len(kept) != 1 or not _identity(kept[0][1]) or not all(isinstance(c, str) for c in kept[0][2]):
        return by_frame
    try:
        idx = np.array([feature_names.index(c) for c in kept[0][2]])
    except ValueError:
        return by_frame

    forest = compile_regressor(booster)
    predict = forest.predict if forest is not None else booster.predict

    def by_array(values: np.ndarray) -> np.ndarray:
        return predict(values[:, idx])

    by_array.forest, by_array.index = forest, idx
    return by_array


def checked_array_predictor(model: Any, feature_names: list[str], columns: list[str], label: str = "model"
                            ) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`array_predictor`, used only if it answers exactly what the model's own ``predict`` answers.

    The check runs a row without data, a row with, and, for a compiled forest, a full batch of rows on and beside
    every split threshold (:func:`serving.trees.probe_rows`), as one batch and the first two one row at a time (the
    serving case). Any difference logs a warning and returns the model's own path. It also warms both paths up.
    """
    by_model = array_predictor(model, feature_names, columns, fast=False)
    probe = np.vstack([np.full(len(feature_names), np.nan), np.arange(1.0, len(feature_names) + 1.0)])
    predict = array_predictor(model, feature_names, columns)
    forest = getattr(predict, "forest", None)
    if forest is not None:  # a batch the forest evaluates itself (not over its max_rows)
        splits = np.full((forest.max_rows - len(probe), len(feature_names)), np.nan)
        splits[:, predict.index] = probe_rows(forest, len(splits))
        probe = np.vstack([probe, splits])
    expected = by_model(probe)
    if predict.__name__ == by_model.__name__:
        return predict
    if np.array_equal(predict(probe), expected) and all(
            np.array_equal(predict(probe[i:i + 1]), expected[i:i + 1]) for i in range(2)):
        return predict
    log.warning("%s: the array fast path disagrees with predict(); using predict()", label)
    return by_model


def _identity(transformer: Any) -> bool:
    """``"passthrough"``, or what a fitted ColumnTransformer replaces it with (an identity FunctionTransformer)."""
    from sklearn.preprocessing import FunctionTransformer

    if isinstance(transformer, str):
        return transformer == "passthrough"
    return (isinstance(transformer, FunctionTransformer) and transformer.func is None
            and transformer.inverse_func is None)


def serving_profile(p: Profile) -> Profile:
    """The profile with outbound timeouts on the Redis online store, unless the operator already set them.

    Feast passes ``key=value`` items of the connection string to redis-py; without ``socket_timeout`` a hung
    Redis would hang the request forever.
    """
    from dataclasses import replace

    if p.redis is None:
        return p
    extra = [f"{k}={REDIS_TIMEOUT_SECONDS:g}" for k in ("socket_timeout", "socket_connect_timeout")
             if f"{k}=" not in p.redis]
    return replace(p, redis=",".join([p.redis, *extra])) if extra else p


class NextWeekCommitsPredictor(kserve.Model):
    """Predicts a repository's commits in the next 7 days from its online features (see the module docstring).

    Args:
        name: registered MLflow model name, also the KServe model name on the endpoint paths.
        model_version: None (latest version), a version number, or an alias (``champion`` or ``@champion``).
        p: the profile (default: the active one).
        store: a FeatureStore to reuse (default: one built from the profile on first load, then kept).
        online_reader: the online read (default: honest, or the drill skew of ``SKEWLESS_SERVING_SKEW``).
        feature_log: write the served features to the serving log (``serving.feature_log``).
    """

    def __init__(self, name: str = DEFAULT_MODEL, *, model_version: str | None = None, p: Profile | None = None,
                 store: "FeatureStore | None" = None, online_reader: online.OnlineReader | None = None,
                 feature_log: bool = True, max_instances: int = MAX_INSTANCES,
                 recheck_seconds: float = RECHECK_SECONDS, fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS):
        super().__init__(name)
        self.p = serving_profile(p or profile())
        self.model_version_spec = model_version
        self.max_instances = max_instances
        self.recheck_seconds = recheck_seconds
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self.reader = online_reader if online_reader is not None else online.reader_from_config()
        self.skew = getattr(self.reader, "skew", None)
        self.feature_log = FeatureLog(name, self.p) if feature_log else None
        self.not_ready_reason: str | None = "not loaded yet"
        self.store = store
        self.service: "FeatureService | None" = None
        self.join_key: str | None = None
        self.feature_names: list[str] = []
        self.model = None
        self._predict: Callable[[np.ndarray], np.ndarray] | None = None
        self.version: str | None = None
        self._last_attempt = -float("inf")
        self._load_lock = threading.Lock()
        self._as_of: str | None = None
        self._threads = None
        self._as_of_checked = -float("inf")

    # --- readiness ---------------------------------------------------------------------------------------------
    def load(self, progress: Callable[[str], None] | None = None) -> bool:
        """Load (or re-check) everything the predictor needs; set ``ready`` and ``not_ready_reason``.

        ``progress`` receives one line per loading step (``skewless serve`` prints them while it starts).
        """
        with self._load_lock:
            self._last_attempt = time.monotonic()
            try:
                self._load(progress or (lambda _: None))
            except NotReady as e:
                self.ready, self.not_ready_reason = False, str(e)
                log.warning("model %s not ready: %s", self.name, e)
            else:
                self.ready, self.not_ready_reason = True, None
                log.info("model %s version %s ready on feature service %s (%d features, key %s)%s", self.name,
                         self.version, self.service.name, len(self.feature_names), self.join_key,
                         f" — DRILL skew {self.skew}" if self.skew else "")
            return self.ready

    def _load(self, progress: Callable[[str], None]) -> None:
        from feast.errors import FeastObjectNotFoundException

        progress(f"reading model {self.name!r} from the MLflow registry ...")
        mv = self._model_version()
        fs_name = (mv.tags or {}).get(FEATURE_SERVICE_TAG)
        if not fs_name:
            raise NotReady(f"model {self.name!r} version {mv.version} has no {FEATURE_SERVICE_TAG!r} tag naming "
                           "the feature service it was trained on; tag the version (training does this)")
        progress(f"opening the Feast registry: feature service {fs_name!r} of version {mv.version} ...")
        if self.store is None:
            from skewless.ops.feast_ops import feature_store

            self.store = feature_store(self.p)
        try:
            service = self.store.get_feature_service(fs_name)
        except FeastObjectNotFoundException:
            raise NotReady(f"feature service {fs_name!r} (tag of model {self.name!r} version {mv.version}) is not "
                           "in the Feast registry; run `skewless apply`") from None
        except Exception as e:  # registry unreachable or unreadable
            raise NotReady(f"Feast registry unavailable: {type(e).__name__}: {e}") from None
        try:
            recorded = mlflow_home.recorded_features(mv.tags)
        except ValueError as e:
            raise NotReady(f"model {self.name!r} version {mv.version}: {e}") from None
        if recorded is not None:  # ADR 0020: the service must still serve what the version was trained on
            served = {f"{p.name_to_use()}:{f.name}": str(f.dtype)
                      for p in service.feature_view_projections for f in p.features}
            changed = [f"{ref} ({typ}, now {served[ref] if ref in served else 'absent'})"
                       for ref, typ in recorded.items() if served.get(ref) != typ]
            if changed:
                raise NotReady(f"feature service {fs_name!r} no longer serves what model {self.name!r} version "
                               f"{mv.version} was trained on: {', '.join(changed)}; serve another version or restore "
                               "the service (`skewless guard` names such changes)")
        names, keys = [], set()
        for proj in service.feature_view_projections:
            fv = self.store.get_feature_view(proj.name)
            if fv.most_recent_end_time is None:
                raise NotReady(f"feature view {proj.name!r} of feature service {fs_name!r} was never materialized: "
                               "the online store holds no data; run `skewless materialize`")
            keys.update(proj.join_key_map.get(k, k) for k in fv.join_keys)
            names.extend(f.name for f in proj.features)
        if len(keys) != 1:
            raise NotReady(f"feature service {fs_name!r} has join keys {sorted(keys)}; this predictor serves "
                           "services keyed by one entity")
        (key,) = keys
        progress(f"loading model {self.name!r} version {mv.version} ...")
        model = self._load_model(mv)
        expected = getattr(model, "feature_names_in_", None)
        columns = list(expected) if expected is not None else names
        missing = sorted(set(columns) - set(names))
        if missing:
            raise NotReady(f"model {self.name!r} version {mv.version} expects columns {missing} that feature "
                           f"service {fs_name!r} does not provide (it provides {names})")
        progress("checking the online store ...")
        try:  # probe the online store through the request path; also warms it up before readiness
            self.reader(self.store, service, [{key: _PROBE_ENTITY}])
        except Exception as e:
            raise NotReady(f"online store unreachable: {type(e).__name__}: {e}") from None
        from threadpoolctl import ThreadpoolController

        self._threads = self._threads or ThreadpoolController()
        progress("warming up the model ...")
        # Warms the model's predict path (first calls import and allocate) and checks the fast path against it.
        try:
            with self._threads.limit(limits=1, user_api="openmp"):
                predict = checked_array_predictor(model, names, columns, self.name)
        except Exception as e:
            raise NotReady(f"model {self.name!r} version {mv.version} cannot predict: {type(e).__name__}: {e}"
                           ) from None
        self.service, self.join_key, self.feature_names = service, key, names
        self.model, self.version, self._predict = model, str(mv.version), predict
        self._as_of_checked = -float("inf")

    def _model_version(self):
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        uri = self.p.mlflow_tracking_uri
        spec = self.model_version_spec
        mlflow_home.ensure(self.p)  # a cold start creates the database: its Default experiment in the home too
        try:
            # The registry too, explicitly: MlflowClient otherwise takes the process-global registry URI, which
            # another component (training, in the same process) may have pointed at another store.
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            if spec is None:
                latest = mlflow_home.latest_version(client, self.name)
                if latest is None:
                    raise NotReady(f"no version of registered model {self.name!r} in MLflow at {uri}; "
                                   "train and register it first")
                return latest
            if spec.isdigit():
                return client.get_model_version(self.name, spec)
            return client.get_model_version_by_alias(self.name, spec.lstrip("@"))
        except MlflowException as e:
            what = f"version {spec!r} of " if spec else ""
            raise NotReady(f"cannot resolve {what}registered model {self.name!r} in MLflow at {uri}: "
                           f"{e.message}") from None

    def _load_model(self, mv):
        import mlflow.sklearn
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        uri = self.p.mlflow_tracking_uri
        try:
            # The version's concrete artifact location: resolving "models:/..." would consult MLflow's
            # process-global registry (by default ./mlflow.db) rather than the profile's.
            where = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_download_uri(
                self.name, mv.version)
            return mlflow.sklearn.load_model(where)
        except (MlflowException, OSError) as e:
            raise NotReady(f"cannot load model {self.name!r} version {mv.version}: {e}") from None

    async def healthy(self) -> bool:
        """Readiness; a predictor that is not ready re-checks (at most every ``recheck_seconds``)."""
        if self.ready:
            return True
        if time.monotonic() - self._last_attempt >= self.recheck_seconds and not self._load_lock.locked():
            await asyncio.get_running_loop().run_in_executor(None, self.load)
        return self.ready

    # --- metadata ----------------------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict]:
        return [{"name": self.join_key or "repo", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": "predictions", "datatype": "FP64", "shape": [-1]},
                {"name": "errors", "datatype": "BYTES", "shape": [-1]}]

    # --- inference ---------------------------------------------------------------------------------------------
    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        labels = {"model": self.name, "feature_service": self.service.name if self.service else ""}
        with metrics().request_seconds.labels(**labels).time():
            return await super().__call__(body, headers, verb)

    def validate(self, payload):
        return payload  # preprocess already validated and turned the payload into a _Batch

    async def preprocess(self, payload, headers: dict | None = None) -> _Batch:
        """Parse a v1 dict or a v2 InferRequest into the list of repositories (InvalidInput on bad input)."""
        if isinstance(payload, InferRequest):
            repos = self._v2_repos(payload)
            batch = _Batch(repos, v2=True, request_id=payload.id)
        elif isinstance(payload, dict):
            batch = _Batch(self._v1_repos(payload), v2=False)
        else:
            raise InvalidInput("expected a JSON object with \"instances\" (v1) or an inference request with "
                               f"\"inputs\" (v2); got {type(payload).__name__} (is the content-type JSON?)")
        for i, r in enumerate(batch.repos):
            if not r.strip():
                raise InvalidInput(f"instance {i}: empty repository name")
            if len(r) > MAX_REPO_CHARS:
                raise InvalidInput(f"instance {i}: repository name longer than {MAX_REPO_CHARS} characters")
        return batch

    def _check_size(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("no instances: send at least one repository")
        if n > self.max_instances:
            raise InvalidInput(f"batch of {n} instances exceeds the limit of {self.max_instances}; split it")

    def _v1_repos(self, payload: dict) -> list[str]:
        key = self.join_key or "repo"
        if "instances" not in payload:
            raise InvalidInput(f"missing \"instances\": expected {{\"instances\": [\"owner/name\", ...]}} "
                               f"or [{{\"{key}\": \"owner/name\"}}, ...]")
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise InvalidInput(f"\"instances\" must be a list, not {type(instances).__name__}")
        self._check_size(len(instances))
        repos = []
        for i, inst in enumerate(instances):
            if isinstance(inst, dict):
                if set(inst) != {key}:
                    raise InvalidInput(f"instance {i}: an object instance must have exactly the key {key!r}, "
                                       f"got {sorted(inst)}")
                inst = inst[key]
            if not isinstance(inst, str):
                raise InvalidInput(f"instance {i}: expected a repository name (string), got "
                                   f"{type(inst).__name__}")
            repos.append(inst)
        return repos

    def _v2_repos(self, req: InferRequest) -> list[str]:
        key = self.join_key or "repo"
        if len(req.inputs) != 1 or req.inputs[0].name != key:
            raise InvalidInput(f"expected exactly one input named {key!r} (BYTES), got "
                               f"{[i.name for i in req.inputs]}")
        inp = req.inputs[0]
        if inp.datatype != "BYTES":
            raise InvalidInput(f"input {key!r} must have datatype BYTES, not {inp.datatype}")
        data = inp.data
        if not isinstance(data, list):
            raise InvalidInput(f"input {key!r}: send \"data\" as a JSON list of strings")
        self._check_size(len(data))
        if int(np.prod(inp.shape)) != len(data) or len(inp.shape) not in (1, 2) or (
                len(inp.shape) == 2 and inp.shape[1] != 1):
            raise InvalidInput(f"input {key!r}: shape {inp.shape} does not match {len(data)} values "
                               f"(use [{len(data)}] or [{len(data)}, 1])")
        repos = []
        for i, v in enumerate(data):
            if isinstance(v, bytes):
                v = v.decode("utf-8", errors="strict")
            if not isinstance(v, str):
                raise InvalidInput(f"instance {i}: expected a repository name (string), got {type(v).__name__}")
            repos.append(v)
        return repos

    async def predict(self, batch: _Batch, headers: dict | None = None) -> _Batch:
        loop = asyncio.get_running_loop()
        try:
            batch.outcomes = await asyncio.wait_for(loop.run_in_executor(None, self.serve_repos, batch.repos),
                                                    timeout=self.fetch_timeout_seconds)
        except asyncio.TimeoutError:
            raise OnlineStoreUnavailable(f"no answer from the online store within {self.fetch_timeout_seconds:g} s"
                                         ) from None
        return batch

    def serve_repos(self, repos: list[str]) -> list[Outcome]:
        """Fetch the online features of ``repos`` and predict; one :class:`Outcome` per repository, in order.

        Usable in-process (the drill and the benchmark call it); the HTTP path calls it from ``predict``.
        """
        if not self.ready:
            raise OnlineStoreUnavailable(f"model {self.name} is not ready: {self.not_ready_reason}")
        labels = {"model": self.name, "feature_service": self.service.name}
        rows = [{self.join_key: r} for r in repos]
        try:
            with metrics().feature_fetch_seconds.labels(**labels).time():
                columns = self.reader(self.store, self.service, rows)
        except Exception as e:
            raise OnlineStoreUnavailable(f"online read failed: {type(e).__name__}: {e}") from None
        # One float matrix (None -> NaN, which the booster handles natively); pandas only where the model needs it.
        values = np.array([columns[n] for n in self.feature_names], dtype=float).T.reshape(len(repos), -1)
        present = ~np.isnan(values).all(axis=1)
        preds = np.full(len(repos), np.nan)
        if present.any():
            # One OpenMP thread per prediction (per calling thread): a request holds a row or a few, and
            # fanning out every tree of the booster over all cores costs far more than it computes (measured:
            # BENCHMARKS.md, section 2); concurrency comes from the server's request threads instead.
            with self._threads.limit(limits=1, user_api="openmp"):
                preds[present] = self._predict(values[present])
        records = [dict(zip(self.feature_names, row)) for row in values.tolist()]
        # Event times (epoch s) that the online store holds even for rows expired by the TTL: stale vs unknown.
        ts_cols = [columns[c] for c in (f"{n}{_TS}" for n in self.feature_names) if c in columns]
        newest = np.array(ts_cols, dtype=float).max(axis=0) if ts_cols else np.zeros(len(repos))
        outcomes = []
        for i, r in enumerate(repos):
            if present[i] and np.isfinite(preds[i]):
                outcomes.append(Outcome(r, float(preds[i]), None, records[i]))
            elif present[i]:
                outcomes.append(Outcome(r, None, f"model returned a non-finite prediction for {r!r}", records[i]))
            elif newest[i] > 0:
                held = datetime.fromtimestamp(newest[i], timezone.utc).isoformat()
                outcomes.append(Outcome(r, None, f"online features for {self.join_key} {r!r} are stale: the newest "
                                                 f"row ({held}) is older than its feature view's TTL", None))
            else:
                outcomes.append(Outcome(r, None, f"no online features for {self.join_key} {r!r}", None))
        n_err = sum(o.error is not None for o in outcomes)
        metrics().instances_total.labels(**labels, outcome="prediction").inc(len(repos) - n_err)
        if n_err:
            metrics().instances_total.labels(**labels, outcome="error").inc(n_err)
        self._log(outcomes)
        return outcomes

    def refresh(self) -> None:
        """Re-read the Feast registry now (a materialization by another FeatureStore shows at once)."""
        if self.store is not None:
            self.store.refresh_registry()
        self._as_of_checked = -float("inf")

    def online_as_of(self) -> str | None:
        """The UTC day the online store holds for the service (cached for a few seconds), ISO format."""
        now = time.monotonic()
        if now - self._as_of_checked > AS_OF_CACHE_SECONDS:
            days = []
            for proj in self.service.feature_view_projections:
                d = online.online_as_of(self.store.get_feature_view(proj.name, allow_registry_cache=True))
                days.append(d)
            self._as_of = min(days).date().isoformat() if days and all(days) else None
            self._as_of_checked = now
        return self._as_of

    def _log(self, outcomes: list[Outcome]) -> None:
        if self.feature_log is None:
            return
        common = {"model_version": self.version, "feature_service": self.service.name,
                  "skew": str(self.skew) if self.skew else None, "as_of": self.online_as_of()}
        try:
            self.feature_log.write({**common, "repo": o.repo, "features": o.features, "prediction": o.prediction,
                                    "error": o.error} for o in outcomes)
        except OSError as e:  # the log must never fail a prediction
            log.error("serving log not written: %s", e)

    async def postprocess(self, batch: _Batch, headers: dict | None = None, response_headers=None):
        """Encode the outcomes as a v1 or a v2 response dict (shapes in the module docstring)."""
        drill = {"skew_drill": str(self.skew)} if self.skew else {}
        if not batch.v2:
            return {
                "predictions": [o.prediction if o.error is None else {"error": o.error} for o in batch.outcomes],
                "model_name": self.name, "model_version": self.version,
                "feature_service": self.service.name, **drill,
            }
        # A v2 response dict (not an InferResponse, whose numpy round trip turns the nulls into NaN).
        n = len(batch.outcomes)
        return {
            "id": batch.request_id or "", "model_name": self.name, "model_version": self.version,
            "parameters": {"feature_service": self.service.name, **drill},
            "outputs": [
                {"name": "predictions", "datatype": "FP64", "shape": [n],
                 "data": [o.prediction if o.error is None else None for o in batch.outcomes]},
                {"name": "errors", "datatype": "BYTES", "shape": [n], "data": [o.error or "" for o in batch.outcomes]},
            ],
        }

