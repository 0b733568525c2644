"""Feast's Spark offline store over skewless's Iceberg tables, read by Spark itself (ADR 0008).

Selected by ``feature_repo/feature_store.spark.yaml`` (``SKEWLESS_ENGINE=spark``)::

    offline_store:
      type: skewless.feast_ext.spark_offline.IcebergSparkOfflineStore

The feature views keep their one definition (``IcebergSource`` in ``feature_repo/sources.py``). Feast 0.67's
``SparkOfflineStore`` accepts an ``IcebergSource`` but reads it with pyiceberg into driver memory
(``scan().to_arrow()`` → ``createDataFrame``), which caps retrieval at what the driver holds. This subclass
instead hands Feast's own Spark SQL a ``SparkSource`` whose query reads the same table through Spark's Iceberg
catalog (``skewless.<namespace>.<table> VERSION AS OF <snapshot>``), so executors read the Parquet files and the
point-in-time join runs distributed. Everything else is Feast's Spark store, unchanged, except:

* **Snapshot pins** (:mod:`skewless.lake.snapshots`): the snapshot read is the pinned one, else the current one, and it
  is reported back, so a training run can log and reproduce exactly what it read.
* **An as-of join instead of a range join**: Feast's Spark template joins every entity row to every feature row of
  its entity at or before it (bounded only by the TTL), then keeps the newest per entity row with a window. For
  a dense daily table without TTL that is O(entity rows × days) (measured: BENCHMARKS.md, section 3). Each view's ``<view>__cleaned`` statement of Feast's rendered query is replaced by the as-of
  form of :mod:`skewless.features.spark.dialect` rule 1: entity rows and feature rows in one union, sorted by time inside
  each entity key, every entity row taking ``last(feature row) IGNORE NULLS`` — the newest row at or before it,
  ties by the newest ``created_timestamp``, then nulled when older than ``T − ttl`` (the exact ``timedelta``;
  Feast's template truncates the TTL to whole seconds). Same columns, same semantics, one sort per key. With
  ``filter_by_created_timestamp`` Feast's statement is kept (TTL made exact by :func:`exact_ttl`).
* **UTC timestamps out**: Spark's ``toPandas`` returns naive datetimes (in the session zone, UTC); they are
  returned tz-aware UTC like the DuckDB store's, so callers see one type whatever the engine.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, List, Literal, Optional

import pandas as pd
from feast.batch_feature_view import BatchFeatureView
from feast.feature_view import FeatureView
from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    SparkRetrievalJob,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.repo_config import RepoConfig

from skewless import lake
from skewless.features import spark as sk
from skewless.core.config import profile


class IcebergSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    """Feast's ``spark`` offline store options; ``spark_conf`` overlays the skewless session's settings."""

    type: Literal["skewless.feast_ext.spark_offline.IcebergSparkOfflineStore"] = (
        "skewless.feast_ext.spark_offline.IcebergSparkOfflineStore")


def _session(config: RepoConfig):
    """The profile's Spark session (with the yaml's ``spark_conf`` when this call starts it)."""
    return sk.session(profile(), conf=getattr(config.offline_store, "spark_conf", None))


def spark_table(source: IcebergSource) -> str:
    """The Spark identifier of an ``IcebergSource`` in the profile's catalog, after checking it is that catalog."""
    p = profile()
    uri = (source.catalog_properties or {}).get("uri")
    if source.catalog_type != "sql" or uri != p.catalog_uri or source.catalog_name != p.catalog_name:
        raise ValueError(
            f"IcebergSource {source.name} is in catalog {source.catalog_name!r} ({source.catalog_type}, {uri}); the "
            f"Spark offline store reads the profile's catalog {p.catalog_name!r} ({p.catalog_uri}). Run "
            "`skewless apply` in this SKEWLESS_HOME so the registry's sources point at it.")
    return f"`{p.catalog_name}`.`{source.namespace}`.`{source.iceberg_table}`"


def as_spark_source(source: Any) -> Any:
    """A ``SparkSource`` reading an ``IcebergSource``'s table through Spark at the snapshot to read (else unchanged)."""
    if not isinstance(source, IcebergSource):
        return source
    from skewless.lake.snapshots import snapshot_to_read

    ident = f"{source.namespace}.{source.iceberg_table}"
    snap = snapshot_to_read(ident, lake.load_table(ident))
    # No snapshot yet: the table is empty, and Spark reads an empty table without VERSION AS OF.
    version = f" VERSION AS OF {int(snap)}" if snap is not None else ""
    return SparkSource(
        name=source.name,
        query=f"SELECT * FROM {spark_table(source)}{version}",
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=dict(source.field_mapping),
        description=source.description,
        tags=dict(source.tags),
        owner=source.owner,
    )


def _on_spark(fv: FeatureView) -> FeatureView:
    if not isinstance(fv.batch_source, IcebergSource):
        return fv
    out = copy.copy(fv)
    out.batch_source = as_spark_source(fv.batch_source)
    return out


def _ttl_interval(ttl: timedelta) -> str:
    return f"make_dt_interval({ttl.days}, 0, 0, {ttl.seconds}.{ttl.microseconds:06d})"


def exact_ttl(query: str, views: List[FeatureView]) -> str:
    """Feast's Spark point-in-time query with each view's TTL as an exact interval instead of whole seconds."""
    statements = query.split("---EOS---")
    for fv in views:
        ttl = fv.ttl
        if not isinstance(ttl, timedelta) or not ttl or ttl.microseconds == 0:
            continue  # whole seconds: Feast's rendering is already exact
        name = f"{fv.projection.name_to_use()}__cleaned"
        needle = f"- {int(ttl.total_seconds())} * interval '1' second"
        hits = [i for i, s in enumerate(statements) if f"VIEW {name} AS" in s and needle in s]
        if len(hits) != 1 or statements[hits[0]].count(needle) != 1:
            raise RuntimeError(f"Feast's Spark point-in-time template no longer renders the TTL of {fv.name} as "
                               f"{needle!r}; update skewless.feast_ext.spark_offline.exact_ttl for this Feast version")
        statements[hits[0]] = statements[hits[0]].replace(needle, f"- {_ttl_interval(ttl)}")
    return "---EOS---".join(statements)


def _q(name: str) -> str:
    return f"`{name}`"


def asof_statement(ctx: Any, fv: FeatureView, full_feature_names: bool) -> str:
    """The ``<view>__cleaned`` statement of Feast's Spark query as an as-of join (see the module docstring).

    Output: the view's entity-row id and its features under Feast's output names, one row per entity row that
    has a value (Feast's final ``LEFT JOIN`` on the id supplies the nulls), exactly as Feast's statement.
    """
    name, uid = ctx.name, f"{ctx.name}__entity_row_unique_id"
    keys = list(ctx.entities)
    sel = dict(zip(keys, ctx.entity_selections))  # "<source column> AS <join key>"
    out_names = [f"{name}__{ctx.field_mapping.get(f, f)}" if full_feature_names else ctx.field_mapping.get(f, f)
                 for f in ctx.features]
    created = ctx.created_timestamp_column
    row = ", ".join([f"'__ts', {_q(ctx.timestamp_field)}"] + [f"'__f{i}', {_q(f)}" for i, f in enumerate(ctx.features)])
    bounds = [f"{_q(ctx.timestamp_field)} <= '{ctx.max_event_timestamp}'"]
    ttl = fv.ttl if isinstance(fv.ttl, timedelta) and fv.ttl else None
    if ttl is not None and ctx.min_event_timestamp:
        bounds.append(f"{_q(ctx.timestamp_field)} >= '{ctx.min_event_timestamp}'")
    bounds += [f"{sel[k].rsplit(' AS ', 1)[0]} IS NOT NULL" for k in keys]  # NULL keys never join (as in Feast)
    partition = f"PARTITION BY {', '.join(_q(k) for k in keys)} " if keys else ""
    fresh = f" AND __row.__ts >= __t - {_ttl_interval(ttl)}" if ttl is not None else ""
    key_cols = "".join(f"{_q(k)}, " for k in keys)
    return f"""
CREATE OR REPLACE TEMPORARY VIEW {name}__cleaned AS (
    WITH {name}__entities AS (
        SELECT DISTINCT {key_cols}entity_timestamp, {uid} FROM entity_dataframe
    ), {name}__union AS (
        SELECT {key_cols}entity_timestamp AS __t, 1 AS __side, CAST(NULL AS TIMESTAMP) AS __created, {uid},
               NULL AS __row
        FROM {name}__entities
        UNION ALL
        SELECT {", ".join(sel[k] for k in keys) + ", " if keys else ""}{_q(ctx.timestamp_field)} AS __t, 0 AS __side,
               {f"CAST({_q(created)} AS TIMESTAMP)" if created else "CAST(NULL AS TIMESTAMP)"} AS __created,
               CAST(NULL AS STRING) AS {uid}, named_struct({row}) AS __row
        FROM {ctx.table_subquery} AS {name}__source
        WHERE {" AND ".join(bounds)}
    ), {name}__asof AS (
        SELECT {uid}, __t, __side,
               last(__row) IGNORE NULLS OVER ({partition}ORDER BY __t, __side, __created
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __row
        FROM {name}__union
    )
    SELECT {uid}, {", ".join(f"__row.__f{i} AS {_q(o)}" for i, o in enumerate(out_names))}
    FROM {name}__asof
    WHERE __side = 1 AND __row IS NOT NULL{fresh}
)
"""


def as_of_join(query: str, contexts: List[Any], views: List[FeatureView], full_feature_names: bool) -> str:
    """Feast's rendered Spark point-in-time query with each view's ``__cleaned`` statement as an as-of join."""
    statements = query.split("---EOS---")
    by_name = {fv.projection.name_to_use(): fv for fv in views}
    for ctx in contexts:
        head = f"CREATE OR REPLACE TEMPORARY VIEW {ctx.name}__cleaned AS"
        hits = [i for i, s in enumerate(statements) if head in s]
        if len(hits) != 1:
            raise RuntimeError(f"Feast's Spark point-in-time query has {len(hits)} statements {head!r}; update "
                               "skewless.feast_ext.spark_offline.as_of_join for this Feast version")
        statements[hits[0]] = asof_statement(ctx, by_name[ctx.name], full_feature_names)
    return "---EOS---".join(statements)


class UtcSparkRetrievalJob(SparkRetrievalJob):
    """Feast's Spark retrieval job, returning timestamps tz-aware in UTC (as the DuckDB store does)."""

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        df = super()._to_df_internal(timeout=timeout)
        for col in df.columns:
            if pd.api.types.is_datetime64_dtype(df[col]) and getattr(df[col].dt, "tz", None) is None:
                df[col] = df[col].dt.tz_localize("UTC")
        return df


def _utc(job: SparkRetrievalJob, query: str | None = None) -> UtcSparkRetrievalJob:
    return UtcSparkRetrievalJob(
        spark_session=job.spark_session, query=query or job.query, full_feature_names=job.full_feature_names,
        config=job._config, on_demand_feature_views=job.on_demand_feature_views, metadata=job.metadata)


class IcebergSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark offline store; ``IcebergSource`` tables are read by Spark through the skewless catalog."""

    honours_snapshot_pins = True

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names=False, filter_by_created_timestamp=False, **kwargs):
        """Feast's Spark point-in-time retrieval over the views' Iceberg tables, as-of joined (module docstring)."""
        from feast.infra.offline_stores import offline_utils

        _session(config)
        views = [_on_spark(fv) for fv in feature_views]
        job = SparkOfflineStore.get_historical_features(
            config, views, feature_refs, entity_df, registry, project, full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created_timestamp, **kwargs)
        if any(isinstance(v, BatchFeatureView) for v in views) or (
                filter_by_created_timestamp and any(v.batch_source.created_timestamp_column for v in views)):
            return _utc(job, exact_ttl(job.query, views))  # Feast's own join, only the TTL made exact
        meta = job.metadata
        contexts = offline_utils.get_feature_view_query_context(
            feature_refs, views, registry, project, (meta.min_event_timestamp, meta.max_event_timestamp))
        return _utc(job, as_of_join(job.query, contexts, views, full_feature_names))

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                        timestamp_field, created_timestamp_column, start_date, end_date):
        """Latest row per entity in [start, end] (materialization), read by Spark."""
        _session(config)
        return _utc(SparkOfflineStore.pull_latest_from_table_or_query(
            config, as_spark_source(data_source), join_key_columns, feature_name_columns, timestamp_field,
            created_timestamp_column, start_date, end_date))

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                     timestamp_field, created_timestamp_column=None, start_date=None, end_date=None):
        """Every row in [start, end], read by Spark."""
        _session(config)
        return _utc(SparkOfflineStore.pull_all_from_table_or_query(
            config, as_spark_source(data_source), join_key_columns, feature_name_columns, timestamp_field,
            created_timestamp_column, start_date, end_date))
