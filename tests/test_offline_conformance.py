"""Feast's offline-store contract, kept by skewless's Iceberg store: one test per contract, each run twice.

Every test below runs against two backends built from the same DataFrames:

* ``duckdb`` — the reference: Feast's stock DuckDB offline store over Parquet ``FileSource``s, Feast's local
  materialization engine and its SQLite online store (what Feast's own universal offline-store tests run);
* ``skewless`` — ``skewless.feast_ext.offline.IcebergOfflineStore`` over ``IcebergSource`` tables in a pyiceberg
  SqlCatalog, the ``StreamingComputeEngine`` and the TTL-honouring ``TtlSqliteOnlineStore`` (the profiles' setup).

The contracts are those Feast's universal tests check (``sdk/python/tests/integration/offline_store/`` in Feast's
source): historical retrieval through a ``field_mapping`` that renames the event and created timestamp columns,
``write_to_offline_store`` and offline ``push`` (cast to the table's schema: nanosecond timestamps, reordered
columns, consecutive writes; a wrong schema is refused by name), the dtypes of ``bool`` and list features
(including empty lists), ``persist`` of a retrieval as a saved dataset without overwriting unless asked, and
online/offline consistency after ``materialize`` and ``materialize_incremental``. Each test asserts hand-computed
expectations, so both backends failing alike would fail too.

Where skewless deliberately differs it is asserted per backend and says why (ADR 0013,
adrs/0013-iceberg-store-keeps-feasts-offline-store-contract.md): online reads of a view with a finite TTL (ADR 0009,
adrs/0009-no-ttl-on-feature-views.md: skewless's online stores apply the offline TTL rule, Feast's stock ones serve
whatever they hold), and writes to a field-mapped source (Feast's writer refuses them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

BACKENDS = ["duckdb", "skewless"]
NOW = pd.Timestamp("2026-03-02 12:00:00", tz="UTC")  # fixed: no test depends on the wall clock
H = pd.Timedelta(hours=1)


@dataclass
class Backend:
    """One Feast deployment in ``root``: its store and a factory of batch sources holding given rows."""

    name: str
    root: Path
    pull_latest: bool = False  # the yaml's materialization.pull_latest_features (Feast's default: False)
    _catalog: Any = field(default=None, init=False)

    @property
    def iceberg(self) -> bool:
        return self.name == "skewless"

    def yaml_path(self) -> Path:
        path = self.root / "feature_store.yaml"
        if not path.exists():
            online = {"type": "sqlite", "path": str(self.root / "online.db")}
            cfg: dict[str, Any] = {
                "project": "conformance", "provider": "local", "entity_key_serialization_version": 3,
                "registry": {"path": str(self.root / "registry.db"), "cache_ttl_seconds": 0},
                "materialization": {"pull_latest_features": self.pull_latest},
            }
            if self.iceberg:
                cfg["offline_store"] = {"type": "skewless.feast_ext.offline.IcebergOfflineStore"}
                cfg["batch_engine"] = {"type": "skewless.feast_ext.materialize.StreamingComputeEngine"}
                cfg["online_store"] = dict(online, type="skewless.feast_ext.ttl.TtlSqliteOnlineStore")
            else:
                cfg["offline_store"] = {"type": "duckdb"}
                cfg["batch_engine"] = {"type": "local"}
                cfg["online_store"] = online
            path.write_text(yaml.safe_dump(cfg))
        return path

    def store(self):
        from feast import FeatureStore

        return FeatureStore(repo_path=str(self.root), fs_yaml_file=self.yaml_path())

    def catalog(self):
        if self._catalog is None:
            from pyiceberg.catalog.sql import SqlCatalog

            (self.root / "warehouse").mkdir(exist_ok=True)
            self._catalog = SqlCatalog("conformance", uri=f"sqlite:///{self.root / 'catalog.db'}",
                                       warehouse=f"file://{self.root / 'warehouse'}")
            self._catalog.create_namespace("conf")
        return self._catalog

    def source(self, df: pd.DataFrame, name: str, timestamp_field: str, created: Optional[str] = None,
               field_mapping: Optional[dict[str, str]] = None, arrow_schema: Optional[pa.Schema] = None):
        """A batch source named ``name`` holding ``df`` (Parquet file or Iceberg table, per backend)."""
        table = pa.Table.from_pandas(df, schema=arrow_schema, preserve_index=False).replace_schema_metadata(None)
        table = table.cast(_iceberg_arrow_schema(table.schema))  # the same microsecond data in both backends
        if self.iceberg:
            from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

            cat = self.catalog()
            cat.create_table(f"conf.{name}", schema=table.schema).append(table)
            return IcebergSource(name=name, catalog_type="sql", catalog_name="conformance",
                                 warehouse=f"file://{self.root / 'warehouse'}", namespace="conf", table=name,
                                 catalog_properties={"uri": f"sqlite:///{self.root / 'catalog.db'}"},
                                 timestamp_field=timestamp_field, created_timestamp_column=created or "",
                                 field_mapping=field_mapping)
        from feast import FileSource

        path = self.root / f"{name}.parquet"
        import pyarrow.parquet as pq

        pq.write_table(table, path)
        return FileSource(name=name, path=str(path), timestamp_field=timestamp_field,
                          created_timestamp_column=created or "", field_mapping=field_mapping)


def _iceberg_arrow_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t) and t.unit != "us":
        return pa.timestamp("us", tz=t.tz)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_iceberg_arrow_type(t.value_type))
    return t


def _iceberg_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """Iceberg stores microseconds: nanosecond timestamp columns become microsecond ones (values are whole us);
    the reference Parquet files get the same schema, so both backends hold the same data."""
    return pa.schema([pa.field(f.name, _iceberg_arrow_type(f.type), nullable=True) for f in schema])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


def _driver():
    from feast import Entity
    from feast.value_type import ValueType

    return Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


# --- 1. timestamp_field / created_timestamp_column that are targets of a field_mapping ---------------------------
def _basic_driver_rows(values: list) -> pd.DataFrame:
    """Feast's ``create_basic_driver_dataset`` shape: source columns ``ts_1`` and ``created_ts``."""
    return pd.DataFrame({
        "driver_id": pd.array([1, 2, 1, 3, 3], dtype="int64"),
        "value": values,
        "ts_1": pd.to_datetime([NOW - 4 * H, NOW, NOW - 3 * H, NOW - 4 * H, NOW - H], utc=True),
        "created_ts": pd.to_datetime([NOW] * 5, utc=True),
    })


def test_field_mapped_event_and_created_timestamps(backend: Backend) -> None:
    """A source whose ``timestamp_field`` ('ts') and ``created_timestamp_column`` ('created') are field_mapping
    targets of the table's ``ts_1``/``created_ts`` (Feast's universal sources are declared this way)."""
    from feast import FeatureView, Field
    from feast.types import Float64

    rows = _basic_driver_rows([0.1, None, 0.3, 4.0, 5.0])
    src = backend.source(rows, "mapped_ts", "ts", "created", {"ts_1": "ts", "created_ts": "created"})
    fv = FeatureView(name="mapped_ts", entities=[_driver()], ttl=dt.timedelta(hours=2),
                     schema=[Field(name="value", dtype=Float64)], source=src)
    store = backend.store()
    store.apply([_driver(), fv])
    entity_df = pd.DataFrame({"driver_id": [1, 1, 2, 3, 3, 3],
                              "event_timestamp": [NOW - 3 * H, NOW - H + pd.Timedelta(seconds=1), NOW,
                                                  NOW - 2 * H, NOW - 2 * H + pd.Timedelta(seconds=1), NOW]})
    got = store.get_historical_features(entity_df=entity_df, features=["mapped_ts:value"],
                                        full_feature_names=True).to_df()
    got = got.sort_values(["driver_id", "event_timestamp"]).reset_index(drop=True)
    # driver 1: 0.3 at -3h; at -1h+1s the -3h row is 2h+1s old (ttl 2h): null. driver 2: null value at NOW.
    # driver 3: the -4h row (4.0) is exactly 2h old at -2h; a second later it has expired; 5.0 from -1h.
    expected = [0.3, None, None, 4.0, None, 5.0]
    assert [None if pd.isna(v) else v for v in got["mapped_ts__value"]] == expected


# --- 2. write_to_offline_store and offline push: cast to the table's schema ------------------------------------
STATS_SCHEMA = pa.schema([
    ("driver_id", pa.int64()), ("conv_rate", pa.float32()), ("acc_rate", pa.float64()),
    ("avg_daily_trips", pa.int32()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("created", pa.timestamp("us", tz="UTC")),
])


def _stats_view(backend: Backend, ttl: dt.timedelta = dt.timedelta(minutes=10)):
    from feast import FeatureView, Field
    from feast.types import Float32, Float64, Int32

    old = pd.DataFrame({"driver_id": [1001], "conv_rate": [0.5], "acc_rate": [0.25], "avg_daily_trips": [7],
                        "event_timestamp": [NOW - 10 * H], "created": [NOW - 10 * H]})
    src = backend.source(old, "driver_stats", "event_timestamp", "created", arrow_schema=STATS_SCHEMA)
    return FeatureView(name="driver_stats", entities=[_driver()], ttl=ttl, source=src,
                       schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float64),
                               Field(name="avg_daily_trips", dtype=Int32)])


def _rows(ts: list[pd.Timestamp], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(ts)
    # Columns out of the table's order, nanosecond dtype, float64/int64 where the table holds float32/int32.
    return pd.DataFrame({
        "avg_daily_trips": rng.integers(0, 10, size=n),
        "created": pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]"),
        "conv_rate": rng.random(n).astype("float32"),
        "event_timestamp": pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]"),
        "acc_rate": rng.random(n),
        "driver_id": [1001] * n,
    })


STATS_REFS = ["driver_stats:conv_rate", "driver_stats:acc_rate", "driver_stats:avg_daily_trips"]


def _read_stats(store, times: list[pd.Timestamp]) -> pd.DataFrame:
    entity_df = pd.DataFrame({"driver_id": [1001] * len(times), "event_timestamp": times})
    got = store.get_historical_features(entity_df=entity_df, features=STATS_REFS).to_df()
    return got.sort_values("event_timestamp").reset_index(drop=True)


def _assert_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want)
    assert got["conv_rate"].astype("float32").tolist() == want["conv_rate"].astype("float32").tolist()
    assert got["acc_rate"].tolist() == want["acc_rate"].tolist()
    assert got["avg_daily_trips"].astype("int64").tolist() == want["avg_daily_trips"].astype("int64").tolist()


def test_write_to_offline_store_casts_and_appends(backend: Backend) -> None:
    """Feast's test_reorder_columns and test_writing_consecutively_to_offline_store: reordered columns, nanosecond
    timestamps, float64/int64 into float32/int32 columns, two consecutive writes, each then read back."""
    fv = _stats_view(backend)
    store = backend.store()
    store.apply([_driver(), fv])
    times = [NOW + k * H for k in (3, 4, 5, 6)]
    before = _read_stats(store, times[:2])
    assert before[["conv_rate", "acc_rate", "avg_daily_trips"]].isna().all().all()
    first = _rows(times[:2], seed=1)
    store.write_to_offline_store("driver_stats", first, allow_registry_cache=False)
    _assert_rows(_read_stats(store, times[:2]), first)
    second = _rows(times[2:], seed=2)
    second["event_timestamp"] = second["event_timestamp"].dt.tz_localize(None)  # naive means UTC
    store.write_to_offline_store("driver_stats", second, allow_registry_cache=False)
    _assert_rows(_read_stats(store, times), pd.concat([first, second], ignore_index=True))


def test_write_with_wrong_columns_is_refused_by_name(backend: Backend) -> None:
    """Feast's test_writing_incorrect_schema_fails."""
    store = backend.store()
    store.apply([_driver(), _stats_view(backend)])
    bad = _rows([NOW], seed=3).drop(columns=["acc_rate"]).assign(incorrect_schema=[1])
    with pytest.raises(ValueError, match="missing_expected_columns") as err:
        store.write_to_offline_store("driver_stats", bad, allow_registry_cache=False)
    assert "missing_expected_columns: ['acc_rate']" in str(err.value)
    assert "extra_unexpected_columns: ['incorrect_schema']" in str(err.value)


def test_write_of_values_the_table_cannot_hold_fails(backend: Backend) -> None:
    """Sub-microsecond timestamps and out-of-range integers are refused, never truncated (the table holds
    microseconds and int32); both stores fail on the cast, and nothing is written."""
    store = backend.store()
    store.apply([_driver(), _stats_view(backend)])
    nanos = _rows([NOW + H], seed=4)
    nanos["event_timestamp"] = nanos["event_timestamp"] + pd.Timedelta(nanoseconds=1)
    with pytest.raises(ValueError, match="event_timestamp|would lose data"):
        store.write_to_offline_store("driver_stats", nanos, allow_registry_cache=False)
    big = _rows([NOW + H], seed=5).assign(avg_daily_trips=[2 ** 40])
    with pytest.raises(ValueError, match="avg_daily_trips|not in range"):
        store.write_to_offline_store("driver_stats", big, allow_registry_cache=False)
    assert _read_stats(store, [NOW + H])[["conv_rate"]].isna().all().all()


@pytest.mark.parametrize("mode", ["OFFLINE", "ONLINE_AND_OFFLINE"])
def test_push_to_offline_store(backend: Backend, mode: str) -> None:
    """Feast's test_push_features_and_read: a push source over the batch source, pushed offline (and online)."""
    from feast import Entity, FeatureView, Field, PushSource
    from feast.data_source import PushMode
    from feast.types import Int32
    from feast.value_type import ValueType

    location = Entity(name="location", join_keys=["location_id"], value_type=ValueType.INT64)
    old = pd.DataFrame({"location_id": [1, 2], "temperature": [10, 20], "event_timestamp": [NOW - 5 * H] * 2,
                        "created": [NOW - 5 * H] * 2})
    schema = pa.schema([("location_id", pa.int64()), ("temperature", pa.int32()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")), ("created", pa.timestamp("us", tz="UTC"))])
    batch = backend.source(old, "locations", "event_timestamp", "created", arrow_schema=schema)
    push = PushSource(name="location_push", batch_source=batch)
    fv = FeatureView(name="pushable_location_stats", entities=[location], ttl=dt.timedelta(0),
                     schema=[Field(name="temperature", dtype=Int32)], source=push)
    store = backend.store()
    store.apply([location, fv])
    entity_df = pd.DataFrame({"location_id": [1, 2], "event_timestamp": [NOW, NOW]})
    refs = ["pushable_location_stats:temperature"]
    before = store.get_historical_features(entity_df=entity_df, features=refs).to_df().sort_values("location_id")
    assert before["temperature"].tolist() == [10, 20]
    pushed = pd.DataFrame({"event_timestamp": [pd.Timestamp(NOW - H).as_unit("ns")], "location_id": [1],
                           "temperature": [4], "created": [pd.Timestamp(NOW - H).as_unit("ns")]})
    store.push("location_push", pushed, to=getattr(PushMode, mode))
    after = store.get_historical_features(entity_df=entity_df, features=refs).to_df().sort_values("location_id")
    assert after["temperature"].tolist() == [4, 20]
    online = store.get_online_features(features=refs, entity_rows=[{"location_id": 1}]).to_dict()
    assert online["temperature"] == ([4] if mode == "ONLINE_AND_OFFLINE" else [None])


# --- 3. feature types: bool, lists (empty ones too), as Feast declares them -----------------------------------
TYPE_VALUES: dict[str, list] = {  # Feast's get_feature_values_for_dtype
    "int32": [1, 2, 3, 4, 5],
    "int64": [1, 2, 3, 4, 5],
    "float": [1.0, None, 3.0, 4.0, 5.0],
    "bool": [True, None, False, True, False],
    "datetime": [dt.datetime(1980, 1, 1), None, dt.datetime(1981, 1, 1), dt.datetime(1982, 1, 1),
                 dt.datetime(1982, 1, 1)],
}
TYPE_CASES = [(d, False, False) for d in TYPE_VALUES] + [(d, True, e) for d in TYPE_VALUES for e in (False, True)]
ARROW_CHECK = {"int32": pa.types.is_signed_integer, "int64": pa.types.is_signed_integer,
               "float": pa.types.is_float64, "bool": pa.types.is_boolean, "datetime": pa.types.is_timestamp}
ELEMENT_TYPES = {"int32": (int, np.integer), "int64": (int, np.integer), "float": (float, np.floating),
                 "bool": (bool, np.bool_), "datetime": (np.datetime64, dt.datetime)}


def _feast_type(dtype: str, is_list: bool):
    from feast.types import Array, Bool, Float32, Int32, Int64, UnixTimestamp

    base = {"int32": Int32, "int64": Int64, "float": Float32, "bool": Bool, "datetime": UnixTimestamp}[dtype]
    return Array(base) if is_list else base


@pytest.mark.parametrize("dtype,is_list,empty", TYPE_CASES,
                         ids=[f"{d}{'-list' if li else ''}{'-empty' if e else ''}" for d, li, e in TYPE_CASES])
def test_historical_feature_types(backend: Backend, dtype: str, is_list: bool, empty: bool) -> None:
    """Feast's test_feature_get_historical_features_types_match: pandas and Arrow types of every declared type,
    plus the values themselves (driver 1 at -4 h reads row 0, driver 3 at -2 h reads row 3)."""
    from feast import FeatureView, Field

    plain = TYPE_VALUES[dtype]
    if not is_list:
        values = plain
    elif empty:
        values = [[] for _ in plain[:-1]] + [plain[-1:]]
    else:
        values = [[v, v] if v is not None else None for v in plain]
    src = backend.source(_basic_driver_rows(values), f"types_{dtype}_{int(is_list)}{int(empty)}", "ts",
                         "created_ts", {"ts_1": "ts"})
    fv = FeatureView(name="types", entities=[_driver()], ttl=dt.timedelta(days=5), source=src,
                     schema=[Field(name="value", dtype=_feast_type(dtype, is_list))])
    store = backend.store()
    store.apply([_driver(), fv])
    entity_df = pd.DataFrame({"driver_id": [1, 3], "ts": [NOW - 4 * H, NOW - 2 * H]})
    job = store.get_historical_features(entity_df=entity_df, features=["types:value"])
    df = job.to_df().sort_values("driver_id").reset_index(drop=True)
    arrow_type = job.to_arrow().schema.field("value").type
    want = [values[0], values[3]]
    if is_list:
        assert pd.api.types.is_object_dtype(df.dtypes["value"])
        assert pa.types.is_list(arrow_type) and ARROW_CHECK[dtype](arrow_type.value_type), arrow_type
        got = [list(v) for v in df["value"]]
        for v in got:
            assert all(isinstance(x, ELEMENT_TYPES[dtype]) for x in v), v
        if dtype == "datetime":
            got = [[pd.Timestamp(x).tz_localize(None) if pd.Timestamp(x).tzinfo is None
                    else pd.Timestamp(x).tz_convert(None) for x in v] for v in got]
            want = [[pd.Timestamp(x) for x in v] for v in want]
        assert got == want
    else:
        assert ARROW_CHECK[dtype](arrow_type), arrow_type
        checks = {"int32": [pd.api.types.is_integer_dtype], "int64": [pd.api.types.is_integer_dtype],
                  "float": [pd.api.types.is_float_dtype], "datetime": [pd.api.types.is_datetime64_any_dtype],
                  "bool": [pd.api.types.is_bool_dtype, pd.api.types.is_object_dtype]}[dtype]
        assert any(c(df.dtypes["value"]) for c in checks), df.dtypes["value"]
        got = df["value"].tolist()
        if dtype == "datetime":
            got = [pd.Timestamp(x).tz_localize(None) if pd.Timestamp(x).tzinfo is None
                   else pd.Timestamp(x).tz_convert(None) for x in got]
            want = [pd.Timestamp(x) for x in want]
        assert got == want


# --- 4. persist: a retrieval saved as a dataset, never overwriting one unless asked ---------------------------
def test_persist_saved_dataset_and_no_silent_overwrite(backend: Backend, tmp_path: Path) -> None:
    """Feast's test_historical_features_persisting and test_persist_does_not_overwrite."""
    from feast.errors import SavedDatasetLocationAlreadyExists
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    store = backend.store()
    store.apply([_driver(), _stats_view(backend, ttl=dt.timedelta(0))])
    written = _rows([NOW + H, NOW + 2 * H], seed=6)
    store.write_to_offline_store("driver_stats", written, allow_registry_cache=False)
    entity_df = pd.DataFrame({"driver_id": [1001, 1001, 1001, 7],
                              "event_timestamp": [NOW, NOW + H, NOW + 3 * H, NOW]})
    job = store.get_historical_features(entity_df=entity_df, features=STATS_REFS)
    order = ["driver_id", "event_timestamp"]
    expected = job.to_df().sort_values(order).reset_index(drop=True)
    assert pd.isna(expected["avg_daily_trips"][0])  # driver 7: unknown
    assert expected["avg_daily_trips"].tolist()[1:] == [7, written["avg_daily_trips"][0],
                                                         written["avg_daily_trips"][1]]
    location = tmp_path / "saved" / "training.parquet"
    location.parent.mkdir()
    saved = store.create_saved_dataset(from_=job, name="training", storage=SavedDatasetFileStorage(str(location)))
    got = saved.to_df().sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    assert store.get_saved_dataset("training").full_feature_names is False

    again = store.get_historical_features(entity_df=entity_df.iloc[:1], features=STATS_REFS)
    with pytest.raises(SavedDatasetLocationAlreadyExists):
        store.create_saved_dataset(from_=again, name="training_2", storage=SavedDatasetFileStorage(str(location)))
    assert len(pd.read_parquet(location)) == 4, "a refused persist must leave the dataset as it was"
    store.create_saved_dataset(from_=again, name="training_3", storage=SavedDatasetFileStorage(str(location)),
                               allow_overwrite=True)
    assert len(pd.read_parquet(location)) == 1


# --- 5. materialization: online equals offline after materialize and materialize_incremental -----------------
def _online_and_offline(store, driver_id: int, at: pd.Timestamp) -> tuple[Any, Any]:
    from skewless.feast_ext.ttl import serving_clock

    with serving_clock(at.to_pydatetime()):  # skewless's online reads apply the TTL at this time (ADR 0009)
        online = store.get_online_features(["consistency:value"], [{"driver_id": driver_id}],
                                           full_feature_names=True).to_dict()["consistency__value"][0]
    offline = store.get_historical_features(
        entity_df=pd.DataFrame({"driver_id": [driver_id], "event_timestamp": [at]}),
        features=["consistency:value"], full_feature_names=True).to_df()["consistency__value"][0]
    return online, (None if pd.isna(offline) else float(offline))


@pytest.mark.parametrize("pull_latest", [True, False], ids=["pull_latest", "pull_all"])
def test_materialization_consistency(backend: Backend, pull_latest: bool) -> None:
    """Feast's test_universal_materialization_consistency (validate_offline_online_store_consistency) on a
    field-mapped source, with the wall clock replaced by a fixed NOW."""
    from feast import FeatureView, Field
    from feast.types import Float32

    backend.pull_latest = pull_latest
    rows = _basic_driver_rows([0.1, None, 0.3, 4.0, 5.0])
    src = backend.source(rows, "consistency", "ts", "created_ts", {"ts_1": "ts"})
    fv = FeatureView(name="consistency", entities=[_driver()], ttl=dt.timedelta(weeks=52), source=src,
                     schema=[Field(name="value", dtype=Float32)])
    store = backend.store()
    store.apply([_driver(), fv])
    start, split = (NOW - 5 * H).to_pydatetime(), (NOW - H - pd.Timedelta(seconds=1)).to_pydatetime()
    store.materialize(feature_views=["consistency"], start_date=start, end_date=split)
    at = pd.Timestamp(split)
    for driver_id, want in ((1, 0.3), (2, None), (3, 4.0)):
        online, offline = _online_and_offline(store, driver_id, at)
        assert offline == (None if want is None else pytest.approx(want)), (driver_id, offline)
        assert online == (None if want is None else pytest.approx(want, abs=1e-6)), (driver_id, online)
    store.materialize_incremental(feature_views=["consistency"], end_date=NOW.to_pydatetime())
    intervals = store.registry.get_feature_view("consistency", store.project).materialization_intervals
    assert [(a, b) for a, b in intervals] == [(start, split), (split, NOW.to_pydatetime())]
    online, offline = _online_and_offline(store, 3, NOW)
    assert online == pytest.approx(5.0) and offline == pytest.approx(5.0)


# --- 6. filter_by_created_timestamp: values as known at each entity row's time (Feast issue 6615) ----------
KNOWN_AT_ROWS = [  # (driver_id, event time, created, value) of view known_at (ttl 3 h)
    (1, NOW - 5 * H, NOW - 5 * H, 1.0),
    (1, NOW - 5 * H, NOW - 2 * H, 2.0),  # a late restatement of the -5 h event, known from -2 h
    (1, NOW - 4 * H, NOW - 4 * H, 3.0),
    (1, NOW - 4 * H, NOW - 3 * H, 3.5),  # same event time, created later: wins once known
    (1, NOW - 3 * H, NOW, 4.0),  # late-arriving: known only from NOW
    (1, NOW - H, None, 5.0),  # null created: never "known" with the flag
    (2, NOW - 10 * H, NOW - 10 * H, 20.0),
    (2, NOW - 8 * H, NOW - 6 * H, 21.0),
    (3, NOW - 2 * H, None, 30.0),  # only null created rows
    (4, NOW - 3 * H, NOW - H, 40.0),
]
KNOWN_AT_CASES = [  # (driver_id, T, value with the flag, value without)
    (1, NOW - 5 * H - pd.Timedelta(microseconds=1), None, None),  # before any row
    (1, NOW - 5 * H, 1.0, 2.0),  # created == T counts (<=); the restatement is not known yet
    (1, NOW - 4.5 * H, 1.0, 2.0),
    (1, NOW - 4 * H, 3.0, 3.5),  # tie on event time: the latest created among the known ones
    (1, NOW - 3 * H - pd.Timedelta(microseconds=1), 3.0, 3.5),  # the 3.5 row is created at -3 h
    (1, NOW - 3 * H, 3.5, 4.0),  # the -3 h row exists but is not known before NOW
    (1, NOW - H, 3.5, 5.0),  # -4 h row exactly ttl old: valid; the -1 h row has a null created
    (1, NOW, 4.0, 5.0),
    (2, NOW - 7 * H, 20.0, 21.0),  # the -10 h row is exactly ttl old; the -8 h one is not known yet
    (2, NOW - 7 * H + pd.Timedelta(microseconds=1), None, 21.0),  # ... and expires a microsecond later
    (2, NOW - 5 * H, 21.0, 21.0),
    (3, NOW, None, 30.0),
    (4, NOW - 2 * H, None, 40.0),  # event time passed, created time not
    (4, NOW - H, 40.0, 40.0),
    (9, NOW, None, None),  # unknown driver
    (1, NOW - 4 * H, 3.0, 3.5),  # duplicate entity row
]


def _plain_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """KNOWN_AT_ROWS without the created column and without event-time ties (no order would break them)."""
    rows = rows.drop_duplicates(["driver_id", "event_timestamp"], keep="last")
    return rows.drop(columns=["created"]).rename(columns={"value": "level"}).reset_index(drop=True)


def _known_at_views(backend: Backend):
    """known_at (created column, ttl 3 h), plain (no created column: the flag changes nothing) and restated (a
    created column, no ttl, the same feature name as known_at: needs full_feature_names)."""
    from feast import FeatureView, Field
    from feast.types import Float64

    rows = pd.DataFrame({"driver_id": [r[0] for r in KNOWN_AT_ROWS],
                         "event_timestamp": pd.to_datetime([r[1] for r in KNOWN_AT_ROWS], utc=True),
                         "created": pd.to_datetime([r[2] for r in KNOWN_AT_ROWS], utc=True),
                         "value": [r[3] for r in KNOWN_AT_ROWS]})
    known = FeatureView(name="known_at", entities=[_driver()], ttl=dt.timedelta(hours=3),
                        schema=[Field(name="value", dtype=Float64)],
                        source=backend.source(rows, "known_at", "event_timestamp", "created"))
    plain = FeatureView(name="plain", entities=[_driver()], ttl=dt.timedelta(0),
                        schema=[Field(name="level", dtype=Float64)],
                        source=backend.source(_plain_rows(rows), "plain", "event_timestamp"))
    # A field-mapped created column (table column created_ts), restated rows only.
    restated_rows = pd.DataFrame({
        "driver_id": [1, 1, 2], "ts_1": pd.to_datetime([NOW - 6 * H] * 2 + [NOW - 9 * H], utc=True),
        "created_ts": pd.to_datetime([NOW - 6 * H, NOW - 2.5 * H, NOW - 9 * H], utc=True),
        "value": [60.0, 61.0, 62.0]})
    restated = FeatureView(name="restated", entities=[_driver()], ttl=dt.timedelta(0),
                           schema=[Field(name="value", dtype=Float64)],
                           source=backend.source(restated_rows, "restated", "ts", "created",
                                                 {"ts_1": "ts", "created_ts": "created"}))
    return [known, plain, restated]


def _known_at_entities() -> pd.DataFrame:
    return pd.DataFrame({"driver_id": [c[0] for c in KNOWN_AT_CASES],
                         "event_timestamp": pd.to_datetime([c[1] for c in KNOWN_AT_CASES], utc=True),
                         "row_id": np.arange(len(KNOWN_AT_CASES))})


def _values(series: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in series]


@pytest.fixture
def known_at_stores(tmp_path: Path) -> dict[str, Any]:
    """Both backends (Feast's DuckDB store, skewless's Iceberg store) holding the same three views."""
    stores = {}
    for name in BACKENDS:
        backend = Backend(name, tmp_path / name)
        backend.root.mkdir()
        store = backend.store()
        store.apply([_driver(), *_known_at_views(backend)])
        stores[name] = store
    return stores


def _retrieve_both(stores: dict[str, Any], refs: list[str], full_feature_names: bool,
                   flag: bool) -> pd.DataFrame:
    """The skewless result, after asserting it equals Feast's DuckDB store's (rows in entity order, same dtypes)."""
    entity_df = _known_at_entities()
    out = {}
    for name, store in stores.items():
        job = store.get_historical_features(entity_df=entity_df, features=refs, full_feature_names=full_feature_names,
                                            filter_by_created_timestamp=flag)
        out[name] = job.to_df().sort_values("row_id", kind="stable").reset_index(drop=True)
    assert list(out["skewless"].columns) == list(out["duckdb"].columns)
    pd.testing.assert_frame_equal(out["skewless"], out["duckdb"], check_exact=True)
    return out["skewless"]


@pytest.mark.parametrize("flag", [True, False], ids=["filter_by_created", "unfiltered"])
def test_filter_by_created_timestamp_equals_stock(known_at_stores: dict[str, Any], flag: bool) -> None:
    """Feast's filter_by_created_timestamp=True: a row is a candidate only once created <= T (null created: never);
    among candidates the latest event time wins, ties by the latest created; the ttl as usual. Views without a
    created column are unaffected. Both stores must agree, with the flag and without (the differences shown in
    KNOWN_AT_CASES), on one call reading three views with full feature names."""
    refs = ["known_at:value", "plain:level", "restated:value"]
    got = _retrieve_both(known_at_stores, refs, True, flag)
    want = [c[2] if flag else c[3] for c in KNOWN_AT_CASES]
    assert _values(got["known_at__value"]) == want
    # plain has no created column: the latest row at or before T (no ttl), flag or not.
    assert _values(got["plain__level"]) == [None, 2.0, 2.0, 3.5, 3.5, 4.0, 5.0, 5.0, 21.0, 21.0, 21.0, 30.0,
                                            40.0, 40.0, None, 3.5]
    restated = {True: [60.0, 60.0, 60.0, 60.0, 60.0, 60.0, 61.0, 61.0, 62.0, 62.0, 62.0, None, None, None, None,
                       60.0],
                False: [61.0, 61.0, 61.0, 61.0, 61.0, 61.0, 61.0, 61.0, 62.0, 62.0, 62.0, None, None, None, None,
                        61.0]}
    assert _values(got["restated__value"]) == restated[flag]


def test_filter_by_created_timestamp_single_view_short_names(known_at_stores: dict[str, Any]) -> None:
    """One created-column view alone, short feature names: the flag changes exactly the rows KNOWN_AT_CASES says."""
    on = _retrieve_both(known_at_stores, ["known_at:value"], False, True)
    off = _retrieve_both(known_at_stores, ["known_at:value"], False, False)
    assert _values(on["value"]) == [c[2] for c in KNOWN_AT_CASES]
    assert _values(off["value"]) == [c[3] for c in KNOWN_AT_CASES]
    assert sum(a != b for a, b in zip(_values(on["value"]), _values(off["value"]))) == 12


def test_filter_by_created_timestamp_uses_a_join_asof_cannot_express(known_at_stores: dict[str, Any]) -> None:
    """skewless answers the flag itself (no hand-off to Feast's store): views with a created column get the filtered
    equi-join, a view without one keeps its ASOF JOIN."""
    from skewless.feast_ext.offline import IcebergRetrievalJob

    job = known_at_stores["skewless"].get_historical_features(
        entity_df=_known_at_entities(), features=["known_at:value", "plain:level"], full_feature_names=True,
        filter_by_created_timestamp=True)
    assert isinstance(job, IcebergRetrievalJob)
    sql = job.to_sql()
    assert sql.count("ASOF LEFT JOIN") == 1 and "QUALIFY row_number() OVER (PARTITION BY e." in sql


def test_filter_by_created_timestamp_reaches_views_read_with_live_views(known_at_stores: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    """A call mixing a live view (ADR 0016: windows as known at T, computed first) with regular views hands the flag
    on to the regular views' retrieval: they equal Feast's DuckDB store with the flag, and differ without it."""
    from feast import Entity, FeatureView, PushSource
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
    from feast.value_type import ValueType

    from skewless.feast_ext.schema import fields_of
    from skewless.features.definitions import REPO_ACTIVITY_LIVE
    from skewless.lake.events import EVENTS_ARROW_SCHEMA

    from pyiceberg.catalog.sql import SqlCatalog

    root = tmp_path / "skewless"  # the fixture's skewless backend: its SQLite catalog, namespace conf
    catalog = SqlCatalog("conformance", uri=f"sqlite:///{root / 'catalog.db'}",
                         warehouse=f"file://{root / 'warehouse'}")
    event = {"repo": "r/1", "sha": "s1", "kind": "add", "committed_at": NOW - 2 * H, "author_id": "a",
             "arrived_at": NOW - H, "known_at": NOW - H, "seq": 1, "event_id": "e1", "source": "test"}
    catalog.create_table("conf.commit_events", schema=EVENTS_ARROW_SCHEMA).append(
        pa.Table.from_pylist([event], schema=EVENTS_ARROW_SCHEMA))
    events = IcebergSource(name="commit_events", catalog_type="sql", catalog_name="conformance",
                           warehouse=f"file://{root / 'warehouse'}", namespace="conf", table="commit_events",
                           catalog_properties={"uri": f"sqlite:///{root / 'catalog.db'}"},
                           timestamp_field="committed_at")
    repo = Entity(name="repo", join_keys=["repo"], value_type=ValueType.STRING)
    live = FeatureView(name=REPO_ACTIVITY_LIVE.name, entities=[repo], ttl=dt.timedelta(0), online=False,
                       schema=fields_of(REPO_ACTIVITY_LIVE),
                       source=PushSource(name="commit_events_push", batch_source=events))
    store = known_at_stores["skewless"]
    store.apply([repo, live])
    entity_df = _known_at_entities().assign(repo="r/1")
    refs = ["known_at:value", "plain:level", f"{REPO_ACTIVITY_LIVE.name}:commits_last_24h"]
    got = {flag: store.get_historical_features(entity_df=entity_df, features=refs, full_feature_names=True,
                                               filter_by_created_timestamp=flag).to_df()
           for flag in (True, False)}
    for flag, df in got.items():
        assert _values(df["known_at__value"]) == [c[2] if flag else c[3] for c in KNOWN_AT_CASES]
        reference = known_at_stores["duckdb"].get_historical_features(
            entity_df=entity_df, features=refs[:2], full_feature_names=True,
            filter_by_created_timestamp=flag).to_df().sort_values("row_id", kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(df.drop(columns=[f"{REPO_ACTIVITY_LIVE.name}__commits_last_24h"]), reference,
                                      check_exact=True)
        # the live window: the commit at -2 h counts from -1 h on (when it became known), flag or not
        known = [t >= NOW - H for _, t, *_ in KNOWN_AT_CASES]
        assert df[f"{REPO_ACTIVITY_LIVE.name}__commits_last_24h"].tolist() == [int(k) for k in known]


# --- where skewless deliberately differs -------------------------------------------------------------------
def test_online_read_past_the_ttl_follows_the_offline_rule(backend: Backend) -> None:
    """Deliberate difference, ADR 0009 (adrs/0009-no-ttl-on-feature-views.md): skewless's online stores apply the
    offline TTL rule at serving time, so an online read agrees with get_historical_features at the same instant.
    Feast's stock online store serves the held value however old (feast-dev/feast issue 6821): train/serve skew.
    Offline, both stores null the expired value alike."""
    from feast import FeatureView, Field
    from feast.types import Float32

    from skewless.feast_ext.ttl import serving_clock

    src = backend.source(_basic_driver_rows([0.1, None, 0.3, 4.0, 5.0]), "ttl_probe", "ts", "created_ts",
                         {"ts_1": "ts"})
    fv = FeatureView(name="ttl_probe", entities=[_driver()], ttl=dt.timedelta(hours=2), source=src,
                     schema=[Field(name="value", dtype=Float32)])
    store = backend.store()
    store.apply([_driver(), fv])
    store.materialize(start_date=(NOW - 5 * H).to_pydatetime(), end_date=NOW.to_pydatetime())
    fresh, expired = NOW - H, NOW  # driver 1's newest row is at -3 h: 2 h old at -1 h, 3 h old at NOW
    for at in (fresh, expired):
        offline = store.get_historical_features(
            entity_df=pd.DataFrame({"driver_id": [1], "event_timestamp": [at]}),
            features=["ttl_probe:value"]).to_df()["value"][0]
        with serving_clock(at.to_pydatetime()):
            online = store.get_online_features(["ttl_probe:value"], [{"driver_id": 1}]).to_dict()["value"][0]
        if at == fresh:
            assert offline == pytest.approx(0.3) and online == pytest.approx(0.3)
            continue
        assert pd.isna(offline), "offline, a row older than T - ttl is null in both stores"
        if backend.iceberg:
            assert online is None, "skewless: online agrees with offline (ADR 0009)"
        else:
            assert online == pytest.approx(0.3), "Feast's stock online store serves the expired value"


def test_write_to_a_field_mapped_source(backend: Backend) -> None:
    """Deliberate difference: rows for a source with a field_mapping are written under the table's own column
    names. Feast's store renames them forward (ts_1 -> ts) before its writer compares them with the table's
    names, and so refuses every write to such a source; skewless maps them back and appends."""
    from feast import FeatureView, Field
    from feast.types import Float64

    src = backend.source(_basic_driver_rows([0.1, None, 0.3, 4.0, 5.0]), "mapped_write", "ts", "created_ts",
                         {"ts_1": "ts"})
    fv = FeatureView(name="mapped_write", entities=[_driver()], ttl=dt.timedelta(0), source=src,
                     schema=[Field(name="value", dtype=Float64)])
    store = backend.store()
    store.apply([_driver(), fv])
    new = pd.DataFrame({"driver_id": [2], "value": [9.5], "ts_1": [NOW + H], "created_ts": [NOW + H]})
    if not backend.iceberg:
        with pytest.raises(ValueError, match="incorrect columns"):
            store.write_to_offline_store("mapped_write", new, allow_registry_cache=False)
        return
    store.write_to_offline_store("mapped_write", new, allow_registry_cache=False)
    got = store.get_historical_features(entity_df=pd.DataFrame({"driver_id": [2], "event_timestamp": [NOW + H]}),
                                        features=["mapped_write:value"]).to_df()
    assert got["value"].tolist() == [9.5]


def test_rows_are_conformed_to_the_iceberg_schema_or_refused_by_column() -> None:
    """The cast behind skewless's offline writes, on its own: names mapped back, order and types of the table,
    dictionary columns decoded; nulls in a required column and values that do not fit are named, not written."""
    from skewless.feast_ext.offline import conform_to_iceberg

    schema = pa.schema([pa.field("id", pa.int32(), nullable=False), pa.field("kind", pa.string()),
                        pa.field("ts_1", pa.timestamp("us", tz="UTC"))])
    rows = pa.table({"ts": pa.array([0, 1_000], pa.timestamp("ns")), "id": pa.array([1, 2], pa.int64()),
                     "kind": pa.array(["a", "b"]).dictionary_encode()})
    got = conform_to_iceberg(rows, schema, {"ts_1": "ts"}, "w")
    assert got.schema == schema
    assert got.column("ts_1").to_pylist() == [dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
                                              dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone.utc)]
    assert got.column("kind").to_pylist() == ["a", "b"]
    with pytest.raises(ValueError, match="'id' is required .* 1 null"):
        conform_to_iceberg(rows.set_column(1, "id", pa.array([1, None], pa.int64())), schema, {"ts_1": "ts"}, "w")
    with pytest.raises(ValueError, match="'ts_1' holds timestamp"):
        conform_to_iceberg(rows.set_column(0, "ts", pa.array([1, 2], pa.timestamp("ns"))), schema,
                           {"ts_1": "ts"}, "w")
