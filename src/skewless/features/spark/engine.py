"""The Spark compute function of ``skewless features build`` (engine ``spark``).

:func:`skewless.features.build_table` does everything else exactly as for DuckDB (which days and entities to
compute, restatements of late commits, the one Iceberg transaction that writes the rows): only this function
differs. It runs the feature table's own SQL (:mod:`skewless.features`), rendered by
:func:`skewless.features.spark.dialect.to_spark`, over ``skewless.abukix.commits`` read by Spark at the build's snapshot, so
the commits never pass through the driver; the computed rows come back as Arrow for the Iceberg commit.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from functools import lru_cache
from typing import TYPE_CHECKING

import pyarrow as pa

from skewless.features import spark as sk
from skewless.core.config import COMMITS_TABLE, Profile
from skewless.features.spark.dialect import to_spark

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from skewless.features.definitions import FeatureTable

#: The commit columns the features read (never authored_at): the same projection as features.commits_arrow.
COMMIT_COLUMNS = ("repo", "author_id", "committed_at", "is_merge", "files_changed", "lines_added", "lines_deleted",
                  "languages")


@lru_cache(maxsize=8)
def spark_sql(duckdb_sql: str) -> str:
    """The Spark rendering of one feature table's SQL (translated once per process)."""
    return to_spark(duckdb_sql)


def _targets_frame(targets: pa.Table, key: str):
    """Targets as pandas with tz-aware UTC ``from_day`` (DuckDB gets them naive UTC; Spark must not guess a zone)."""
    df = targets.select([key, "from_day"]).to_pandas()
    df["from_day"] = df["from_day"].dt.tz_localize("UTC")
    return df


def compute(table: "FeatureTable", commits_table: "Table", snapshot_id: int, targets: pa.Table, until: date,
            p: Profile) -> pa.Table:
    """Rows of ``table`` for ``targets`` (entity key, from_day) through day ``until``, computed by Spark."""
    from pyspark import StorageLevel

    spark = sk.session(p)
    cols = ", ".join(COMMIT_COLUMNS)
    # The SQL reads `c` in several CTEs and Spark inlines CTEs: cache the snapshot's columns once (spills to disk).
    commits = spark.sql(f"SELECT {cols} FROM {p.catalog_name}.{COMMITS_TABLE} VERSION AS OF {int(snapshot_id)}"
                        ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        commits.createOrReplaceTempView("c")
        spark.createDataFrame(_targets_frame(targets, table.entity_key),
                              schema=f"{table.entity_key} STRING, from_day TIMESTAMP"
                              ).createOrReplaceTempView("targets")
        until_ts = datetime.combine(until, time(0), tzinfo=timezone.utc)
        df = spark.sql(spark_sql(table.sql), args={"until": until_ts})
        batches = df._collect_as_arrow()  # public DataFrame.toArrow() arrives in Spark 4; 3.5 has this one
    finally:
        commits.unpersist()
        spark.catalog.dropTempView("c")
        spark.catalog.dropTempView("targets")
    out = pa.Table.from_batches(batches) if batches else table.arrow_schema.empty_table()
    ts = out["event_timestamp"].cast(pa.timestamp("us", tz="UTC"))
    out = out.set_column(out.schema.get_field_index("event_timestamp"), "event_timestamp", ts)
    return out.select(table.arrow_schema.names).cast(table.arrow_schema)
