"""IcebergOfflineStore and StreamingComputeEngine against Feast's own DuckDB store and local engine.

Every retrieval below runs twice through the Feast SDK on one registry — once with the stock ``duckdb`` offline
store, once with ``skewless.feast_ext.offline.IcebergOfflineStore`` — and the two DataFrames must be equal (values
and dtypes; stock rows sorted back into entity order). The hand-made tables also carry hand-computed expectations,
so both stores being wrong the same way would fail too. Materialization is compared byte for byte in Redis.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from homes import exported
from skewless.data import SAMPLE_COMMITS as SAMPLE
from skewless.core import config

UNTIL = dt.date(2026, 8, 22)  # the sample's last commit day
B = pd.Timestamp("2026-01-10", tz="UTC")  # base time of the hand-made tables
US = pd.Timedelta(microseconds=1)
H = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
REDIS_DBS = (6, 7)  # this module's Redis databases (stock, skewless); checked empty, flushed after
REPO_FEATURES = ["commits_last_7d", "commits_last_30d", "active_authors_last_30d", "lines_changed_last_7d",
                 "mean_files_per_commit_last_30d", "days_since_last_commit"]


@dataclass
class Deployment:
    home: Path
    yamls: dict[str, Path]
    sample: pd.DataFrame
    first_snapshot: dict[str, int]

    def store(self, name: str):
        from feast import FeatureStore

        return FeatureStore(repo_path=str(config.FEATURE_REPO), fs_yaml_file=self.yamls[name])


def _yaml(root: Path, name: str, offline: dict, engine=None, redis_db: int | None = None) -> Path:
    base = yaml.safe_load((config.FEATURE_REPO / "feature_store.yaml").read_text())
    base["offline_store"] = offline
    if offline["type"] == "duckdb":
        base.pop("coerce_tz_aware", None)  # the stock store runs with Feast's own coercion of naive timestamps
    if engine is not None:
        base["batch_engine"] = engine
    if redis_db is not None:
        base["online_store"] = {"type": "redis", "connection_string": f"127.0.0.1:6379,db={redis_db}"}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


# --- hand-made Iceberg tables ------------------------------------------------------------------------------------
PAIRS_SCHEMA = pa.schema([
    pa.field("repo", pa.string(), nullable=False), pa.field("author_id", pa.string(), nullable=False),
    pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC")), pa.field("value_src", pa.int64()),
    pa.field("score", pa.float64()),
])
NAIVE_SCHEMA = pa.schema([pa.field("repo", pa.string(), nullable=False),
                          pa.field("ts", pa.timestamp("us"), nullable=False), pa.field("level", pa.int64())])


def _pairs(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows))
    return pa.table({"repo": list(cols[0]), "author_id": list(cols[1]), "event_timestamp": list(cols[2]),
                     "created_at": list(cols[3]), "value_src": list(cols[4]), "score": list(cols[5])},
                    schema=PAIRS_SCHEMA)


PAIRS_V1 = [  # (repo, author_id, event_timestamp, created_at, value_src, score)
    ("r/1", "a1", B, B, 1, 0.5),
    ("r/1", "a1", B, B + H, 2, 1.5),  # same event time, created later: wins
    ("r/1", "a1", B + 3 * H, B + 3 * H, 3, None),
    ("r/1", "a2", B + H, B + H, 10, 10.0),
    ("r/2", "a1", B - DAY, B - DAY, 20, 20.0),
]
PAIRS_V2 = [("r/1", "a1", B + 4 * H, B + 4 * H, 4, 4.0)]  # a later snapshot
NAIVE_ROWS = pa.table({"repo": ["r/1", "r/1", "r/3"],
                       "ts": [B.tz_localize(None), (B + DAY).tz_localize(None), B.tz_localize(None)],
                       "level": [1, 2, 7]}, schema=NAIVE_SCHEMA)


def _edge_objects(p: config.Profile, store):
    from feast import Entity, FeatureView, Field
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
    from feast.types import Float64, Int64

    props = p.catalog_properties()

    def source(table: str, ts: str, **kw) -> IcebergSource:
        return IcebergSource(name=f"{table}_source", catalog_type="sql", catalog_name=p.catalog_name,
                             warehouse=props["warehouse"], namespace="features", table=table,
                             catalog_properties={"uri": props["uri"]}, timestamp_field=ts, **kw)

    repo: Entity = store.get_entity("repo")
    author: Entity = store.get_entity("author")
    pairs = FeatureView(name="edge_pairs", entities=[repo, author], ttl=dt.timedelta(hours=2),
                        schema=[Field(name="value", dtype=Int64), Field(name="score", dtype=Float64)],
                        source=source("edge_pairs", "event_timestamp", created_timestamp_column="created_at",
                                      field_mapping={"value_src": "value"}), online=True)
    naive = FeatureView(name="edge_naive", entities=[repo], ttl=dt.timedelta(0),
                        schema=[Field(name="level", dtype=Int64)], source=source("edge_naive", "ts"), online=True)
    return [pairs, naive]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("offline_store")
    home = root / "home"
    home.mkdir()
    with exported(home):
        from skewless import features, lake
        from skewless.ops import feast_ops
        from skewless.lake import ingest

        ingest.ingest([SAMPLE])
        features.build(until=UNTIL)
        feast_ops.apply()
        cat = lake.catalog()
        pairs = cat.create_table("features.edge_pairs", schema=PAIRS_SCHEMA)
        pairs.append(_pairs(PAIRS_V1))
        first = {"features.edge_pairs": pairs.current_snapshot().snapshot_id}
        pairs.append(_pairs(PAIRS_V2))
        cat.create_table("features.edge_naive", schema=NAIVE_SCHEMA).append(NAIVE_ROWS)
        yamls = {
            "stock": _yaml(root, "stock", {"type": "duckdb"}),
            "skewless": _yaml(root, "skewless", {"type": "skewless.feast_ext.offline.IcebergOfflineStore"}),
            "pyiceberg": _yaml(root, "pyiceberg", {"type": "skewless.feast_ext.offline.IcebergOfflineStore",
                                                   "native_parquet": False, "entity_filter_max_keys": 0}),
            "redis_stock": _yaml(root, "redis_stock", {"type": "duckdb"}, "local", REDIS_DBS[0]),
            "redis_skewless": _yaml(root, "redis_skewless", {"type": "skewless.feast_ext.offline.IcebergOfflineStore"},
                                    {"type": "skewless.feast_ext.materialize.StreamingComputeEngine",
                                     "batch_size": 500}, REDIS_DBS[1]),
        }
        dep = Deployment(home, yamls, pd.read_parquet(SAMPLE), first)
        store = dep.store("stock")
        store.apply(_edge_objects(config.profile(), store))
        yield dep


def both(dep: Deployment, entity_df, features, full_feature_names: bool = False,
         order: str = "row_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stock, skewless) results; stock sorted back into entity order by ``order``."""
    with exported(dep.home):
        stock = dep.store("stock").get_historical_features(
            entity_df=entity_df, features=features, full_feature_names=full_feature_names).to_df()
        mine = dep.store("skewless").get_historical_features(
            entity_df=entity_df, features=features, full_feature_names=full_feature_names).to_df()
    stock = stock.sort_values(order, kind="stable").reset_index(drop=True)
    return stock, mine


def assert_same(stock: pd.DataFrame, mine: pd.DataFrame, order: str = "row_id") -> None:
    """Equal values and dtypes, in the same column order (rows compared in ``order``)."""
    assert list(mine.columns) == list(stock.columns)
    mine = mine.sort_values(order, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, stock, check_exact=True)


# --- entity dataframes on the sample ------------------------------------------------------------------------------
def _repo_rows(sample: pd.DataFrame, rng: np.random.Generator) -> list[tuple[str, pd.Timestamp]]:
    rows = []
    end = pd.Timestamp(UTC_day(UNTIL))
    for repo, g in sample.groupby("repo"):
        t = g["committed_at"].sort_values()
        first = t.iloc[0].floor("D")
        rows += [(repo, first - US), (repo, first), (repo, first + DAY), (repo, first + DAY - US)]
        # The end of the history: with no TTL (ADR 0009) the last row (end) holds at every later time.
        rows += [(repo, end), (repo, end + DAY), (repo, end + DAY + US), (repo, end + 3 * DAY)]
        for c in rng.choice(t.to_numpy(), size=12, replace=False):
            d = pd.Timestamp(c).floor("D")
            rows += [(repo, d + k * DAY + pd.Timedelta(microseconds=int(rng.integers(0, 86_400_000_000))))
                     for k in (0, 1, 8, 31)]
    return rows


def UTC_day(d: dt.date) -> pd.Timestamp:
    return pd.Timestamp(d, tz="UTC")


def _entity_df(rows: list[tuple], extra: dict | None = None) -> pd.DataFrame:
    df = pd.DataFrame({"repo": [r for r, _ in rows],
                       "event_timestamp": pd.to_datetime([t for _, t in rows], utc=True)})
    df["row_id"] = np.arange(len(df), dtype=np.int64)
    for k, v in (extra or {}).items():
        df[k] = v
    return df


@pytest.mark.parametrize("variant", ["aware", "naive", "nanosecond_dtype", "strings", "duplicates_unknown_null",
                                     "extra_columns", "shuffled"])
def test_repo_activity_equals_stock(deployed: Deployment, variant: str) -> None:
    rng = np.random.default_rng(7)
    rows = _repo_rows(deployed.sample, rng)
    df = _entity_df(rows)
    if variant == "naive":
        df["event_timestamp"] = df["event_timestamp"].dt.tz_localize(None)
    elif variant == "nanosecond_dtype":
        df["event_timestamp"] = df["event_timestamp"].astype("datetime64[ns, UTC]")
    elif variant == "strings":
        df["event_timestamp"] = df["event_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    elif variant == "duplicates_unknown_null":
        extra = _entity_df([("nobody/none", B), (None, B), ("encode/httpx", B)] * 3)
        df = pd.concat([df, df.iloc[:40], extra], ignore_index=True)
        df["row_id"] = np.arange(len(df), dtype=np.int64)
    elif variant == "extra_columns":
        df["label"] = rng.random(len(df))
        df["flag"] = rng.random(len(df)) < 0.5
        df["name"] = [f"n{i}" for i in range(len(df))]
        df["maybe"] = pd.array([None if i % 3 else i for i in range(len(df))], dtype="Int64")
        df["kind"] = pd.Categorical(rng.choice(["a", "b"], size=len(df)))
    elif variant == "shuffled":
        df = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    stock, mine = both(deployed, df, [f"repo_activity:{f}" for f in REPO_FEATURES])
    assert_same(stock, mine)
    assert mine["row_id"].tolist() == df["row_id"].tolist(), "rows must come back in entity_df order"
    # Null exactly where an entity has no row yet (one instant before each repository's first day) or is unknown.
    assert mine["commits_last_30d"].isna().sum() >= deployed.sample["repo"].nunique()
    assert mine["commits_last_30d"].notna().sum() > 200


def _last_rows(dep: Deployment) -> dict[str, pd.Timestamp]:
    """Each repository's newest repo_activity row time (histories end on different days)."""
    with exported(dep.home):
        from skewless import lake

        t = lake.load_table("features.repo_activity").scan(selected_fields=("repo", "event_timestamp")).to_pandas()
    return t.groupby("repo")["event_timestamp"].max().to_dict()


def test_no_ttl_last_row_holds_after_history_ends(deployed: Deployment) -> None:
    """ADR 0009: the views declare no TTL, so each repository's last row answers at any later time (offline as
    online); finite-TTL expiry is covered by the hand-made ``edge_pairs`` view below and tests/reliability."""
    last = _last_rows(deployed)
    assert len(last) >= 6
    with exported(deployed.home):
        ttl = pd.Timedelta(deployed.store("stock").get_feature_view("repo_activity").ttl)
    assert ttl == pd.Timedelta(0)
    rows = []
    for repo, end in sorted(last.items()):
        rows += [(repo, end), (repo, end + DAY + US), (repo, end + 400 * DAY), (repo, end - US)]
    df = _entity_df(rows)
    stock, mine = both(deployed, df, ["repo_activity:days_since_last_commit"])
    assert_same(stock, mine)
    got = mine["days_since_last_commit"].tolist()
    for i in range(0, len(got), 4):
        assert not np.isnan(got[i]) and got[i] == got[i + 1] == got[i + 2], rows[i]
        assert not np.isnan(got[i + 3]), rows[i + 3]  # the day before: its own row


def test_multiple_views_and_full_feature_names(deployed: Deployment) -> None:
    rng = np.random.default_rng(11)
    sample = deployed.sample.sample(300, random_state=1)
    ts = sample["committed_at"] + pd.to_timedelta(rng.integers(-40, 40, size=len(sample)), unit="D")
    df = pd.DataFrame({"repo": sample["repo"].to_numpy(), "author_id": sample["author_id"].to_numpy(),
                       "event_timestamp": ts.to_numpy(), "row_id": np.arange(len(sample))})
    refs = ["repo_activity:commits_last_7d", "author_activity:commits_total", "author_activity:weekly_streak",
            "repo_activity:mean_files_per_commit_last_30d"]
    for full in (False, True):
        stock, mine = both(deployed, df, refs, full_feature_names=full)
        assert_same(stock, mine)
    assert "author_activity__commits_total" in mine.columns
    assert mine["author_activity__commits_total"].notna().sum() > 200


def test_feature_service(deployed: Deployment) -> None:
    with exported(deployed.home):
        service = deployed.store("stock").get_feature_service("next_week_commits_v1")
    df = _entity_df(_repo_rows(deployed.sample, np.random.default_rng(5))[:200])
    stock, mine = both(deployed, df, service)
    assert_same(stock, mine)


def test_empty_entity_df(deployed: Deployment) -> None:
    df = _entity_df([]).astype({"repo": object})
    stock, mine = both(deployed, df, ["repo_activity:commits_last_7d"])
    assert len(mine) == 0
    assert_same(stock, mine)


# --- hand-made tables: created-timestamp ties, two join keys, field mapping, naive event times, nulls ------------
PAIR_CASES = [  # (repo, author_id, T, expected value, expected score)
    ("r/1", "a1", B - US, None, None),  # before any row
    ("r/1", "a1", B, 2, 1.5),  # two rows at B: the later created one
    ("r/1", "a1", B + 2 * H, 2, 1.5),  # B + ttl: still valid
    ("r/1", "a1", B + 2 * H + US, None, None),  # one microsecond later: expired
    ("r/1", "a1", B + 3 * H, 3, None),  # null feature value
    ("r/1", "a1", B + 4 * H - US, 3, None),
    ("r/1", "a1", B + 5 * H, 4, 4.0),  # the second snapshot's row
    ("r/1", "a2", B + 90 * pd.Timedelta(minutes=1), 10, 10.0),
    ("r/2", "a1", B, None, None),  # its only row is a day old (ttl 2 h)
    ("r/2", "a2", B, None, None),  # unknown pair
    (None, "a1", B, None, None),  # null key
    ("r/1", "a1", B, 2, 1.5),  # duplicate entity row
]


def _pair_df(cases) -> pd.DataFrame:
    return pd.DataFrame({"repo": [c[0] for c in cases], "author_id": [c[1] for c in cases],
                         "event_timestamp": pd.to_datetime([c[2] for c in cases], utc=True),
                         "row_id": np.arange(len(cases))})


def _check_pairs(got: pd.DataFrame, cases, value="value", score="score") -> None:
    for i, c in enumerate(cases):
        v, s = got[value].iloc[i], got[score].iloc[i]
        assert (pd.isna(v) if c[3] is None else v == c[3]), f"row {i} {c}: value {v}"
        assert (pd.isna(s) if c[4] is None else s == c[4]), f"row {i} {c}: score {s}"


def test_hand_made_pairs_equal_stock_and_expectations(deployed: Deployment) -> None:
    df = _pair_df(PAIR_CASES)
    stock, mine = both(deployed, df, ["edge_pairs:value", "edge_pairs:score"])
    assert_same(stock, mine)
    _check_pairs(mine, PAIR_CASES)


def test_naive_event_time_column_and_no_ttl(deployed: Deployment) -> None:
    cases = [("r/1", B - US, None), ("r/1", B + 12 * H, 1), ("r/1", B + 10 * DAY, 2), ("r/3", B + 1000 * DAY, 7),
             ("r/2", B, None)]
    df = _entity_df([(r, t) for r, t, _ in cases])
    stock, mine = both(deployed, df, ["edge_naive:level"])
    assert_same(stock, mine)
    got = mine["level"].tolist()
    assert [None if pd.isna(g) else g for g in got] == [c[2] for c in cases]


def test_nanosecond_entity_timestamps(deployed: Deployment) -> None:
    """Stock Feast refuses timestamps with nanoseconds; this store floors them for the as-of match and keeps the
    TTL exact (a row expires when it is older than T - ttl, nanoseconds included), and returns them unchanged."""
    ns = pd.Timedelta(nanoseconds=500)
    cases = [("r/1", "a1", B + 2 * H + ns, None, None),  # B is 2 h + 500 ns old: expired
             ("r/1", "a1", B + H + ns, 2, 1.5),
             ("r/1", "a1", B + 3 * H + ns, 3, None),
             ("r/1", "a1", B + 3 * H - ns, None, None),  # the B row is 3 h - 500 ns old: expired
             ("r/1", "a1", B - ns, None, None)]
    df = _pair_df(cases)
    with exported(deployed.home):
        mine = deployed.store("skewless").get_historical_features(
            entity_df=df, features=["edge_pairs:value", "edge_pairs:score"]).to_df()
    _check_pairs(mine, cases)
    assert (mine["event_timestamp"] == df["event_timestamp"]).all()


def test_sql_entity_df_equals_dataframe(deployed: Deployment, tmp_path: Path) -> None:
    df = _pair_df(PAIR_CASES)
    path = tmp_path / "entities.parquet"
    df.to_parquet(path)
    with exported(deployed.home):
        store = deployed.store("skewless")
        refs = ["edge_pairs:value", "edge_pairs:score"]
        from_sql = store.get_historical_features(
            entity_df=f"SELECT * FROM read_parquet('{path}') ORDER BY row_id", features=refs).to_df()
        from_df = store.get_historical_features(entity_df=df, features=refs).to_df()
    pd.testing.assert_frame_equal(from_sql, from_df, check_exact=True)


def test_pyiceberg_executor_equals_native(deployed: Deployment) -> None:
    df = _entity_df(_repo_rows(deployed.sample, np.random.default_rng(9))[:300])
    refs = [f"repo_activity:{f}" for f in REPO_FEATURES]
    with exported(deployed.home):
        native = deployed.store("skewless").get_historical_features(entity_df=df, features=refs).to_df()
        arrow = deployed.store("pyiceberg").get_historical_features(entity_df=df, features=refs).to_df()
        pairs = deployed.store("pyiceberg").get_historical_features(
            entity_df=_pair_df(PAIR_CASES), features=["edge_pairs:value", "edge_pairs:score"]).to_df()
    pd.testing.assert_frame_equal(arrow, native, check_exact=True)
    _check_pairs(pairs, PAIR_CASES)


def test_pinned_snapshot_is_read_and_reported(deployed: Deployment) -> None:
    from skewless.lake.snapshots import pinned_snapshots

    cases = [("r/1", "a1", B + 5 * H, 3, None)]  # at the first snapshot the B + 4 h row does not exist yet
    with exported(deployed.home):
        store = deployed.store("skewless")
        with pinned_snapshots(deployed.first_snapshot) as reads:
            got = store.get_historical_features(entity_df=_pair_df(cases),
                                                features=["edge_pairs:value", "edge_pairs:score"]).to_df()
        assert reads.check() == deployed.first_snapshot
    _check_pairs(got, cases)


def test_scan_prunes_files_and_columns(deployed: Deployment) -> None:
    """The scan reads only the requested columns, and a few entity keys prune the row groups DuckDB reads."""
    from skewless.feast_ext import offline

    df = _entity_df([("encode/httpx", B)])
    with exported(deployed.home):
        store = deployed.store("skewless")
        job = store.get_historical_features(entity_df=df, features=["repo_activity:commits_last_7d"])
    sql = job.to_sql()
    assert "commits_last_30d" not in sql and "commits_last_7d" in sql
    assert "\"repo\" IN ('encode/httpx')" in sql
    assert offline.ROW in sql


def test_bad_entity_df_is_named(deployed: Deployment) -> None:
    from feast.errors import FeastEntityDFMissingColumnsError

    with exported(deployed.home):
        store = deployed.store("skewless")
        with pytest.raises(FeastEntityDFMissingColumnsError):
            store.get_historical_features(entity_df=pd.DataFrame({"event_timestamp": [B]}),
                                          features=["repo_activity:commits_last_7d"]).to_df()
        with pytest.raises(ValueError, match="commits_last_7d"):
            store.get_historical_features(
                entity_df=pd.DataFrame({"repo": ["x"], "event_timestamp": [B], "commits_last_7d": [1]}),
                features=["repo_activity:commits_last_7d"]).to_df()


@pytest.mark.parametrize("method", ["pull_latest", "pull_all"])
def test_pull_methods_equal_stock(deployed: Deployment, method: str) -> None:
    start, end = (B - 40 * DAY).to_pydatetime(), (B + 5 * H).to_pydatetime()
    out = {}
    with exported(deployed.home):
        for name in ("stock", "skewless"):
            store = deployed.store(name)
            off = store._get_provider().offline_store
            for view, keys, feats, ts, created in (
                ("repo_activity", ["repo"], REPO_FEATURES, "event_timestamp", None),
                ("edge_pairs", ["repo", "author_id"], ["value_src", "score"], "event_timestamp", "created_at"),
            ):
                fv = store.get_feature_view(view)
                fn = off.pull_latest_from_table_or_query if method == "pull_latest" else \
                    off.pull_all_from_table_or_query
                df = fn(store.config, fv.batch_source, keys, feats, ts, created, start, end).to_df()
                sort = keys + [ts] + ([created] if created else [])
                out[(name, view)] = df.sort_values(sort).reset_index(drop=True)[keys + feats + [ts]]
    for view in ("repo_activity", "edge_pairs"):
        assert len(out[("skewless", view)]) > 0
        pd.testing.assert_frame_equal(out[("skewless", view)], out[("stock", view)], check_exact=True,
                                      check_dtype=False)


# --- materialization -----------------------------------------------------------------------------------------------
def _redis(db: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=10)


def _state(db: int) -> dict:
    r = _redis(db)
    return {k: r.hgetall(k) for k in r.scan_iter(count=1000)}


def test_streaming_materialization_writes_what_feast_writes(deployed: Deployment) -> None:
    for db in REDIS_DBS:
        if _redis(db).dbsize():
            pytest.fail(f"Redis db {db} is not empty: this test needs it for itself")
    try:
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        mid = dt.datetime(2026, 1, 10, 3, tzinfo=dt.timezone.utc)
        end = dt.datetime(2026, 8, 23, tzinfo=dt.timezone.utc)
        with exported(deployed.home):
            stock, mine = deployed.store("redis_stock"), deployed.store("redis_skewless")
            for start, stop in ((epoch, mid), (mid, end)):  # initial load, then an incremental one
                stock.materialize(start, stop)
                mine.materialize(start, stop)
                a, b = _state(REDIS_DBS[0]), _state(REDIS_DBS[1])
                assert len(a) > 1000
                assert a == b
            mine.materialize(epoch, end)  # a full re-run changes nothing
            assert _state(REDIS_DBS[1]) == a
            online = mine.get_online_features(features=["edge_pairs:value", "edge_pairs:score"],
                                              entity_rows=[{"repo": "r/1", "author_id": "a1"}]).to_dict()
        assert online["value"] == [4] and online["score"] == [4.0]
    finally:
        for db in REDIS_DBS:
            _redis(db).flushdb()


def test_engine_hands_other_views_to_feast() -> None:
    from feast import BatchFeatureView, Entity, FeatureView, Field, FileSource
    from feast.infra.common.materialization_job import MaterializationTask
    from feast.types import Int64

    from skewless.feast_ext.materialize import not_streamable

    src = FileSource(path="x.parquet", timestamp_field="ts")
    e = Entity(name="e", join_keys=["e"])
    plain = FeatureView(name="v", entities=[e], schema=[Field(name="x", dtype=Int64)], source=src)
    task = MaterializationTask(project="p", feature_view=plain, start_time=B, end_time=B)
    assert not_streamable(task) is None
    assert not_streamable(MaterializationTask(project="p", feature_view=plain, start_time=B, end_time=B,
                                              only_latest=False))
    bfv = BatchFeatureView(name="b", entities=[e], schema=[Field(name="x", dtype=Int64)], source=src,
                           udf=lambda df: df, udf_string="lambda df: df", mode="pandas")
    assert not_streamable(MaterializationTask(project="p", feature_view=bfv, start_time=B, end_time=B))


# --- Feast's Redis format, column-wise -----------------------------------------------------------------------------
def _feast_values(column: pa.Array, value_type) -> list[bytes]:
    from feast.type_map import python_values_to_proto_values

    return [p.SerializeToString() for p in
            python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)]


INT53 = st.integers(-(2 ** 53), 2 ** 53)


@settings(max_examples=60, deadline=None)
@given(ints=st.lists(st.one_of(st.none(), INT53), max_size=30),
       whole=st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), min_size=1, max_size=30),
       floats=st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), max_size=30),
       texts=st.lists(st.one_of(st.none(), st.text(max_size=300)), max_size=30),
       bools=st.lists(st.one_of(st.none(), st.booleans()), max_size=30))
def test_value_encoders_equal_feast(ints, whole, floats, texts, bools) -> None:
    from feast.value_type import ValueType

    from skewless.feast_ext import redis_format as rf

    cases = [(pa.array(ints, pa.int64()), ValueType.INT64), (pa.array(whole, pa.int64()), ValueType.INT64),
             (pa.array([None if i is None else int(np.int32(i % 2 ** 31)) for i in ints], pa.int32()),
              ValueType.INT32),
             (pa.array(floats, pa.float64()), ValueType.DOUBLE),
             (pa.array(floats, pa.float64()).cast(pa.float32(), safe=False), ValueType.FLOAT),
             (pa.array(texts, pa.string()), ValueType.STRING), (pa.array(bools, pa.bool_()), ValueType.BOOL)]
    for column, vt in cases:
        if len(column) == 0:
            continue
        assert rf.value_protos(column, vt).to_pylist() == _feast_values(column, vt), vt


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.text(max_size=40), min_size=1, max_size=20),
       nums=st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), min_size=20, max_size=20),
       micros=st.lists(st.integers(-(10 ** 16), 10 ** 16), min_size=1, max_size=20))
def test_key_and_timestamp_encoders_equal_feast(keys, nums, micros) -> None:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType
    from google.protobuf.timestamp_pb2 import Timestamp

    from skewless.feast_ext import redis_format as rf

    batch = pa.record_batch({"repo": pa.array(keys), "n": pa.array(nums[:len(keys)], pa.int64())})
    got = rf.entity_keys(batch, {"repo": ValueType.STRING, "n": ValueType.INT64}, "skewless").to_pylist()
    want = [_redis_key("skewless", EntityKey(join_keys=["repo", "n"],
                                             entity_values=[Value(string_val=k), Value(int64_val=n)]))
            for k, n in zip(keys, nums)]
    assert got == want
    ts = pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    expected = []
    for v in ts.to_pylist():
        t = Timestamp()
        t.FromDatetime(v)
        expected.append(t.SerializeToString())
    assert rf.timestamp_protos(ts).to_pylist() == expected
    assert [rf.timestamp_nanos(b) for b in expected] == [m * 1000 for m in micros]


def test_sample_entity_rows_written_to_parquet_are_read_back(tmp_path: Path) -> None:
    """The SQL entity_df path reads Parquet through DuckDB with timestamps intact (nanoseconds floored)."""
    from skewless.feast_ext.offline import _entities

    t = pa.table({"repo": ["a", "b"], "event_timestamp": pa.array([1, 1_500], pa.timestamp("ns", tz="UTC"))})
    pq.write_table(t, tmp_path / "e.parquet")
    ents = _entities(f"SELECT * FROM read_parquet('{tmp_path / 'e.parquet'}')", None)
    assert ents.timestamp_column == "event_timestamp"
    assert ents.floor_us.tolist() == [0, 1] and ents.ceil_us.tolist() == [1, 2]


# --- what a retrieval assumes, said out loud (skewless.feast_ext.retrieval; issue 17) -------------------------------
def _strict_store(dep: Deployment, root: Path):
    from feast import FeatureStore

    path = _yaml(root, "strict", {"type": "skewless.feast_ext.offline.IcebergOfflineStore", "strict_retrieval": True})
    return FeatureStore(repo_path=str(config.FEATURE_REPO), fs_yaml_file=path)


def test_naive_entity_timestamps_are_read_as_utc_with_a_warning_naming_the_column(deployed: Deployment,
                                                                                 tmp_path: Path) -> None:
    import warnings

    from skewless.feast_ext import retrieval

    feature = ["repo_activity:commits_last_7d"]
    aware = _entity_df([("spf13/cobra", pd.Timestamp("2026-05-01 23:30", tz="UTC"))])
    naive = aware.assign(event_timestamp=aware["event_timestamp"].dt.tz_localize(None))
    strings = aware.assign(event_timestamp=["2026-05-01 23:30:00"])
    sql = "SELECT 'spf13/cobra' AS repo, TIMESTAMP '2026-05-01 23:30:00' AS event_timestamp, 0 AS row_id"
    store = deployed.store("skewless")
    with exported(deployed.home):
        with warnings.catch_warnings():
            warnings.simplefilter("error", retrieval.RetrievalWarning)  # aware timestamps: nothing to say
            want = store.get_historical_features(entity_df=aware, features=feature).to_df()["commits_last_7d"]
        for df in (naive, strings, sql):
            with pytest.warns(retrieval.RetrievalWarning, match="column 'event_timestamp' holds timestamps without "
                                                                "a time zone; they are read as UTC"):
                got = store.get_historical_features(entity_df=df, features=feature).to_df()["commits_last_7d"]
            assert got.tolist() == want.tolist()
        with pytest.raises(retrieval.RetrievalError, match="'event_timestamp' holds timestamps without a time zone"):
            _strict_store(deployed, tmp_path).get_historical_features(entity_df=naive, features=feature).to_df()
        with retrieval.strict(), pytest.raises(retrieval.RetrievalError, match="'event_timestamp'"):
            store.get_historical_features(entity_df=naive, features=feature)


def test_a_timestamp_after_the_last_built_day_is_flagged_naming_the_day(deployed: Deployment,
                                                                        tmp_path: Path) -> None:
    """Issue 17: a T after the last built day silently returned that day's values."""
    import warnings

    from skewless.feast_ext import retrieval

    feature = ["repo_activity:days_since_last_commit"]
    within = _entity_df([("spf13/cobra", UTC_day(UNTIL) + DAY - US)])
    beyond = _entity_df([("spf13/cobra", UTC_day(UNTIL) + 12 * H), ("spf13/cobra", UTC_day(UNTIL) + 18 * DAY)])
    store = deployed.store("skewless")
    with exported(deployed.home):
        with warnings.catch_warnings():
            warnings.simplefilter("error", retrieval.RetrievalWarning)
            store.get_historical_features(entity_df=within, features=feature).to_df()
        with pytest.warns(retrieval.RetrievalWarning, match="1 of 2 entity rows ask for feature view repo_activity "
                                                            "after features.repo_activity's last built day "
                                                            f"{UNTIL}.*those of {UNTIL}"):
            got = store.get_historical_features(entity_df=beyond, features=feature).to_df()
        assert got["days_since_last_commit"].iloc[0] == got["days_since_last_commit"].iloc[1]  # what it flags
        with pytest.raises(retrieval.RetrievalError, match=f"last built day {UNTIL}"):
            _strict_store(deployed, tmp_path).get_historical_features(entity_df=beyond, features=feature).to_df()
