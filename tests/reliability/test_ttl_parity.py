"""TTL parity: an online read and a point-in-time offline read at the same time return the same answer.

Feast's offline join nulls a view whose newest row is older than ``T - ttl``; its stock online stores serve
whatever they hold (feast-dev/feast issue 6821). skewless's online stores (``skewless.feast_ext.ttl``, and the
local profile's ``HomeSqliteOnlineStore``) apply the offline rule at serving time. With the serving clock frozen
at T (``serving_clock``), every entity of both views is read online and through ``get_historical_features`` at T,
for times inside the materialized day, at the last microsecond of its TTL, at the first microsecond after, and
weeks later — in both profiles. The real views declare no TTL (values hold until superseded, see
``feature_repo/repo_features.py``), so a probe view over the same Iceberg source with a finite TTL (one day minus
a microsecond: a value valid for its own UTC day only) is registered for the test: it must turn null exactly when
the offline read does; ``repo_activity`` and ``author_activity`` (TTL 0: none) never expire.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from reliability import deployment
from reliability.servers import PgDatabase, RedisServer, local_env, postgres_available, production_env
from skewless import features
from skewless.feast_ext import ttl

DAY = date(2026, 8, 20)
REPOS = ("apache/iceberg-python", "encode/httpx", "spf13/cobra")
US = timedelta(microseconds=1)
START = features.day_start(DAY)
TIMES = {
    "materialized day 00:00": START,
    "materialized day 13:37": START + timedelta(hours=13, minutes=37),
    "last microsecond of the TTL": START + timedelta(days=1) - US,
    "first microsecond after the TTL": START + timedelta(days=1),
    "next day 06:00": START + timedelta(days=1, hours=6),
    "six weeks later": START + timedelta(days=42),
}
UNKNOWN = {"repo": "nobody/nothing", "author_id": "a_000000000000"}


# --- the rule itself ------------------------------------------------------------------------------------------------

def test_expiry_rule_matches_the_offline_bounds():
    ttl_day = timedelta(days=1) - US
    assert not ttl.is_expired(START, ttl_day, START + timedelta(days=1) - US)
    assert ttl.is_expired(START, ttl_day, START + timedelta(days=1))
    assert not ttl.is_expired(START, timedelta(0), START + timedelta(days=10_000))  # 0: no TTL
    assert not ttl.is_expired(START, None, START + timedelta(days=10_000))
    assert ttl.is_expired(START.replace(tzinfo=None), ttl_day, START + timedelta(days=2))  # naive = UTC
    assert not ttl.is_expired(START + timedelta(days=3), ttl_day, START)  # newer than now: served as held
    assert not ttl.is_expired(None, ttl_day, START)


def test_serving_clock_pins_and_restores():
    before = ttl.serving_now()
    with ttl.serving_clock(START):
        assert ttl.serving_now() == START
        with ttl.serving_clock(lambda: START + timedelta(hours=1)):
            assert ttl.serving_now() == START + timedelta(hours=1)
        assert ttl.serving_now() == START
    assert abs(ttl.serving_now() - before) < timedelta(minutes=5)
    with pytest.raises(ValueError, match="timezone-aware"):
        with ttl.serving_clock(datetime(2026, 1, 1)):
            pass
    with pytest.raises(ValueError, match="naive"):
        with ttl.serving_clock(lambda: datetime(2026, 1, 1)):
            ttl.serving_now()


# --- both profiles, through Feast ---------------------------------------------------------------------------------

PROBE = "repo_activity_ttl_probe"
PROBE_TTL = timedelta(days=1) - US


def _deploy(env: dict[str, str], source) -> None:
    """Ingest, build, apply and materialize through DAY, then register and load the finite-TTL probe view."""
    from feast import FeatureView, Field

    with deployment.exported(env) as p:
        from skewless.ops import feast_ops
        from skewless.lake import ingest

        ingest.ingest([source])
        features.build(DAY, p)
        feast_ops.apply(p)
        feast_ops.materialize(DAY, p)
        store = feast_ops.feature_store(p)
        real = store.get_feature_view("repo_activity")
        probe = FeatureView(name=PROBE, entities=[store.get_entity("repo")], ttl=PROBE_TTL,
                            schema=[Field(name=f.name, dtype=f.dtype) for f in real.features],
                            source=real.batch_source, online=True)
        store.apply([probe])
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),
                          end_date=START + timedelta(days=1) - US, feature_views=[PROBE])


def _views() -> list[tuple[str, str, list[str]]]:
    """(view, entity key, feature names) of every view compared: the real ones and the TTL probe."""
    views = [(t.name, t.entity_key, [f.name for f in t.features]) for t in features.TABLES]
    return views + [(PROBE, "repo", [f.name for f in features.REPO_ACTIVITY.features])]


def _same(a, b) -> bool:
    def null(v):
        return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
    if null(a) or null(b):
        return null(a) and null(b)
    return a == b if not isinstance(a, float) else math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def _parity(env: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per time and view: (entities compared, mismatches, online nulls). Asserts the store is a TTL store."""
    out = {}
    with deployment.exported(env) as p:
        from skewless.ops import feast_ops

        store = feast_ops.feature_store(p)
        online_store = store._get_provider().online_store
        assert isinstance(online_store, ttl.TtlOnlineReadMixin), \
            f"{p.name} profile's online store {type(online_store).__name__} ignores TTLs"
        entities = deployment.all_entities(p)
        entities[PROBE] = entities["repo_activity"]
        for label, t in TIMES.items():
            for view, key, names in _views():
                keys = entities[view] + [UNKNOWN[key]]
                refs = [f"{view}:{n}" for n in names]
                with ttl.serving_clock(t):
                    online = store.get_online_features(features=refs, entity_rows=[{key: k} for k in keys]).to_df()
                offline = store.get_historical_features(
                    entity_df=pd.DataFrame({key: keys, "event_timestamp": pd.Timestamp(t)}), features=refs).to_df()
                on, off = online.set_index(key)[names], offline.set_index(key)[names]
                bad = [(k, n, on.at[k, n], off.at[k, n]) for k in keys for n in names
                       if not _same(on.at[k, n], off.at[k, n])]
                nulls = int(on.isna().all(axis=1).sum())
                out[f"{label} / {view}"] = {"entities": len(keys), "mismatches": len(bad), "null": nulls}
                assert not bad, f"{p.name}: online != offline at {t} ({label}) for {view}: {bad[:5]}"
    return out


def _check(result: dict[str, dict[str, int]], entities: dict[str, int]) -> None:
    for label, r in result.items():
        print(f"RELIABILITY ttl: {label}: {r}")
    n_repo = entities["repo_activity"]
    # Within the materialized day every repository has a value; from the next day on none has (offline neither).
    assert result[f"materialized day 13:37 / {PROBE}"]["null"] == 1  # the unknown repository only
    assert result[f"last microsecond of the TTL / {PROBE}"]["null"] == 1
    assert result[f"first microsecond after the TTL / {PROBE}"]["null"] == n_repo + 1
    assert result[f"six weeks later / {PROBE}"]["null"] == n_repo + 1
    assert result["six weeks later / repo_activity"]["null"] == 1  # no TTL: values hold
    assert result["six weeks later / author_activity"]["null"] == 1


@pytest.fixture(scope="module")
def subset(tmp_path_factory, sample_parquet):
    t = pq.read_table(sample_parquet)
    keep = pc.and_(pc.is_in(t["repo"], pa.array(REPOS, t["repo"].type)),
                   pc.less(t["committed_at"], pa.scalar(START + timedelta(days=1), t["committed_at"].type)))
    path = tmp_path_factory.mktemp("ttl") / "subset.parquet"
    pq.write_table(t.filter(keep), path)
    return path


def test_ttl_parity_local_profile(tmp_path, subset):
    env = local_env(tmp_path / "home")
    _deploy(env, subset)
    with deployment.exported(env) as p:
        counts = {k: len(v) for k, v in deployment.all_entities(p).items()}
    _check(_parity(env), counts)
    _stock_store_serves_expired_values(env)


def _stock_store_serves_expired_values(env: dict[str, str]) -> None:
    """The gap the TTL stores close: Feast's own SQLite store returns DAY's row on DAY + 1, offline says null."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    with deployment.exported(env) as p:
        from skewless.ops import feast_ops

        store = feast_ops.feature_store(p)
        fv = store.get_feature_view(PROBE)
        keys = [EntityKey(join_keys=["repo"], entity_values=[Value(string_val=r)]) for r in REPOS]
        stock = SqliteOnlineStore().online_read(store.config, fv, keys)
        assert all(values is not None for _, values in stock), "the stock store holds every repository"
        nxt = START + timedelta(days=1)
        offline = store.get_historical_features(
            entity_df=pd.DataFrame({"repo": list(REPOS), "event_timestamp": pd.Timestamp(nxt)}),
            features=[f"{PROBE}:commits_last_30d"]).to_df()
        assert offline["commits_last_30d"].isna().all()
        with ttl.serving_clock(nxt):
            ours = store.get_online_features(features=[f"{PROBE}:commits_last_30d"],
                                             entity_rows=[{"repo": r} for r in REPOS]).to_dict()
        assert ours["commits_last_30d"] == [None] * len(REPOS)


@pytest.mark.production
@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not running on 127.0.0.1:5432")
def test_ttl_parity_production_profile(tmp_path, subset):
    redis = RedisServer(tmp_path / "redis").start()
    pg = PgDatabase()
    try:
        env = production_env(tmp_path / "home", pg, redis)
        _deploy(env, subset)
        with deployment.exported(env) as p:
            counts = {k: len(v) for k, v in deployment.all_entities(p).items()}
        _check(_parity(env), counts)
    finally:
        redis.stop()
        pg.drop()
