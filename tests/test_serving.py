"""The KServe predictor as a real HTTP server (``skewless serve`` in a subprocess) on the shipped sample.

One server is started on an EMPTY home and walked through its cold start: no registered model (503, reason), model
registered but online store never materialized (503, reason), materialized (ready) — without a restart. The same
server then answers the v1/v2, bad-payload, unknown-repository, batch-size and metrics tests. The production test
repeats the happy path on Redis (DB 11) and PostgreSQL (its own database, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processes import free_port
from skewless.core import config

httpx = pytest.importorskip("httpx")
pytest.importorskip("kserve")

MODEL = "next_week_commits"
SERVICE = "next_week_commits_v1"
SAMPLE = config.PROJECT_ROOT / "src" / "skewless" / "data" / "sample_commits.parquet"
LAST_DAY = date(2026, 8, 22)  # newest commit of the sample
SERVING_TIME = datetime(2026, 8, 22, 12, tzinfo=timezone.utc)
KNOWN = ["apache/iceberg-python", "duckdb/duckdb-python", "encode/httpx"]
UNKNOWN = "no-such/repository"
START_TIMEOUT = 300.0  # importing kserve + mlflow + feast on a busy 2-core machine
STATE_TIMEOUT = 120.0


# --- helpers ----------------------------------------------------------------------------------------------------

def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> dict[str, str]:
    """Point this process (and a child's environment, returned) at one profile only."""
    for k in list(os.environ):
        if k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_")):
            monkeypatch.delenv(k)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    for k, v in config.profile().feast_env().items():
        monkeypatch.setenv(k, v)
    return dict(os.environ)


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # The sample ends on LAST_DAY: the server replays noon of that day (the views' TTL is applied then).
    cmd = [sys.executable, "-m", "skewless.cli", "serve", "--port", str(port), "--model-name", MODEL,
           "--serving-time", SERVING_TIME.isoformat()]
    proc = subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait(what: str, check, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last}\nserver log:\n{log.read_text()[-3000:]}")


def _v1(url: str, instances, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": instances}, timeout=30, **kw)


def _v2_body(repos, name="repo", datatype="BYTES", shape=None) -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape or [len(repos)], "data": repos}]}


def _v2(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, timeout=30)


def _prepare_lake(p: config.Profile) -> None:
    from skewless import features
    from skewless.ops import feast_ops
    from skewless.lake import ingest

    ingest.ingest([SAMPLE])
    features.build(LAST_DAY, p)
    feast_ops.apply(p)


def _feature_names(store) -> list[str]:
    service = store.get_feature_service(SERVICE)
    return [f.name for proj in service.feature_view_projections for f in proj.features]


def register_tiny_model(p: config.Profile) -> str:
    """Register a small next-week-commits model the way training does (features selected BY NAME from the service,
    version tag ``feature_service``); the label is commits_last_7d seven days later, read through Feast."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    from skewless.ops import feast_ops

    store = feast_ops.feature_store(p)
    service = store.get_feature_service(SERVICE)
    names = _feature_names(store)
    days = pd.date_range(end=pd.Timestamp(LAST_DAY - timedelta(days=7), tz="UTC"), periods=30, freq="7D")
    edf = pd.DataFrame([(r, d) for r in KNOWN + ["spf13/cobra"] for d in days], columns=["repo", "event_timestamp"])
    x = store.get_historical_features(entity_df=edf, features=service).to_df().sort_values(["repo", "event_timestamp"])
    later = edf.assign(event_timestamp=edf["event_timestamp"] + pd.Timedelta(days=7))
    y = store.get_historical_features(entity_df=later, features=["repo_activity:commits_last_7d"]).to_df()
    y["event_timestamp"] -= pd.Timedelta(days=7)
    xy = x.merge(y.rename(columns={"commits_last_7d": "label"}), on=["repo", "event_timestamp"])
    pipe = Pipeline([("select", ColumnTransformer([("f", "passthrough", names)])),
                     ("model", HistGradientBoostingRegressor(max_iter=30, random_state=0))])
    pipe.fit(xy[names].astype(float), xy["label"].astype(float))
    uri = p.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("serving-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "serving-tests", artifact_location=p.mlflow_artifacts.as_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.sklearn.log_model(
            pipe, name="model", registered_model_name=MODEL, pip_requirements=["scikit-learn"],
            skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"])
    version = str(info.registered_model_version)
    client.set_model_version_tag(MODEL, version, "feature_service", SERVICE)
    return version


def expected_predictions(p: config.Profile, repos: list[str]) -> list[float]:
    """What the registered model predicts on the online features, computed here without the server."""
    import mlflow.sklearn
    from mlflow import MlflowClient

    from skewless.ops import feast_ops

    client = MlflowClient(tracking_uri=p.mlflow_tracking_uri, registry_uri=p.mlflow_tracking_uri)
    version = max(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    model = mlflow.sklearn.load_model(client.get_model_version_download_uri(MODEL, str(version)))
    from skewless.feast_ext.ttl import serving_clock

    store = feast_ops.feature_store(p)
    with serving_clock(SERVING_TIME):
        online = store.get_online_features(features=store.get_feature_service(SERVICE),
                                           entity_rows=[{"repo": r} for r in repos]).to_df()
    return list(model.predict(online[_feature_names(store)].astype(float)))


# --- the server, through its cold start -------------------------------------------------------------------------

@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    profile: config.Profile
    log: Path
    cold: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        env = _env(mp, SKEWLESS_ENV="local", SKEWLESS_HOME=str(tmp / "home"))
        p = config.profile()
        log = tmp / "server.log"
        proc, url = _start(env, log)  # on an empty home: it must come up anyway, not ready
        try:
            _prepare_lake(p)  # meanwhile: ingest, build, apply — no model, no materialization
            srv = Server(url, proc, p, log)
            _wait("the server to listen", lambda: httpx.get(f"{url}/", timeout=5).status_code == 200,
                  START_TIMEOUT, proc, log)
            srv.cold["no_model"] = {
                "ready": httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=10),
                "predict": _v1(url, KNOWN[:1]),
            }
            register_tiny_model(p)

            def not_materialized():
                r = _v1(url, KNOWN[:1])
                return r if "materialize" in r.text else None

            srv.cold["not_materialized"] = {
                "predict": _wait("the reason to move on to materialization", not_materialized, STATE_TIMEOUT,
                                 proc, log),
                "v2": _v2(url, _v2_body(KNOWN[:1])),
                "ready": httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=10),
                "v1_ready": httpx.get(f"{url}/v1/models/{MODEL}", timeout=10),
                "server_ready": httpx.get(f"{url}/v2/health/ready", timeout=10),
            }
            from skewless.ops import feast_ops

            feast_ops.materialize(LAST_DAY, p)
            _wait("readiness after materialize", lambda: httpx.get(f"{url}/v2/models/{MODEL}/ready",
                                                                   timeout=10).status_code == 200,
                  STATE_TIMEOUT, proc, log)
            yield srv
        finally:
            _stop(proc)


# --- cold start ---------------------------------------------------------------------------------------------------

def test_cold_start_without_model_is_not_ready_with_the_reason(server):
    cold = server.cold["no_model"]
    assert cold["ready"].status_code == 503
    assert cold["predict"].status_code == 503
    assert f"no version of registered model '{MODEL}'" in cold["predict"].json()["error"]
    assert "Traceback" not in cold["predict"].text


def test_cold_start_without_materialization_is_not_ready_with_the_reason(server):
    cold = server.cold["not_materialized"]
    for name in ("predict", "v2", "ready", "v1_ready", "server_ready"):
        assert cold[name].status_code == 503, name
        assert "never materialized" in cold[name].json()["error"], name
        assert "skewless materialize" in cold[name].json()["error"], name


def test_becomes_ready_after_materialize_without_restart(server):
    assert server.proc.poll() is None  # the same process that answered 503
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert httpx.get(f"{server.url}/v1/models/{MODEL}", timeout=10).json() == {"name": MODEL, "ready": True}


def test_binds_loopback_by_default(server):
    import psutil

    proc = psutil.Process(server.proc.pid)
    conns = (getattr(proc, "net_connections", None) or proc.connections)(kind="tcp")
    addrs = {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    assert addrs == {"127.0.0.1"}


# --- predictions ---------------------------------------------------------------------------------------------------

def test_v1_predictions_are_the_models_on_online_features(server):
    r = _v1(server.url, [KNOWN[0], {"repo": KNOWN[1]}, KNOWN[2]])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == MODEL and body["model_version"] == "1" and body["feature_service"] == SERVICE
    assert "skew_drill" not in body
    np.testing.assert_allclose(body["predictions"], expected_predictions(server.profile, KNOWN), rtol=1e-9)


def test_v2_infer_answers_the_same_numbers(server):
    r = _v2(server.url, _v2_body(KNOWN))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == MODEL and body["model_version"] == "1"
    assert body["parameters"]["feature_service"] == SERVICE
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predictions"]["datatype"] == "FP64" and outputs["predictions"]["shape"] == [3]
    assert outputs["errors"]["data"] == ["", "", ""]
    v1 = _v1(server.url, KNOWN).json()["predictions"]
    np.testing.assert_allclose(outputs["predictions"]["data"], v1, rtol=1e-12)
    # [n, 1] is accepted too
    assert _v2(server.url, _v2_body(KNOWN[:2], shape=[2, 1])).status_code == 200


def test_unknown_repository_gets_a_per_instance_error_v1(server):
    r = _v1(server.url, [KNOWN[0], UNKNOWN, KNOWN[0]])
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert isinstance(preds[0], float) and preds[2] == preds[0]
    assert preds[1] == {"error": f"no online features for repo '{UNKNOWN}'"}


def test_unknown_repository_gets_a_per_instance_error_v2(server):
    r = _v2(server.url, _v2_body([UNKNOWN, KNOWN[0]]))
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["predictions"]["data"][0] is None  # not an imputed number
    assert isinstance(outputs["predictions"]["data"][1], float)
    assert outputs["errors"]["data"] == [f"no online features for repo '{UNKNOWN}'", ""]


@pytest.mark.parametrize("payload, message", [
    ({"instance": ["a/b"]}, 'missing "instances"'),
    ({"instances": "a/b"}, '"instances" must be a list'),
    ({"instances": []}, "no instances"),
    ({"instances": [42]}, "instance 0: expected a repository name"),
    ({"instances": ["a/b", {"name": "c/d"}]}, "instance 1: an object instance must have exactly the key 'repo'"),
    ({"instances": [""]}, "instance 0: empty repository name"),
    ({"instances": ["x" * 300]}, "longer than 200 characters"),
])
def test_bad_v1_payloads_get_400_with_the_reason(server, payload, message):
    r = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json=payload, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_v1_body_that_is_not_json_gets_400(server):
    r = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", content=b"{not json",
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "Unrecognized request format" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", content=b"a/b", headers={"content-type": "text/plain"},
                   timeout=30)
    assert r.status_code == 400 and "content-type" in r.json()["error"]


@pytest.mark.parametrize("body, message", [
    (_v2_body(["a/b"], name="repository"), "expected exactly one input named 'repo'"),
    (_v2_body([1, 2], datatype="INT64"), "must have datatype BYTES"),
    (_v2_body(["a/b", "c/d"], shape=[3]), "shape [3] does not match 2 values"),
    ({"inputs": [{"name": "repo", "datatype": "BYTES"}]}, "malformed request"),
    ({"inputs": "repo"}, "malformed request"),
])
def test_bad_v2_payloads_get_400_with_the_reason(server, body, message):
    r = _v2(server.url, body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_batch_over_the_limit_gets_400_and_huge_bodies_413(server):
    r = _v1(server.url, [KNOWN[0]] * 1001)
    assert r.status_code == 400 and "exceeds the limit of 1000" in r.json()["error"]
    assert _v1(server.url, [KNOWN[0]] * 1000).status_code == 200
    r = _v1(server.url, ["x" * 100] * 20_000)  # ~2 MB
    assert r.status_code == 413 and "request body exceeds" in r.json()["error"]


def test_unknown_model_is_404(server):
    r = httpx.post(f"{server.url}/v1/models/other:predict", json={"instances": ["a/b"]}, timeout=30)
    assert r.status_code == 404


def test_prometheus_metrics_are_exposed(server):
    _v1(server.url, KNOWN[:1])
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    labels = f'feature_service="{SERVICE}",model="{MODEL}"'
    for family in ("skewless_predictor_request_seconds", "skewless_feature_fetch_seconds"):
        count = [line for line in text.splitlines() if line.startswith(f"{family}_count{{{labels}}}")]
        assert count and float(count[0].rsplit(" ", 1)[1]) >= 1, family
        assert f"{family}_bucket{{" in text
    assert f'skewless_predictor_instances_total{{{labels},outcome="error"}}' in text


def test_serving_log_holds_the_served_features(server):
    from serving import feature_log

    _v1(server.url, [KNOWN[0], UNKNOWN])
    log = feature_log.read(MODEL, server.profile)
    served = log[(log["repo"] == KNOWN[0]) & log["error"].isna()].iloc[-1]
    from skewless.ops import feast_ops

    from skewless.feast_ext.ttl import serving_clock

    from skewless.feast_ext.online_response import ColumnarOnlineResponse

    store = feast_ops.feature_store(server.profile)
    with serving_clock(SERVING_TIME):
        response = store.get_online_features(features=store.get_feature_service(SERVICE),
                                             entity_rows=[{"repo": KNOWN[0]}])
    assert isinstance(response, ColumnarOnlineResponse)  # the profile's online store answers with it
    online = response.to_dict()
    for name in _feature_names(store):
        assert served[name] == pytest.approx(online[name][0], nan_ok=True), name
    assert served["model_version"] == "1" and served["as_of"] == LAST_DAY.isoformat()
    assert pd.isna(served["skew"])
    missed = log[log["repo"] == UNKNOWN].iloc[-1]
    assert missed["error"].startswith("no online features") and pd.isna(missed["prediction"])


def test_all_null_and_stale_entities_get_errors_not_numbers(server):
    """In process, with readers that return what the online store can hold: a row of nulls (values and event
    time), and a row past its view's TTL (values blanked, event time kept — skewless.feast_ext.ttl's answer)."""
    from serving.predictor import NextWeekCommitsPredictor
    from skewless.feast_ext.ttl import serving_clock
    from skewless.drills.skew import honest_reader

    def blank(repo, keep_event_time):
        def reader(store, features, rows):
            columns = honest_reader(store, features, rows)
            for i in [i for i, r in enumerate(columns["repo"]) if r == repo]:
                for c, values in columns.items():
                    if c != "repo" and not (keep_event_time and c.endswith("__ts")):
                        values[i] = None
            return columns
        return reader

    answers = {}
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, SKEWLESS_ENV="local", SKEWLESS_HOME=str(server.profile.home))
        for keep in (False, True):
            pred = NextWeekCommitsPredictor(MODEL, online_reader=blank("spf13/cobra", keep), feature_log=False)
            assert pred.load(), pred.not_ready_reason
            with serving_clock(SERVING_TIME):
                answers[keep] = pred.serve_repos(["spf13/cobra", KNOWN[0], UNKNOWN])
    for out in answers.values():
        assert out[1].error is None and np.isfinite(out[1].prediction)
        assert out[2].prediction is None and out[2].error == f"no online features for repo '{UNKNOWN}'"
    assert answers[False][0].prediction is None
    assert answers[False][0].error == "no online features for repo 'spf13/cobra'"
    assert answers[True][0].prediction is None
    assert answers[True][0].error == (f"online features for repo 'spf13/cobra' are stale: the newest row "
                                      f"({LAST_DAY.isoformat()}T00:00:00+00:00) is older than its feature view's TTL")


def test_skew_drill_switch_reaches_the_predictor(server):
    """SKEWLESS_SERVING_SKEW swaps the predictor's online reader (drills only), and answers say so; a bad value
    stops the predictor from being built at all."""
    from serving.predictor import NextWeekCommitsPredictor, _Batch
    from skewless.feast_ext.ttl import serving_clock
    from skewless.drills.skew import SkewError, SkewedReader

    with pytest.MonkeyPatch.context() as mp:
        _env(mp, SKEWLESS_ENV="local", SKEWLESS_HOME=str(server.profile.home), SKEWLESS_SERVING_SKEW="timezone:+10")
        pred = NextWeekCommitsPredictor(MODEL, feature_log=False)
        assert isinstance(pred.reader, SkewedReader)
        assert pred.load(), pred.not_ready_reason
        with serving_clock(SERVING_TIME):
            skewed = pred.serve_repos([KNOWN[0]])[0]
        mp.setenv("SKEWLESS_SERVING_SKEW", "sideways")
        with pytest.raises(SkewError, match="unknown skew mode 'sideways'"):
            NextWeekCommitsPredictor(MODEL, feature_log=False)
    served = [o for o in feature_log_rows(server) if o["repo"] == KNOWN[0]][-1]
    # the age is re-anchored to "now" at UTC+10: noon + 10 h after the day edge = 22/24 of a day more
    assert skewed.features["days_since_last_commit"] == pytest.approx(served["days_since_last_commit"] + 22 / 24)
    body = asyncio.run(pred.postprocess(_Batch([KNOWN[0]], v2=False, outcomes=[skewed])))
    assert body["skew_drill"] == "timezone:+10" and body["predictions"] == [skewed.prediction]


def test_a_version_whose_service_lost_a_recorded_feature_is_not_ready(server):
    """ADR 0020: a version records the exact features it was trained on; a service that no longer serves one of
    them (here: a version trained when the service had grown commits_last_14d) does not make the version ready."""
    from mlflow import MlflowClient

    from serving.predictor import NextWeekCommitsPredictor
    from skewless.core import mlflow_home
    from skewless.ops import feast_ops
    from training.dataset import service_features

    p = server.profile
    client = MlflowClient(tracking_uri=p.mlflow_tracking_uri, registry_uri=p.mlflow_tracking_uri)
    served = max(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    listed = service_features(feast_ops.feature_store(p).get_feature_service(SERVICE))
    recorded = {**listed, "repo_activity:commits_last_14d": "Int64"}
    versions = [client.create_model_version(MODEL, source=served.source, run_id=served.run_id, tags={
        "feature_service": SERVICE, "features": mlflow_home.features_tag(f)}) for f in (recorded, listed)]
    try:
        with pytest.MonkeyPatch.context() as mp:
            _env(mp, SKEWLESS_ENV="local", SKEWLESS_HOME=str(p.home))
            grown = NextWeekCommitsPredictor(MODEL, model_version=str(versions[0].version), feature_log=False)
            assert not grown.load()
            assert (f"feature service '{SERVICE}' no longer serves what model '{MODEL}' version "
                    f"{versions[0].version} was trained on: repo_activity:commits_last_14d (Int64, now absent)"
                    ) in grown.not_ready_reason
            exact = NextWeekCommitsPredictor(MODEL, model_version=str(versions[1].version), feature_log=False)
            assert exact.load(), exact.not_ready_reason
    finally:
        for v in versions:
            client.delete_model_version(MODEL, v.version)


def feature_log_rows(server) -> list[dict]:
    from serving import feature_log

    _v1(server.url, [KNOWN[0]])
    return feature_log.read(MODEL, server.profile).to_dict("records")


# --- production profile ------------------------------------------------------------------------------------------

@pytest.mark.production
def test_production_profile_serves_from_redis(tmp_path):
    import redis
    import sqlalchemy as sa

    db = f"skewless_serving_{uuid.uuid4().hex[:8]}"
    redis_db = 11
    proc = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            env = _env(mp, SKEWLESS_ENV="production", SKEWLESS_HOME=str(tmp_path / "home"),
                       SKEWLESS_PG_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                       SKEWLESS_REDIS=f"127.0.0.1:6379,db={redis_db}")
            p = config.profile()
            redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()
            from skewless.ops import feast_ops

            _prepare_lake(p)
            feast_ops.materialize(LAST_DAY, p)
            register_tiny_model(p)
            log = tmp_path / "server.log"
            proc, url = _start(env, log)
            _wait("readiness", lambda: httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=10).status_code == 200,
                  START_TIMEOUT, proc, log)
            assert redis.Redis(host="127.0.0.1", port=6379, db=redis_db).dbsize() > 0
            r = _v1(url, [KNOWN[0], UNKNOWN])
            assert r.status_code == 200, r.text
            preds = r.json()["predictions"]
            assert preds[0] == pytest.approx(expected_predictions(p, KNOWN[:1])[0], rel=1e-9)
            assert preds[1] == {"error": f"no online features for repo '{UNKNOWN}'"}
            outputs = {o["name"]: o for o in _v2(url, _v2_body([KNOWN[0]])).json()["outputs"]}
            assert outputs["predictions"]["data"] == [preds[0]]
    finally:
        if proc is not None:
            _stop(proc)
        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()
        engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        engine.dispose()


def test_array_fast_path_predicts_exactly_what_the_pipeline_predicts():
    """serving.predictor.array_predictor calls training's booster on the permuted matrix; it must equal predict()
    on the by-name DataFrame for any order of the served columns, with and without missing values, and fall back
    to predict() for a model of another shape."""
    from sklearn.linear_model import PoissonRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from serving.predictor import array_predictor, checked_array_predictor
    from serving.trees import CompiledForest
    from training.train import make_model

    rng = np.random.default_rng(3)
    names = ["a", "b", "c", "d"]
    x = pd.DataFrame(rng.poisson(5, size=(400, 4)).astype(float), columns=names)
    x[x > 8] = np.nan
    y = rng.poisson(3, size=400)
    model = make_model(["c", "a", "d"], {"max_iter": 30}).fit(x, y)
    served = ["d", "b", "a", "c"]  # the order a feature service happens to return
    values = x[served].to_numpy()
    fast = array_predictor(model, served, list(model.feature_names_in_))
    assert fast.__name__ == "by_array" and fast.forest is not None  # training's booster is compiled
    expected = model.predict(x[list(model.feature_names_in_)])
    assert np.array_equal(fast(values), expected)  # 400 rows: over max_rows, the booster's own predict
    for i in range(0, len(values), 7):  # one row per request: the compiled forest
        assert np.array_equal(fast(values[i:i + 1]), expected[i:i + 1])
    assert checked_array_predictor(model, served, list(model.feature_names_in_)).forest is not None
    with pytest.MonkeyPatch.context() as mp:  # a forest off by one ulp is caught at load and not used
        raw = CompiledForest.raw
        mp.setattr(CompiledForest, "raw", lambda self, X: np.nextafter(raw(self, X), np.inf))
        checked = checked_array_predictor(model, served, list(model.feature_names_in_))
        assert checked.__name__ == "by_frame"
        assert np.array_equal(checked(values[:1]), expected[:1])
    other = make_pipeline(StandardScaler(), PoissonRegressor()).fit(x.fillna(0)[names], y)  # not training's shape
    slow = array_predictor(other, names, names)
    assert slow.__name__ == "by_frame"
    assert np.array_equal(slow(x.fillna(0)[names].to_numpy()), other.predict(x.fillna(0)[names]))
