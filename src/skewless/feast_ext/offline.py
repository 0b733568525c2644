"""A Feast offline store for ``IcebergSource`` that pushes work into the scan and joins with DuckDB's ASOF JOIN.

Plug it in from ``feature_store.yaml``::

    offline_store:
      type: skewless.feast_ext.offline.IcebergOfflineStore

Users keep calling the Feast SDK (``get_historical_features``, ``materialize``...). For feature views whose batch
source is an ``IcebergSource`` this store

* plans one pyiceberg scan per view with the snapshot pinned (see :mod:`skewless.feast_ext.iceberg_scan`), only the
  columns the retrieval needs, and a row filter on the event time — ``[min(entity ts) - ttl, max(entity ts)]`` —
  plus the entity keys when the entity dataframe holds few of them, so whole files are pruned;
* lets DuckDB read the planned files and answer the point-in-time join with one ``ASOF LEFT JOIN`` per view;
* returns rows in the entity dataframe's order (Feast's DuckDB store returns them in no particular order).

Semantics are Feast's (``feast/infra/offline_stores/ibis.py``): the value of a view for an entity row is the row
with the latest event timestamp ``<=`` the entity timestamp, ties broken by the latest created timestamp, and null
when that row is older than ``entity ts - ttl`` (a ttl of 0 or None means no limit). Timezone-naive entity
timestamps are UTC, as in Feast, with a :class:`~skewless.feast_ext.retrieval.RetrievalWarning` naming the column;
entity timestamps after the last built day of a table that ``skewless features build`` writes get that day's values,
with a warning naming the day (both refused with ``strict_retrieval``: :mod:`skewless.feast_ext.retrieval`).
``tests/test_offline_store.py`` checks equality with Feast's DuckDB store.

Source columns are named as Feast names them: ``timestamp_field`` and ``created_timestamp_column`` may be targets
of the source's ``field_mapping`` (table column ``ts_1`` read as ``ts``). Offline writes to an ``IcebergSource``
(``write_to_offline_store``, ``push(..., to=PushMode.OFFLINE)``) are cast to the Iceberg table's schema by
:func:`conform_to_iceberg`. ``tests/test_offline_conformance.py`` checks Feast's offline-store contract against
Feast's DuckDB store (ADR 0013).

``get_historical_features(..., filter_by_created_timestamp=True)`` (Feast's opt-in "as known at T", feast-dev/feast
issue 6615) is answered here too, as Feast's store answers it: for a view whose source has a
``created_timestamp_column``, only rows with ``created <= entity ts`` are candidates (a null created timestamp is
never ``<=``, so such rows drop out), and among them the latest event timestamp wins, ties by the latest created
one; the TTL applies as above. The ASOF JOIN takes one inequality only, so those views are joined with an equi-join
on the keys filtered by both inequalities and one ``QUALIFY row_number()`` per entity row instead (its cost grows
with the rows per key, not their log). Views without a created column keep the ASOF JOIN: the flag changes nothing
for them, as in Feast.

Anything else — other source types, substrait on-demand views — goes to Feast's own
:class:`~feast.infra.offline_stores.duckdb.DuckDBOfflineStore`, which this class extends, as do writes to other
sources, logging and monitoring.
"""

from __future__ import annotations

import contextvars
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Literal, Optional, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.errors import FeastEntityDFMissingColumnsError
from feast.feature_view import FeatureView
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage

from skewless.core.days import epoch_us, from_epoch_us
from skewless.feast_ext.iceberg_scan import IcebergScan, quote, timestamp_bounds_filter
from skewless.feast_ext.live import historical_sql, live_table

if TYPE_CHECKING:
    import duckdb
    from feast.data_source import DataSource
    from pyiceberg.expressions import BooleanExpression

log = logging.getLogger(__name__)

#: Set while the batch views of a retrieval that also asked for live views are joined (naive timestamps reported).
_NAIVE_REPORTED: contextvars.ContextVar[bool] = contextvars.ContextVar("skewless_naive_reported", default=False)

ROW = "__skewless_row"
TS_FLOOR = "__skewless_ts"
TS_CEIL = "__skewless_ts_ceil"
_US = 1_000_000
_UTC_US = pa.timestamp("us", tz="UTC")


class IcebergOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Configuration of :class:`IcebergOfflineStore` (all optional)."""

    type: Literal["skewless.feast_ext.offline.IcebergOfflineStore"] = (  # type: ignore[assignment]
        "skewless.feast_ext.offline.IcebergOfflineStore"
    )

    native_parquet: bool = True
    """Let DuckDB read the planned Parquet files directly when that is exact (else pyiceberg's reader)."""

    entity_filter_max_keys: int = 1_000
    """With at most this many distinct entity keys, filter the scan on them (``key IN (...)`` prunes files and
    shrinks the join); with more, the ASOF JOIN alone matches keys (an IN list that long costs more than it saves)."""

    duckdb_threads: Optional[int] = None
    """DuckDB worker threads (default: DuckDB's, one per core)."""

    duckdb_memory_limit: Optional[str] = None
    """DuckDB memory limit, e.g. ``"2GB"``; beyond it DuckDB spills to ``duckdb_temp_directory``."""

    duckdb_temp_directory: Optional[str] = None
    """Where DuckDB spills (default: ``<system temp>/skewless-duckdb``)."""

    strict_retrieval: bool = False
    """Refuse (``RetrievalError``) instead of warning for naive entity timestamps and for entity timestamps after a
    feature table's last built day (:mod:`skewless.feast_ext.retrieval`)."""


def connect(cfg: Any = None) -> "duckdb.DuckDBPyConnection":
    """A fresh in-memory DuckDB connection set up for point-in-time work (UTC session time zone)."""
    from skewless.core.days import utc_duckdb

    con = utc_duckdb()
    threads = getattr(cfg, "duckdb_threads", None)
    memory = getattr(cfg, "duckdb_memory_limit", None)
    temp = getattr(cfg, "duckdb_temp_directory", None) or os.path.join(tempfile.gettempdir(), "skewless-duckdb")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory:
        con.execute(f"SET memory_limit = '{memory}'")
    con.execute(f"SET temp_directory = '{temp}'")
    return con


def _is_iceberg(source: Optional["DataSource"]) -> bool:
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

    return isinstance(source, IcebergSource)


def _store_config(config: RepoConfig) -> Any:
    return config.offline_store


def _ts_literal(value: datetime) -> str:
    return f"TIMESTAMPTZ '{value.astimezone(timezone.utc).isoformat()}'"


# --- the plan of one feature view ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ViewPlan:
    name: str
    source: Any
    keys: list[tuple[str, str]]  # (source column, entity dataframe column)
    timestamp: str
    created: Optional[str]
    features: list[tuple[str, str]]  # (source column, output column)
    ttl: Optional[timedelta]
    known_at: bool = False  # filter_by_created_timestamp on a view with a created column: created <= entity ts

    @classmethod
    def of(cls, fv: FeatureView, feature_refs: list[str], full_feature_names: bool,
           filter_by_created: bool = False) -> "_ViewPlan":
        source = fv.batch_source
        reverse = {v: k for k, v in (source.field_mapping or {}).items()}
        join_key_map = fv.projection.join_key_map or {e.name: e.name for e in fv.entity_columns}
        prefix = fv.projection.name_to_use()
        names = [ref.split(":")[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
        base = fv.projection.name_alias or fv.name
        return cls(
            name=fv.name,
            source=source,
            keys=[(reverse.get(k, k), v) for k, v in join_key_map.items()],
            # timestamp_field and created_timestamp_column name Feast-side columns: when they are field_mapping
            # targets (source column ts_1 mapped to ts), the table's column is the mapping's key.
            timestamp=reverse.get(source.timestamp_field, source.timestamp_field),
            created=reverse.get(source.created_timestamp_column, source.created_timestamp_column) or None,
            features=[(reverse.get(n, n), f"{base}__{n}" if full_feature_names else n) for n in names],
            ttl=fv.ttl if fv.ttl else None,
            # As Feast (ibis.py point_in_time_join): the flag only bites where the source names a created column.
            known_at=bool(filter_by_created and source.created_timestamp_column),
        )


# --- the entity dataframe -----------------------------------------------------------------------------------------
@dataclass
class _Entities:
    table: pa.Table  # the caller's columns, to be returned (timestamps at microseconds where that is lossless)
    timestamp_column: str
    floor_us: np.ndarray  # entity timestamps, floored to microseconds (int64 since the epoch, UTC)
    ceil_us: np.ndarray  # ... and rounded up (differs only for nanosecond timestamps)
    valid: np.ndarray  # timestamp not null
    naive: bool = False  # the caller's timestamps carry no time zone (read as UTC)

    @property
    def bounds(self) -> tuple[Optional[datetime], Optional[datetime]]:
        """(min, max) entity timestamp, for the metadata of the job."""
        if not self.valid.any():
            return None, None
        lo, hi = int(self.ceil_us[self.valid].min()), int(self.floor_us[self.valid].max())
        return from_epoch_us(lo), from_epoch_us(hi)

    def duckdb_table(self, key_columns: list[str]) -> pa.Table:
        mask = ~self.valid
        cols = {ROW: pa.array(np.arange(self.table.num_rows, dtype=np.int64))}
        for c in dict.fromkeys(key_columns):
            cols[c] = self.table.column(c)
        cols[TS_FLOOR] = pa.array(self.floor_us, mask=mask).cast(pa.int64()).cast(_UTC_US)
        cols[TS_CEIL] = pa.array(self.ceil_us, mask=mask).cast(pa.int64()).cast(_UTC_US)
        return pa.table(cols)


def _timestamps_us(column: pa.ChunkedArray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floor and ceiling in microseconds (UTC; naive means UTC) and the validity mask of a timestamp column."""
    if not pa.types.is_timestamp(column.type):
        if pa.types.is_date(column.type):
            column = column.cast(pa.timestamp("us"))
        else:
            raise ValueError(f"entity dataframe column {name!r} is the event timestamp but holds {column.type}, "
                             "not timestamps")
    unit = column.type.unit
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    raw = column.cast(pa.int64()).fill_null(0).to_numpy()
    if unit == "ns":
        return raw // 1000, -((-raw) // 1000), valid
    scale = {"s": _US, "ms": 1000, "us": 1}[unit]
    return raw * scale, raw * scale, valid


def _as_feast_returns(table: pa.Table) -> pa.Table:
    """Entity columns as Feast's DuckDB store returns them: nanosecond timestamps at microseconds (wherever no
    value has nanoseconds; Feast fails on those) and dictionary (categorical) columns decoded."""
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, col.cast(f.type.value_type))
        elif pa.types.is_timestamp(f.type) and f.type.unit == "ns":
            raw = col.cast(pa.int64()).fill_null(0).to_numpy()
            if not (raw % 1000).any():
                table = table.set_column(i, f.name, col.cast(pa.timestamp("us", tz=f.type.tz)))
    return table


def _timestamp_column_of(schema: pa.Schema) -> str:
    """Feast's event timestamp inference (``event_timestamp``, else the only timestamp column) on an Arrow schema."""
    dtypes = {f.name: (np.dtype("datetime64[ns]") if pa.types.is_timestamp(f.type) else np.dtype(object))
              for f in schema}
    return infer_event_timestamp_from_entity_df(dtypes)


def _entities(entity_df: Union[pd.DataFrame, str], cfg: Any, coerced: bool = True) -> _Entities:
    """The entity rows; ``coerced``: Feast made the DataFrame's datetime columns UTC already (its
    ``coerce_tz_aware``), so naive ones can no longer be told apart."""
    if isinstance(entity_df, str):
        con = connect(cfg)
        try:
            table = con.sql(entity_df).to_arrow_table()
        except Exception as e:
            raise ValueError(f"the entity_df SQL query failed in DuckDB: {e}") from e
        finally:
            con.close()
        ts_col = _timestamp_column_of(table.schema)
        naive = _naive_arrow(table.column(ts_col))
    elif isinstance(entity_df, pd.DataFrame):
        ts_col = infer_event_timestamp_from_entity_df(dict(zip(entity_df.columns, entity_df.dtypes)))
        if not coerced:
            # The yaml turned Feast's coercion off so that naive timestamps reach this store: report them, then
            # coerce exactly as Feast would have (every datetime column to UTC), so the answer is unchanged.
            from feast.utils import make_df_tzaware

            dtype = entity_df[ts_col].dtype
            naive = pd.api.types.is_datetime64_any_dtype(dtype) and getattr(dtype, "tz", None) is None
            entity_df = make_df_tzaware(entity_df)
        ts = entity_df[ts_col].infer_objects()
        if pd.api.types.is_string_dtype(ts) or pd.api.types.is_object_dtype(ts):
            # As Feast's DuckDB store does (ibis.py `_to_utc`): strings and datetime objects are parsed as UTC.
            naive = _naive_objects(ts)
            entity_df = entity_df.assign(**{ts_col: pd.to_datetime(ts, utc=True)})
        elif coerced:
            naive = None
        # Without pandas metadata: results come back with plain dtypes (Int64 -> float64...) as Feast's store
        # returns them after its trip through DuckDB.
        table = pa.Table.from_pandas(entity_df, preserve_index=False).replace_schema_metadata(None)
    else:
        raise TypeError(f"entity_df must be a pandas DataFrame or a SQL string, not {type(entity_df).__name__}")
    if naive is None:
        naive = _naive_arrow(table.column(ts_col))
    floor, ceil, valid = _timestamps_us(table.column(ts_col), ts_col)
    table = _as_feast_returns(table)
    return _Entities(table, ts_col, floor, ceil, valid, bool(naive and valid.any()))


def _naive_arrow(column: pa.ChunkedArray) -> bool:
    """A timestamp column without a time zone, or a date column (a day in no zone)."""
    return pa.types.is_date(column.type) or (pa.types.is_timestamp(column.type) and column.type.tz is None)


def _naive_objects(ts: pd.Series) -> bool:
    """Strings or datetime objects of which at least one names no time zone."""
    return any(pd.Timestamp(v).tzinfo is None for v in ts.dropna())


def _check_retrieval(entities: _Entities, cfg: Any, plans: list[_ViewPlan] = (), scans: list[Any] = (),
                     naive: bool = True) -> None:
    """Say what the retrieval assumes (:mod:`skewless.feast_ext.retrieval`): naive timestamps read as UTC, and
    entity timestamps after a built table's last day answered with that day's values. Warns, or refuses when
    strict."""
    from skewless.feast_ext import retrieval

    strict = getattr(cfg, "strict_retrieval", False)
    if naive and entities.naive:
        retrieval.report(retrieval.naive_message(entities.timestamp_column), strict)
    if not entities.valid.any():
        return
    from skewless.features import BUILT_THROUGH, day_start

    floors = entities.floor_us[entities.valid]
    for plan, scan in zip(plans, scans):
        built = scan.table.properties.get(BUILT_THROUGH)
        if built is None:
            continue  # not a table `skewless features build` writes: no last built day to hold it to
        beyond = floors >= epoch_us(day_start(date.fromisoformat(built)) + timedelta(days=1))
        if beyond.any():
            latest = from_epoch_us(int(floors.max())).isoformat()
            retrieval.report(retrieval.beyond_built_message(plan.name, scan.identifier, built, int(beyond.sum()),
                                                            len(floors), latest), strict)


# --- SQL ----------------------------------------------------------------------------------------------------------
def _sql_literal(value: Any) -> Optional[str]:
    """A DuckDB literal for a join-key value (None for types not written inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return None


def _view_rows_sql(i: int, plan: _ViewPlan, lower: Optional[datetime],
                   upper: Optional[datetime], key_values: Optional[dict[str, list[Any]]]) -> str:
    """The candidate rows of view ``i``: keys, event time and features, restricted to the join's time range."""
    ts = quote(plan.timestamp)
    cols = [f"{quote(src)} AS {quote(f'__k{i}_{j}')}" for j, (src, _) in enumerate(plan.keys)]
    cols.append(f"CAST({ts} AS TIMESTAMPTZ) AS {quote(f'__t{i}')}")
    if plan.known_at:
        cols.append(f"CAST({quote(plan.created)} AS TIMESTAMPTZ) AS {quote(f'__c{i}')}")
    cols += [f"{quote(src)} AS {quote(f'__f{i}_{j}')}" for j, (src, _) in enumerate(plan.features)]
    where = [f"{ts} IS NOT NULL"]
    if upper is not None:
        where.append(f"{ts} <= {_ts_literal(upper)}")
    if plan.known_at:
        # A row created after every entity timestamp can match none; a null created one never matches (Feast's
        # predicate `created <= ts` is null there).
        where.append(f"{quote(plan.created)} IS NOT NULL")
        if upper is not None:
            where.append(f"{quote(plan.created)} <= {_ts_literal(upper)}")
    if lower is not None:
        where.append(f"{ts} >= {_ts_literal(lower)}")
    for src, values in (key_values or {}).items():
        # Constants, not a sub-query: DuckDB pushes them into the Parquet scan (and does not build a hash table
        # over the feature rows to probe a handful of entity keys).
        literals = [_sql_literal(v) for v in values]
        if literals and None not in literals:
            where.append(f"{quote(src)} IN ({', '.join(literals)})")
    sql = f"SELECT {', '.join(cols)} FROM {quote(f'__src{i}')} WHERE {' AND '.join(where)}"
    if plan.created and not plan.known_at:
        # Several rows at the same event time: the latest created one wins (Feast's dedup order).
        part = ", ".join([quote(src) for src, _ in plan.keys] + [ts])
        sql += f" QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {quote(plan.created)} DESC NULLS LAST) = 1"
    return sql


def _known_at_join(i: int, plan: _ViewPlan, rows: str, alias: str) -> str:
    """The join of a ``known_at`` view: per entity row, the candidates with ``t <= ts``, ``created <= ts`` and (with a
    ttl) ``t >= ts - ttl``, the latest ``t`` then the latest ``created`` kept (Feast's ``deduplicate`` order)."""
    t, c, r = quote(f"__t{i}"), quote(f"__c{i}"), quote(f"__r{i}")
    on = [f"e.{quote(ent)} = f.{quote(f'__k{i}_{j}')}" for j, (_, ent) in enumerate(plan.keys)]
    on += [f"f.{t} <= e.{quote(TS_FLOOR)}", f"f.{c} <= e.{quote(TS_FLOOR)}"]
    if plan.ttl:
        ttl_us = plan.ttl // timedelta(microseconds=1)
        on.append(f"f.{t} >= e.{quote(TS_CEIL)} - INTERVAL ({ttl_us}) MICROSECOND")
    features = ", ".join(f"f.{quote(f'__f{i}_{j}')}" for j in range(len(plan.features)))
    inner = (f"SELECT e.{quote(ROW)} AS {r}{', ' + features if features else ''} FROM entity e JOIN ({rows}) f "
             f"ON {' AND '.join(on)} "
             f"QUALIFY row_number() OVER (PARTITION BY e.{quote(ROW)} ORDER BY f.{t} DESC, f.{c} DESC) = 1")
    return f"LEFT JOIN ({inner}) {alias} ON e.{quote(ROW)} = {alias}.{r}"


def _historical_sql(plans: list[_ViewPlan], view_rows: list[str]) -> tuple[str, list[str]]:
    """The point-in-time join: one ASOF LEFT JOIN per view (a filtered equi-join for ``known_at`` views), rows in
    entity order; and the output column names."""
    select, joins, outputs = [f"e.{quote(ROW)}"], [], []
    for i, (plan, rows) in enumerate(zip(plans, view_rows)):
        alias = f"f{i}"
        if plan.known_at:
            joins.append(_known_at_join(i, plan, rows, alias))
            for j, (_, out) in enumerate(plan.features):
                select.append(f"{alias}.{quote(f'__f{i}_{j}')} AS {quote(out)}")
                outputs.append(out)
            continue
        on = [f"e.{quote(ent)} = {alias}.{quote(f'__k{i}_{j}')}" for j, (_, ent) in enumerate(plan.keys)]
        on.append(f"e.{quote(TS_FLOOR)} >= {alias}.{quote(f'__t{i}')}")
        joins.append(f"ASOF LEFT JOIN ({rows}) {alias} ON {' AND '.join(on)}")
        for j, (_, out) in enumerate(plan.features):
            value = f"{alias}.{quote(f'__f{i}_{j}')}"
            if plan.ttl:
                ttl_us = plan.ttl // timedelta(microseconds=1)
                value = (f"CASE WHEN {alias}.{quote(f'__t{i}')} >= e.{quote(TS_CEIL)} - INTERVAL ({ttl_us}) "
                         f"MICROSECOND THEN {value} END")
            select.append(f"{value} AS {quote(out)}")
            outputs.append(out)
    sql = f"SELECT {', '.join(select)} FROM entity e {' '.join(joins)} ORDER BY e.{quote(ROW)}"
    return sql, outputs


# --- jobs ---------------------------------------------------------------------------------------------------------
class IcebergRetrievalJob(RetrievalJob):
    """A lazily executed DuckDB query over pinned Iceberg scans.

    ``to_arrow``/``to_df`` run it once per call; :meth:`to_arrow_reader` streams the result in record batches
    (what :mod:`skewless.feast_ext.materialize` uses to keep memory bounded).
    """

    def __init__(
        self,
        build: Callable[["duckdb.DuckDBPyConnection"], str],
        finish: Callable[[pa.Table], pa.Table],
        config: RepoConfig,
        full_feature_names: bool = False,
        on_demand_feature_views: Optional[List[OnDemandFeatureView]] = None,
        metadata: Optional[RetrievalMetadata] = None,
        sql: str = "",
    ) -> None:
        super().__init__()
        self._build = build
        self._finish = finish
        self._config = config
        self._full_feature_names = full_feature_names
        self._odfvs = on_demand_feature_views or []
        self._metadata = metadata
        self._sql = sql

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> List[OnDemandFeatureView]:
        return self._odfvs

    @property
    def metadata(self) -> Optional[RetrievalMetadata]:
        return self._metadata

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pa.Table:
        con = connect(_store_config(self._config))
        try:
            return self._finish(con.sql(self._build(con)).to_arrow_table())
        finally:
            con.close()

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_arrow_reader(self, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The result as a stream of record batches of at most ``batch_size`` rows (no on-demand transforms)."""
        con = connect(_store_config(self._config))
        try:
            reader = con.sql(self._build(con)).to_arrow_reader(batch_size)
            for batch in reader:
                if batch.num_rows:
                    yield batch
        finally:
            con.close()

    def to_sql(self) -> str:
        """The DuckDB query (``__src<i>`` are the registered Iceberg scans, ``entity`` the entity rows)."""
        return self._sql

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False,
                timeout: Optional[int] = None) -> None:
        """Write the result to a saved-dataset storage, as Feast's DuckDB store does."""
        import ibis
        from feast.infra.offline_stores.duckdb import _write_data_source

        _write_data_source(ibis.memtable(self.to_arrow(timeout=timeout)), storage.to_data_source(),
                           str(self._config.repo_path), "overwrite", allow_overwrite)


# --- the store ----------------------------------------------------------------------------------------------------
class IcebergOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store with fast, pushed-down reads of ``IcebergSource`` (see the module docstring)."""

    #: Iceberg scans read the snapshot :func:`skewless.lake.snapshots.snapshot_to_read` chooses (pins honoured).
    honours_snapshot_pins = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df: Optional[Union[pd.DataFrame, str]],
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        """Point-in-time correct feature values for every entity row (Feast's contract), rows in entity order."""
        filter_by_created = bool(kwargs.pop("filter_by_created_timestamp", False))
        if entity_df is None:
            raise ValueError("IcebergOfflineStore (like Feast's DuckDB store) needs an entity_df; retrieval by "
                             "start_date/end_date alone is not supported")
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if any(live_table(fv.name) for fv in feature_views):
            return _with_live_views(config, feature_views, feature_refs, entity_df, registry, project,
                                    full_feature_names, filter_by_created)
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        stock = (not feature_views
                 or not all(_is_iceberg(fv.batch_source) for fv in feature_views)
                 or any(o.mode == "substrait" for o in odfvs))
        if stock:
            if config.coerce_tz_aware is False and isinstance(entity_df, pd.DataFrame):
                from feast.utils import make_df_tzaware

                entity_df = make_df_tzaware(entity_df)  # what Feast does before any store with its default
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project, full_feature_names,
                filter_by_created_timestamp=filter_by_created)
        cfg = _store_config(config)
        entities = _entities(entity_df, cfg, config.coerce_tz_aware is not False)
        plans = [_ViewPlan.of(fv, feature_refs, full_feature_names, filter_by_created) for fv in feature_views]
        _check_columns(entities, plans)
        scans, view_rows = [], []
        for i, plan in enumerate(plans):
            lower, upper, pushed, key_values = _pushdown(plan, entities, cfg)
            columns = [s for s, _ in plan.keys] + [plan.timestamp] + ([plan.created] if plan.created else [])
            columns += [s for s, _ in plan.features]
            scans.append(IcebergScan.plan(plan.source, columns, pushed, allow_native=cfg.native_parquet))
            view_rows.append(_view_rows_sql(i, plan, lower, upper, key_values))
        _check_retrieval(entities, cfg, plans, scans, naive=not _NAIVE_REPORTED.get())
        sql, outputs = _historical_sql(plans, view_rows)
        key_columns = [ent for p in plans for _, ent in p.keys]

        def build(con: "duckdb.DuckDBPyConnection") -> str:
            con.register("entity", entities.duckdb_table(key_columns))
            for i, scan in enumerate(scans):
                scan.register(con, f"__src{i}")
            return sql

        def finish(result: pa.Table) -> pa.Table:
            out = entities.table
            for name in outputs:
                out = out.append_column(name, result.column(name))
            return out

        lo, hi = entities.bounds
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=list(set(entities.table.column_names) - {entities.timestamp_column}),
            min_event_timestamp=lo,
            max_event_timestamp=hi,
        )
        return IcebergRetrievalJob(build, finish, config, full_feature_names,
                                   [o for o in odfvs if o.mode != "substrait"], metadata, sql)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: "DataSource",
        join_key_columns: List[str],
        feature_name_columns: List[str],
        timestamp_field: str,
        created_timestamp_column: Optional[str],
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        """The latest row per entity key with ``start_date <= event time <= end_date`` (what materialization loads)."""
        if not _is_iceberg(data_source):
            return DuckDBOfflineStore.pull_latest_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date)
        order = [f"{quote(timestamp_field)} DESC"]
        if created_timestamp_column:
            order.append(f"{quote(created_timestamp_column)} DESC NULLS LAST")
        partition = ", ".join(quote(k) for k in join_key_columns) or "NULL"
        qualify = f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {', '.join(order)}) = 1"
        return _pull(config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                     created_timestamp_column, start_date, end_date, qualify)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: "DataSource",
        join_key_columns: List[str],
        feature_name_columns: List[str],
        timestamp_field: str,
        created_timestamp_column: Optional[str] = None,
        start_date: Optional[datetime] = None,
        end_date: Optional[datetime] = None,
    ) -> RetrievalJob:
        """Every row with an event time in ``[start_date, end_date]`` (either bound optional)."""
        if not _is_iceberg(data_source):
            return DuckDBOfflineStore.pull_all_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date)
        return _pull(config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                     created_timestamp_column, start_date, end_date, "")

    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, table: pa.Table,
                            progress: Optional[Callable[[int], Any]]) -> None:
        """Append rows to the view's Iceberg table (``write_to_offline_store``, offline ``push``), cast to the
        table's schema as Feast's store casts appends to a Parquet source; other sources go to Feast's store."""
        source = feature_view.batch_source
        if not _is_iceberg(source):
            return DuckDBOfflineStore.offline_write_batch(config, feature_view, table, progress)
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        from skewless.feast_ext.iceberg_scan import load_table

        iceberg = load_table(source)
        target = schema_to_pyarrow(iceberg.schema(), include_field_ids=False)
        rows = conform_to_iceberg(table, target, source.field_mapping,
                                  f"offline write to {feature_view.name} ({source.namespace}.{source.iceberg_table})")
        iceberg.append(rows)
        if progress:
            progress(rows.num_rows)


# --- live views (ADR 0016) -----------------------------------------------------------------------------------------
#: The columns of ``abukix.commit_events`` a live view's windows read.
LIVE_COLUMNS = ("repo", "sha", "kind", "committed_at", "author_id", "known_at", "arrived_at", "seq")


def _live_scan(plan: _ViewPlan, entities: _Entities, cfg: Any) -> Optional[IcebergScan]:
    """The pinned scan of a live view's versions known by the latest entity instant, for the entity keys when they
    are few (None when the event table does not exist yet: no event was ever applied)."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import AlwaysFalse, And, In

    [(src, key)] = plan.keys
    if not entities.valid.any():
        expr = AlwaysFalse()
    else:
        upper = from_epoch_us(int(entities.floor_us[entities.valid].max()))
        expr = timestamp_bounds_filter("known_at", None, upper)
        values = pc.unique(entities.table.column(key).drop_null()).to_pylist()
        if not values:
            expr = AlwaysFalse()
        elif len(values) <= cfg.entity_filter_max_keys:
            expr = And(expr, In(src, set(values)))
    try:
        return IcebergScan.plan(plan.source, LIVE_COLUMNS, expr, allow_native=cfg.native_parquet)
    except NoSuchTableError:
        return None


def _with_live_views(config: RepoConfig, feature_views: List[FeatureView], feature_refs: List[str],
                     entity_df: Union[pd.DataFrame, str], registry: BaseRegistry, project: str,
                     full_feature_names: bool, filter_by_created: bool) -> RetrievalJob:
    """Live views' windows as known at every entity row's instant (:func:`skewless.feast_ext.live.historical_sql`),
    computed first and handed to the other views' retrieval as entity columns, so one job returns them all."""
    cfg = _store_config(config)
    entities = _entities(entity_df, cfg, config.coerce_tz_aware is not False)
    live = [fv for fv in feature_views if live_table(fv.name)]
    plans = [_ViewPlan.of(fv, feature_refs, full_feature_names) for fv in live]
    _check_columns(entities, plans)
    _check_retrieval(entities, cfg)  # live windows end at any instant: only the naive timestamps to report
    out = entities.table
    for fv, plan in zip(live, plans):
        definition = live_table(fv.name)
        output = dict(plan.features)
        scan = _live_scan(plan, entities, cfg)
        [(_, ent_key)] = plan.keys
        con = connect(cfg)
        try:
            con.register("entity", entities.duckdb_table([ent_key]))
            if scan is None:
                from skewless.lake.events import EVENTS_ARROW_SCHEMA

                con.register("__live", EVENTS_ARROW_SCHEMA.empty_table().select(list(LIVE_COLUMNS)))
            else:
                scan.register(con, "__live")
            windows = historical_sql(definition, ent_key, TS_FLOOR, ROW, output)
            wanted = [(output[f.name], pa.types.is_integer(f.arrow_type)) for f in definition.features
                      if f.name in output]
            names = [n for n, _ in wanted]
            # counts of an entity row with no version are 0 (an empty window), not null
            cols = ", ".join(
                f"CASE WHEN e.{quote(TS_FLOOR)} IS NULL THEN NULL ELSE coalesce(w.{quote(n)}, 0) END AS {quote(n)}"
                if count else f"w.{quote(n)} AS {quote(n)}" for n, count in wanted)
            result = con.sql(f"SELECT {cols} FROM entity e LEFT JOIN ({windows}) w USING ({quote(ROW)}) "
                             f"ORDER BY e.{quote(ROW)}").to_arrow_table()
        finally:
            con.close()
        for n in names:
            out = out.append_column(n, result.column(n))
    rest = [fv for fv in feature_views if not live_table(fv.name)]
    if not rest:
        lo, hi = entities.bounds
        metadata = RetrievalMetadata(features=feature_refs,
                                     keys=list(set(entities.table.column_names) - {entities.timestamp_column}),
                                     min_event_timestamp=lo, max_event_timestamp=hi)
        def build(con: "duckdb.DuckDBPyConnection") -> str:
            con.register("__done", out)
            return "SELECT * FROM __done"

        return IcebergRetrievalJob(build, lambda t: t, config, full_feature_names,
                                   OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry),
                                   metadata)
    prefixes = {fv.projection.name_to_use() for fv in live}
    refs = [r for r in feature_refs if r.split(":")[0] not in prefixes]
    token = _NAIVE_REPORTED.set(True)  # the same entity rows: their naive timestamps are reported once
    try:
        return IcebergOfflineStore.get_historical_features(
            config, rest, refs, out.to_pandas(), registry, project, full_feature_names,
            filter_by_created_timestamp=filter_by_created)
    finally:
        _NAIVE_REPORTED.reset(token)


def conform_to_iceberg(table: pa.Table, schema: pa.Schema, field_mapping: Optional[dict[str, str]],
                       what: str) -> pa.Table:
    """``table`` as rows of an Iceberg table with Arrow schema ``schema``: Feast-side names mapped back through
    ``field_mapping``, columns in the table's order, values cast to its types (nanosecond timestamps to
    microseconds when no value has nanoseconds, naive timestamps as UTC, int64 to int32 when every value fits...).

    Raises ``ValueError`` naming the columns when the sets differ, or the column whose values do not fit."""
    reverse = {v: k for k, v in (field_mapping or {}).items()}
    names = set(schema.names)
    table = table.rename_columns([reverse[c] if c not in names and c in reverse else c for c in table.column_names])
    missing = sorted(names - set(table.column_names))
    extra = sorted(set(table.column_names) - names)
    if missing or extra:
        raise ValueError(f"{what}: the rows' columns do not match the Iceberg table's columns. "
                         f"missing_expected_columns: {missing}, extra_unexpected_columns: {extra}.")
    columns = []
    for f in schema:
        col = table.column(f.name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if col.type != f.type:
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ValueError(f"{what}: column {f.name!r} holds {col.type} values that do not fit the Iceberg "
                                 f"table's type {f.type} ({e})") from e
        if not f.nullable and col.null_count:
            raise ValueError(f"{what}: column {f.name!r} is required in the Iceberg table but holds "
                             f"{col.null_count} null(s)")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _check_columns(entities: _Entities, plans: list[_ViewPlan]) -> None:
    names = set(entities.table.column_names)
    needed = {ent for p in plans for _, ent in p.keys} | {entities.timestamp_column}
    if needed - names:
        raise FeastEntityDFMissingColumnsError(needed, needed - names)
    clash = names & {out for p in plans for _, out in p.features}
    if clash:
        raise ValueError(f"entity_df already has column(s) {sorted(clash)} that the retrieval would add as features; "
                         "rename them or use full_feature_names=True")
    internal = names & {ROW, TS_FLOOR, TS_CEIL}
    if internal:
        raise ValueError(f"entity_df column name(s) {sorted(internal)} are reserved by IcebergOfflineStore")


def _pushdown(plan: _ViewPlan, entities: _Entities, cfg: Any
              ) -> tuple[Optional[datetime], Optional[datetime], "BooleanExpression", dict[str, list[Any]]]:
    """Event-time bounds of the rows that can match an entity row, the pyiceberg filter that prunes files, and the
    entity key values (source column -> values) when there are few enough to filter the scan on."""
    from pyiceberg.expressions import AlwaysFalse, And, In

    if not entities.valid.any():
        return None, None, AlwaysFalse(), {}
    upper = from_epoch_us(int(entities.floor_us[entities.valid].max()))
    lower = None
    if plan.ttl:
        try:
            lower = from_epoch_us(int(entities.ceil_us[entities.valid].min())) - plan.ttl
        except OverflowError:
            lower = None
    expr = timestamp_bounds_filter(plan.timestamp, lower, upper)
    key_values: dict[str, list[Any]] = {}
    for src, ent in plan.keys:
        values = pc.unique(entities.table.column(ent).drop_null())
        if len(values) == 0:
            return lower, upper, AlwaysFalse(), {}
        if len(values) <= cfg.entity_filter_max_keys:
            key_values[src] = values.to_pylist()
            expr = And(expr, In(src, set(key_values[src])))
    return lower, upper, expr, key_values


def _pull(config: RepoConfig, data_source: "DataSource", join_key_columns: List[str],
          feature_name_columns: List[str], timestamp_field: str, created_timestamp_column: Optional[str],
          start_date: Optional[datetime], end_date: Optional[datetime], qualify: str) -> IcebergRetrievalJob:
    cfg = _store_config(config)
    fields = list(join_key_columns) + list(feature_name_columns) + [timestamp_field]
    if created_timestamp_column:
        fields.append(created_timestamp_column)
    fields = list(dict.fromkeys(fields))
    start = start_date.astimezone(timezone.utc) if start_date else None
    end = end_date.astimezone(timezone.utc) if end_date else None
    scan = IcebergScan.plan(data_source, fields, timestamp_bounds_filter(timestamp_field, start, end),
                            allow_native=cfg.native_parquet)
    ts = quote(timestamp_field)
    where = [f"{ts} IS NOT NULL"]
    if start is not None:
        where.append(f"{ts} >= {_ts_literal(start)}")
    if end is not None:
        where.append(f"{ts} <= {_ts_literal(end)}")
    sql = (f"SELECT {', '.join(quote(f) for f in fields)} FROM {quote('__src0')} "
           f"WHERE {' AND '.join(where)} {qualify}")

    def build(con: "duckdb.DuckDBPyConnection") -> str:
        scan.register(con, "__src0")
        return sql

    return IcebergRetrievalJob(build, lambda t: t, config, sql=sql)
