"""A Feast batch materialization engine that streams the latest rows into the online store in bounded batches.

Plug it in from ``feature_store.yaml``::

    batch_engine:
      type: skewless.feast_ext.materialize.StreamingComputeEngine
      batch_size: 50000          # rows per write batch (optional)

``feast materialize`` / ``FeatureStore.materialize`` then work as before. Feast's local engine pulls every row of
the interval into one Arrow table, deduplicates it in pandas, converts the whole table to protobuf objects and
writes it in one call — memory grows with the table (9 GB for 1M entities). This engine, for plain feature views
(one batch source, no transformation, aggregation or validation node):

1. asks the offline store for the latest row per entity in ``[start, end]``
   (``pull_latest_from_table_or_query`` — with :class:`~skewless.feast_ext.offline.IcebergOfflineStore` a pinned,
   pushed-down Iceberg scan deduplicated in DuckDB) and reads the result as a stream of record batches;
2. writes each batch and drops it: memory is bounded by ``batch_size``, not by the table.

For Redis (``RedisOnlineStore``, single node, Sentinel or Redis Cluster) a batch is encoded column-wise in Feast's
exact Redis format (:mod:`skewless.feast_ext.redis_format`) and sent as one pipelined buffer (in a cluster: one per
master, the rows split by their key's hash slot, :mod:`skewless.feast_ext.redis_cluster`), with Feast's write rule: a
row is skipped when the stored ``_ts`` of its entity is newer or equal (unless ``skip_dedup``). Writes are
idempotent, so a killed run re-run over the same interval ends in the same state. Any other online store receives
each batch through its own ``online_write_batch``; any other view goes to Feast's :class:`LocalComputeEngine`, which
this extends.

A view's first materialization (no interval recorded in the registry) reads from :data:`DATA_START`, whatever
start Feast chose: the online store holds nothing of the view yet, and a value holds until the entity's next row
however old it is. Without this, plain ``feast materialize-incremental`` on a view without TTL starts "1 year
before the current time" and leaves out every entity whose last row is older, for good (later runs start at the
previous end).

For a feature table that ``skewless features build`` writes (an Iceberg table with ``skewless.built-through``),
an incremental run also starts early enough to reload the rows that builds restated since the online store's last
load (late commits; :func:`skewless.features.build.restart_day`), and a load through the built day records the snapshot
it read (``skewless.online-snapshot.<profile>``): plain ``feast materialize-incremental`` keeps the online store
as ``skewless materialize`` does.

Online never serves a silent null for a declared feature (ADR 0019): for such a table, a task is refused
(:class:`MaterializationRefused`, naming view, feature and what to run) when the table has no column for a feature
of the view, when rows of the interval come from data files written before the column existed (a history never
computed), or when a feature not declared nullable holds no value in the interval. A view whose features include one
the online store was never loaded with (recorded as ``skewless.online-features.<profile>``) is reloaded from
:data:`DATA_START`, so no entity keeps a row without it.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Literal, Optional

import pyarrow as pa
from feast.batch_feature_view import BatchFeatureView
from feast.feature_view import FeatureView
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine, LocalComputeEngineConfig
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.stream_feature_view import StreamFeatureView
from feast.value_type import ValueType

from skewless.core import terminal
from skewless.core.errors import SkewlessError
from skewless.feast_ext import redis_format
from skewless.feast_ext.redis_write import RedisHashWriter


if TYPE_CHECKING:
    from feast.repo_config import RepoConfig

log = logging.getLogger(__name__)

#: Where a view's first materialization starts: before any event time.
DATA_START = datetime(1970, 1, 1, tzinfo=timezone.utc)


class StreamingComputeEngineConfig(LocalComputeEngineConfig):
    """Configuration of :class:`StreamingComputeEngine`."""

    type: Literal["skewless.feast_ext.materialize.StreamingComputeEngine"] = (  # type: ignore[assignment]
        "skewless.feast_ext.materialize.StreamingComputeEngine"
    )

    batch_size: int = 50_000
    """Rows per write batch: bounds the engine's memory."""


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def complete_first_load(task: MaterializationTask) -> MaterializationTask:
    """The task, starting at :data:`DATA_START` when the registry records no materialization of its view yet."""
    fv = task.feature_view
    start = task.start_time if task.start_time.tzinfo else task.start_time.replace(tzinfo=timezone.utc)
    if fv.materialization_intervals or start <= DATA_START:
        return task
    # Feast prints its chosen start just before; say on the same channel that the first load is complete.
    print(f"{fv.name}: first materialization, loading from the beginning of the data ({DATA_START:%Y-%m-%d}), "
          f"not from {task.start_time:%Y-%m-%d}")
    return dataclasses.replace(task, start_time=DATA_START)


def built_table(fv: Any) -> Any:
    """The Iceberg table behind ``fv`` if ``skewless features build`` writes it (None: any other source)."""
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

    from skewless import features
    from skewless.feast_ext import iceberg_scan

    if not isinstance(getattr(fv, "batch_source", None), IcebergSource):
        return None
    table = iceberg_scan.load_table(fv.batch_source)
    return table if features.BUILT_THROUGH in table.properties else None


#: Table property (suffixed ``.<profile>``): the features of the view the online store was last fully loaded with.
ONLINE_FEATURES = "skewless.online-features"


class MaterializationRefused(SkewlessError, ValueError):
    """The offline table cannot give a declared feature its values (the message names view, feature, command)."""


def unservable_features(fv: Any, table: Any, start: datetime | None = None,
                        end: datetime | None = None) -> dict[str, str]:
    """Feature -> why: the features of ``fv`` that the Iceberg feature table behind it cannot serve for event times
    in ``[start, end]`` (no column, rows whose values were never computed, or, not nullable, no value at all)."""
    from skewless import features
    from skewless.feast_ext.iceberg_scan import timestamp_bounds_filter
    from skewless.lake.columns import column_fill

    source = fv.batch_source
    reverse = {v: k for k, v in (source.field_mapping or {}).items()}
    columns = {f.name: reverse.get(f.name, f.name) for f in fv.features}
    ts = reverse.get(source.timestamp_field, source.timestamp_field)
    fills = column_fill(table, columns.values(), row_filter=timestamp_bounds_filter(ts, start, end))
    nullable = {f.name for t in features.TABLES if t.name == fv.name for f in t.features if f.nullable}
    ident = ".".join(table.name())
    out: dict[str, str] = {}
    for feature, column in columns.items():
        fill = fills[column]
        if not fill.exists:
            out[feature] = (f"feature view {fv.name} declares feature {feature} but Iceberg table {ident} has no "
                            f"column {column}: run `skewless features build` (it adds the column and backfills "
                            "its history)")
        elif fill.uncomputed_rows:
            out[feature] = (f"feature {fv.name}:{feature}: {fill.files_without} of {fill.files} data files of "
                            f"{ident} were written before its column existed, so their rows hold no value: run "
                            "`skewless features build` (it backfills the column's history)")
        elif fill.all_null and feature not in nullable:
            out[feature] = (f"feature {fv.name}:{feature}: none of the {fill.rows} rows of {ident} read holds a "
                            "value: run `skewless features build` and check the feature's definition")
    return out


def refuse_unservable(fv: Any, table: Any, start: datetime | None = None, end: datetime | None = None) -> None:
    """Raise :class:`MaterializationRefused` if :func:`unservable_features` finds anything (nothing is loaded)."""
    problems = unservable_features(fv, table, start, end)
    if problems:
        raise MaterializationRefused("materialization refused, the online store would serve null: "
                                     + "; ".join(problems.values()))


def online_features(table: Any) -> set[str] | None:
    """The features the online store of the active profile was last fully loaded with (None: not recorded)."""
    from skewless.core.config import profile

    raw = table.properties.get(f"{ONLINE_FEATURES}.{profile().name}")
    return None if raw is None else {f for f in raw.split(",") if f}


def not_loaded_online(fv: Any, table: Any) -> list[str]:
    """Features of ``fv`` the online store was never fully loaded with (all of them when that is not recorded)."""
    loaded = online_features(table)
    return [f.name for f in fv.features if loaded is None or f.name not in loaded]


def reload_restated(task: MaterializationTask, table: Any) -> MaterializationTask:
    """The task, starting early enough to reload what builds restated since the last load of the online store."""
    from skewless.core.config import profile
    from skewless.features import restart_day

    fv = task.feature_view
    if not fv.materialization_intervals:
        return task  # a first load starts at DATA_START anyway
    missing = not_loaded_online(fv, table)
    if missing:
        print(f"{fv.name}: feature(s) {', '.join(missing)} were never loaded online; reloading from the beginning "
              f"of the data ({DATA_START:%Y-%m-%d})")
        return dataclasses.replace(task, start_time=DATA_START)
    restart = restart_day(table, profile())
    start = task.start_time if task.start_time.tzinfo else task.start_time.replace(tzinfo=timezone.utc)
    if restart is None or restart >= start:
        return task
    print(f"{fv.name}: builds since the last load restated rows from {restart:%Y-%m-%d}; reloading from there")
    return dataclasses.replace(task, start_time=restart)


def record_online_snapshot(table: Any, snapshot: int | None, end: datetime, fv: Any = None) -> None:
    """Record ``snapshot`` (and the features of ``fv``) as what the online store was loaded from, if the load
    reached the table's built day."""
    from skewless import features
    from skewless.core.config import profile
    from skewless.features import ONLINE_SNAPSHOT

    built = table.properties.get(features.BUILT_THROUGH)
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    if snapshot is None or not built or end.astimezone(timezone.utc).date() < date.fromisoformat(built):
        return  # the end bound is inclusive: any end on the built day loaded that day's rows
    table = table.refresh()  # a build may have committed meanwhile; its restatements are after `snapshot`
    props = {f"{ONLINE_SNAPSHOT}.{profile().name}": str(snapshot)}
    if fv is not None:
        props[f"{ONLINE_FEATURES}.{profile().name}"] = ",".join(f.name for f in fv.features)
    with table.transaction() as tx:
        tx.set_properties(props)


def not_streamable(task: MaterializationTask) -> Optional[str]:
    """Why Feast's local engine must handle this task (None: this engine streams it)."""
    fv = task.feature_view
    if not isinstance(fv, FeatureView) or isinstance(fv, StreamFeatureView):
        return f"{type(fv).__name__} is not a plain feature view"
    if fv.batch_source is None or getattr(fv, "stream_source", None) is not None:
        return "the view does not read one batch source"
    if getattr(fv, "source_views", None):
        return "the view is derived from other views"
    if getattr(fv, "feature_transformation", None) or getattr(fv, "aggregations", None):
        return "the view has a transformation or aggregations"
    if isinstance(fv, BatchFeatureView) and getattr(fv, "udf", None):
        return "the view has a user-defined function"
    if getattr(fv, "enable_validation", False) or getattr(fv, "filter", None):
        return "the view validates or filters rows"
    if getattr(fv, "offline", False):
        return "the view also writes to the offline store"
    if not task.only_latest:
        return "the task asks for every row, not the latest"
    return None


class StreamingComputeEngine(LocalComputeEngine):
    """Feast's local engine, with a bounded-memory streaming path for plain feature views (module docstring)."""

    def __init__(self, batch_size: int = 50_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_engine.batch_size must be a positive number of rows, not {batch_size}")
        self.batch_size = batch_size

    def _materialize_one(self, registry: BaseRegistry, task: MaterializationTask,
                         **kwargs: Any) -> LocalMaterializationJob:
        task = complete_first_load(task)
        table = built_table(task.feature_view)
        snapshot = None
        if table is not None:
            task = reload_restated(task, table)
            refuse_unservable(task.feature_view, table, _utc(task.start_time), _utc(task.end_time))
            current = table.current_snapshot()
            snapshot = current.snapshot_id if current else None
        job = self._load(registry, task, **kwargs)
        if table is not None and job.status() == MaterializationJobStatus.SUCCEEDED:
            record_online_snapshot(table, snapshot, task.end_time, task.feature_view)
        return job

    def _load(self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any) -> LocalMaterializationJob:
        reason = not_streamable(task)
        if reason is not None:
            log.info("materializing %s with Feast's local engine: %s", task.feature_view.name, reason)
            return super()._materialize_one(registry, task, **kwargs)
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        try:
            rows = self.stream(registry, task)
            log.info("materialized %d rows of %s", rows, task.feature_view.name)
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
        except Exception as e:  # noqa: BLE001 - reported through the job, as Feast's engine does
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=e)

    def stream(self, registry: BaseRegistry, task: MaterializationTask) -> int:
        """Write the latest row of every entity in the task's interval; returns the number of rows read."""
        from feast.utils import _get_column_names

        fv = task.feature_view
        entities = [registry.get_entity(name, task.project) for name in fv.entities]
        join_keys, feature_cols, ts_col, created_col = _get_column_names(fv, entities)
        job = self.offline_store.pull_latest_from_table_or_query(
            config=self.repo_config,
            data_source=fv.batch_source,
            join_key_columns=join_keys,
            feature_name_columns=feature_cols,
            timestamp_field=ts_col,
            created_timestamp_column=created_col,
            start_date=task.start_time,
            end_date=task.end_time,
        )
        reader = getattr(job, "to_arrow_reader", None)
        batches: Iterable[pa.RecordBatch] = (
            reader(self.batch_size) if reader is not None else job.to_arrow().to_batches(max_chunksize=self.batch_size)
        )
        mapping = dict(fv.batch_source.field_mapping or {})
        writer = self._writer(fv, mapping.get(ts_col, ts_col))
        rows = 0
        with terminal.progress(desc=f"materializing {fv.name}", unit=" rows") as bar:
            try:
                for batch in batches:
                    if mapping:
                        batch = batch.rename_columns([mapping.get(c, c) for c in batch.schema.names])
                    writer.write(batch)
                    rows += batch.num_rows
                    bar.update(batch.num_rows)
            except BaseException:
                writer.abort()
                raise
            writer.close()
        return rows

    def _writer(self, fv: FeatureView, ts_column: str) -> "RedisHashWriter | FeastWriter":
        from feast.infra.online_stores.redis import RedisOnlineStore, RedisType

        join_key_types = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
        store, cfg = self.online_store, self.repo_config.online_store
        # Only where writes are Feast's own (a subclass overriding online_write_batch keeps its own writes). The live
        # views' guard (LiveReadMixin) only refuses writes to live views, which are never materialized.
        from skewless.feast_ext.live import LiveReadMixin

        own = (RedisOnlineStore.online_write_batch, LiveReadMixin.online_write_batch)
        if (isinstance(store, RedisOnlineStore)
                and type(store).online_write_batch in own
                and redis_format.supports_keys(join_key_types, self.repo_config.entity_key_serialization_version)):
            if cfg.redis_type == RedisType.redis_cluster:
                from skewless.feast_ext import redis_cluster

                return redis_cluster.ClusterHashWriter(
                    redis_cluster.cluster_client(store, cfg), self.repo_config, fv, join_key_types, ts_column)
            return RedisHashWriter(store._get_client(cfg), self.repo_config, fv, join_key_types, ts_column)
        return FeastWriter(store, self.repo_config, fv, join_key_types)


class FeastWriter:
    """Any online store: each batch converted by Feast and written through the store's ``online_write_batch``."""

    def __init__(self, store: Any, config: "RepoConfig", fv: FeatureView, join_key_types: dict[str, ValueType]):
        self.store, self.config, self.fv, self.join_key_types = store, config, fv, join_key_types

    def write(self, batch: pa.RecordBatch) -> None:
        from feast.utils import _convert_arrow_to_proto

        rows = _convert_arrow_to_proto(batch, self.fv, self.join_key_types)
        self.store.online_write_batch(self.config, self.fv, rows, None)

    def close(self) -> None:
        """Nothing buffered: every batch is written by the time :meth:`write` returns."""

    def abort(self) -> None:
        """Nothing to undo: written batches stay (a re-run rewrites them identically)."""
