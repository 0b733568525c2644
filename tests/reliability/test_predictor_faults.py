"""The running predictor under faults of its dependencies, and fuzzed over HTTP.

Production profile: a private redis-server (no persistence) and a PostgreSQL database reached through a TCP proxy
of our own (stopping the proxy is a registry outage; the shared PostgreSQL is never touched). The sample is
ingested, built, applied and materialized through its last day, and the model trained and registered through the
product's own training. The predictor (``serving.predictor``) is served by ``serving.server.BackgroundServer`` on
127.0.0.1, replaying noon of the sample's last day (the serving clock). Faults:

* Redis restarted EMPTY while serving: every instance gets an error naming it (never a number from nowhere), the
  server stays up; ``skewless materialize`` (which notices the loss) brings the same predictions back without a
  predictor restart.
* Redis DOWN while serving: predict answers 503 with the reason within the request deadline (no hang, no 500).
* Registry (PostgreSQL) unreachable at start: not ready, 503 with the reason; ready once it is back, no restart.
* Registry unreachable while serving: predictions continue from Feast's registry cache.
* HTTP fuzzing (hypothesis): arbitrary JSON and bytes on the v1/v2 endpoints get 200/400/404/413, never 5xx.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date, datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability import deployment
from reliability.servers import PgDatabase, RedisServer, TcpProxy, postgres_available, production_env

httpx = pytest.importorskip("httpx")
pytest.importorskip("kserve")

pytestmark = [pytest.mark.production, pytest.mark.slow,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not running on 127.0.0.1:5432")]

LAST_DAY = date(2026, 8, 22)
SERVING_TIME = datetime(2026, 8, 22, 12, tzinfo=timezone.utc)
REPOS = ["apache/iceberg-python", "duckdb/duckdb-python", "encode/httpx", "spf13/cobra"]
MODEL = "next_week_commits"
HTTP_EXAMPLES = int(os.environ.get("SKEWLESS_HTTP_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, sample_parquet):
    root = tmp_path_factory.mktemp("predictor_faults")
    redis = RedisServer(root / "redis").start()
    proxy = TcpProxy(5432).start()
    pg = PgDatabase()
    env = production_env(root / "home", pg, redis)
    env["SKEWLESS_PG_URL"] = pg.url_via(proxy.port)
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        with deployment.exported(env) as p:
            from skewless import features
            from skewless.ops import feast_ops
            from skewless.lake import ingest

            ingest.ingest([sample_parquet])
            features.build(LAST_DAY, p)
            feast_ops.apply(p)
            feast_ops.materialize(LAST_DAY, p)
            _register_small_model(p)
        yield {"env": env, "redis": redis, "proxy": proxy}
    finally:
        proxy.stop()
        redis.stop()
        pg.drop()


def _register_small_model(p) -> None:
    """Register a model the way training does (its model factory, the feature_service version tag), fitted on a
    few weeks of the service's historical features: the faults here are about serving, not about accuracy."""
    import pandas as pd

    from skewless.ops import feast_ops
    from training import train

    store = feast_ops.feature_store(p)
    service = store.get_feature_service("next_week_commits_v1")
    names = [f.name for proj in service.feature_view_projections for f in proj.features]
    weeks = pd.date_range(end=pd.Timestamp(LAST_DAY, tz="UTC"), periods=20, freq="7D")
    edf = pd.DataFrame([(r, w) for r in REPOS for w in weeks], columns=["repo", "event_timestamp"])
    x = store.get_historical_features(entity_df=edf, features=service).to_df()
    model = train.make_model(names, {"max_iter": 20}).fit(train.features_of(x, names),
                                                          x["commits_last_7d"].fillna(0).to_numpy())
    with train.mlflow_session(p) as (mlflow, client, exp_id), mlflow.start_run(experiment_id=exp_id):
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL,
                                        skops_trusted_types=list(train.SKOPS_TRUSTED_TYPES),
                                        pip_requirements=["scikit-learn"])
        client.set_model_version_tag(MODEL, str(info.registered_model_version), train.FEATURE_SERVICE_TAG,
                                     service.name)


def _predictor(p, **options):
    from serving.predictor import NextWeekCommitsPredictor

    return NextWeekCommitsPredictor(MODEL, p=p, feature_log=False, **options)


def _predict(url: str, repos: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": repos}, timeout=60)


def _numbers(resp: httpx.Response) -> list:
    return resp.json()["predictions"]


def test_redis_restarted_empty_then_down_while_serving(deployed):
    from serving.server import BackgroundServer
    from skewless.ops import feast_ops
    from skewless.feast_ext.ttl import serving_clock

    redis = deployed["redis"]
    with deployment.exported(deployed["env"]) as p, serving_clock(SERVING_TIME):
        predictor = _predictor(p)
        assert predictor.load(), predictor.not_ready_reason
        with BackgroundServer([predictor]) as srv:
            first = _predict(srv.url, REPOS)
            assert first.status_code == 200, first.text
            baseline = _numbers(first)
            assert all(isinstance(v, float) for v in baseline), baseline

            redis.restart()  # comes back empty
            empty = _predict(srv.url, REPOS)
            assert empty.status_code == 200, empty.text
            for repo, answer in zip(REPOS, _numbers(empty)):
                assert isinstance(answer, dict) and repo in answer["error"], answer  # an error, never a number
            print(f"RELIABILITY predictor: redis restarted empty -> HTTP {empty.status_code}, "
                  f"{_numbers(empty)[0]}")

            redis.kill()  # down
            t0 = time.monotonic()
            down = _predict(srv.url, REPOS)
            elapsed = time.monotonic() - t0
            assert down.status_code == 503, down.text
            assert "online" in down.text.lower(), down.text
            print(f"RELIABILITY predictor: redis down -> HTTP {down.status_code} after {elapsed:.1f}s: "
                  f"{down.text[:160]}")
            assert srv._thread.is_alive()

            redis.start()
            feast_ops.materialize(LAST_DAY, p)  # notices the empty store and reloads it
            back = _predict(srv.url, REPOS)
            assert back.status_code == 200, back.text
            assert _numbers(back) == baseline, "after reload the predictions differ from before the fault"
            print("RELIABILITY predictor: redis back + materialize -> same predictions, no predictor restart")


def test_registry_unreachable_at_start_then_back(deployed):
    from serving.server import BackgroundServer
    from skewless.feast_ext.ttl import serving_clock

    proxy = deployed["proxy"]
    with deployment.exported(deployed["env"]) as p, serving_clock(SERVING_TIME):
        proxy.stop()
        try:
            predictor = _predictor(p, recheck_seconds=0.2)
            assert not predictor.load()
            reason = predictor.not_ready_reason
            print(f"RELIABILITY predictor: registry down at start -> not ready: {reason[:200]}")
            with BackgroundServer([predictor]) as srv:
                ready = httpx.get(f"{srv.url}/v2/health/ready", timeout=60)
                assert ready.status_code == 503, ready.text
                cold = _predict(srv.url, REPOS)
                assert cold.status_code == 503, cold.text
                proxy.start()
                deadline = time.monotonic() + 120
                while httpx.get(f"{srv.url}/v2/health/ready", timeout=60).status_code != 200:
                    assert time.monotonic() < deadline, f"never ready: {predictor.not_ready_reason}"
                    time.sleep(0.5)
                warm = _predict(srv.url, REPOS)
                assert warm.status_code == 200 and all(isinstance(v, float) for v in _numbers(warm)), warm.text
        finally:
            proxy.start() if proxy._listener is None else None


def test_registry_unreachable_while_serving(deployed):
    from serving.server import BackgroundServer
    from skewless.feast_ext.ttl import serving_clock

    proxy = deployed["proxy"]
    with deployment.exported(deployed["env"]) as p, serving_clock(SERVING_TIME):
        predictor = _predictor(p)
        assert predictor.load(), predictor.not_ready_reason
        with BackgroundServer([predictor]) as srv:
            before = _predict(srv.url, REPOS)
            assert before.status_code == 200
            proxy.stop()
            try:
                during = [_predict(srv.url, REPOS) for _ in range(3)]
            finally:
                proxy.start()
            codes = [r.status_code for r in during]
            print(f"RELIABILITY predictor: registry down while serving -> HTTP {codes}")
            assert codes == [200, 200, 200] and all(_numbers(r) == _numbers(before) for r in during)


# --- HTTP fuzzing ---------------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
_instances = st.lists(st.one_of(st.sampled_from(REPOS), st.text(max_size=250), st.integers(), st.none(),
                                st.fixed_dictionaries({"repo": st.text(max_size=20)}), _json), max_size=8)
_v1 = st.one_of(_json, st.fixed_dictionaries({"instances": _instances}),
                st.fixed_dictionaries({"instances": _json}))
_v2 = st.one_of(_json, st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
    "name": st.sampled_from(["repo", "x", ""]), "datatype": st.sampled_from(["BYTES", "FP64", "INT8", "??"]),
    "shape": st.lists(st.integers(-2, 10), max_size=3), "data": st.one_of(_instances, _json)}), max_size=2)}))
_body = st.one_of(_v1.map(lambda b: ("v1", json.dumps(b).encode())), _v2.map(lambda b: ("v2", json.dumps(b).encode())),
                  st.tuples(st.sampled_from(["v1", "v2"]), st.binary(max_size=200)))
_STATUS: dict[int, int] = {}


@pytest.fixture(scope="module")
def fuzz_server(deployed):
    from serving.server import BackgroundServer
    from skewless.feast_ext.ttl import serving_clock

    with deployment.exported(deployed["env"]) as p, serving_clock(SERVING_TIME):
        predictor = _predictor(p)
        assert predictor.load(), predictor.not_ready_reason
        with BackgroundServer([predictor]) as srv:
            yield srv


@settings(max_examples=HTTP_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_body, content_type=st.sampled_from(["application/json", "text/plain", "application/octet-stream"]))
def test_http_fuzz_never_a_server_error(fuzz_server, body, content_type):
    version, raw = body
    path = f"/v1/models/{MODEL}:predict" if version == "v1" else f"/v2/models/{MODEL}/infer"
    resp = httpx.post(f"{fuzz_server.url}{path}", content=raw, headers={"content-type": content_type}, timeout=60)
    _STATUS[resp.status_code] = _STATUS.get(resp.status_code, 0) + 1
    assert resp.status_code in (200, 400, 404, 413, 415, 422), f"{resp.status_code} for {raw[:200]!r}: {resp.text}"
    if resp.status_code != 200:
        assert resp.text.strip(), "an error without a reason"


def test_http_fuzz_report(fuzz_server):
    print(f"RELIABILITY predictor HTTP fuzz: status counts {dict(sorted(_STATUS.items()))}")
    ok = _predict(fuzz_server.url, REPOS[:1])
    assert ok.status_code == 200, "the predictor did not survive the fuzzing"
