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

Where skewless deliberately differs it is asserted and says why: online reads of a view with a finite TTL
(ADR 0009, adrs/0009-no-ttl-on-feature-views.md: skewless's online stores apply the offline TTL rule, Feast's stock
ones serve whatever they hold).
"""

from __future__ import annotations

import datetime as dt
import json
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
        if self.iceberg:
            from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

            cat = self.catalog()
            cat.create_table(f"conf.{name}", schema=_iceberg_arrow_schema(table.schema)).append(
                table.cast(_iceberg_arrow_schema(table.schema)))
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


def _iceberg_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """Iceberg stores microseconds: nanosecond timestamp columns become microsecond ones (values are whole us)."""
    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_timestamp(t) and t.unit != "us":
            t = pa.timestamp("us", tz=t.tz)
        fields.append(pa.field(f.name, t, nullable=True))
    return pa.schema(fields)


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
