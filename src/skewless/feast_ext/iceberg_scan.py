"""Pinned, filtered, projected scans of Iceberg tables, read by DuckDB.

Feast's own DuckDB offline store reads an ``IcebergSource`` with ``table.scan().to_arrow()``: every column of every
row of the current snapshot, in memory, before any filter. :class:`IcebergScan` is the replacement used by
:mod:`skewless.feast_ext.offline`:

* **Planning goes through pyiceberg** — ``table.scan(row_filter=..., selected_fields=..., snapshot_id=...)`` — so
  the snapshot is pinned once per retrieval, partition and column-metrics pruning drop whole files, and only the
  requested columns are read.
* **Reading** has two executors with identical results:

  ``native``
      DuckDB reads the planned Parquet data files itself (multi-threaded, streaming, with row-group statistics
      pruning), mapping columns by Iceberg *field id* through ``read_parquet(..., schema=MAP{...})`` — so renamed,
      added and dropped columns resolve exactly as Iceberg defines them. Used when every planned file is a local
      Parquet file without delete files and every projected column has a primitive type DuckDB maps 1:1.
  ``pyiceberg``
      pyiceberg's Arrow reader (``to_arrow_batch_reader``: delete files, name mapping, any file system, nested
      types), streamed batch by batch into DuckDB. The fallback for everything the native executor does not
      cover, so correctness never depends on the fast path.

The same row filter is also applied in the DuckDB query by the callers, so both executors return the same rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.schema import Schema
    from pyiceberg.table import FileScanTask, Table

    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

log = logging.getLogger(__name__)

NATIVE = "native"
PYICEBERG = "pyiceberg"


def quote(identifier: str) -> str:
    """A DuckDB identifier, quoted."""
    return '"' + identifier.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"


def load_table(source: "IcebergSource") -> "Table":
    """The pyiceberg table behind a Feast ``IcebergSource`` (catalog resolved exactly as Feast resolves it)."""
    # Feast's helper holds the catalog resolution rules (REST token variable, catalog properties...); reusing it
    # keeps this store reading the very table Feast's own DuckDB store would read.
    from feast.infra.offline_stores.duckdb import _load_pyiceberg_table_for_write

    return _load_pyiceberg_table_for_write(source)


def pinned_snapshot_id(table: "Table", identifier: str) -> int | None:
    """The snapshot to read: the one pinned for ``identifier`` through :mod:`skewless.lake.snapshots`, else the current.

    The snapshot is chosen once per scan, so every file of one retrieval comes from the same snapshot even if a
    writer commits meanwhile; the read is reported to an enclosing ``skewless.lake.snapshots.pinned_snapshots`` block.
    """
    try:
        from skewless.lake.snapshots import snapshot_to_read
    except ImportError:  # the module is optional for this store: without it, read the current snapshot
        snap = table.current_snapshot()
        return snap.snapshot_id if snap else None
    return snapshot_to_read(identifier, table)


# --- Iceberg type -> DuckDB type (primitive types the native executor reads 1:1) ------------------------------------
def _duckdb_type(iceberg_type: Any) -> str | None:
    from pyiceberg import types as it

    simple = {
        it.BooleanType: "BOOLEAN",
        it.IntegerType: "INTEGER",
        it.LongType: "BIGINT",
        it.FloatType: "FLOAT",
        it.DoubleType: "DOUBLE",
        it.DateType: "DATE",
        it.TimeType: "TIME",
        it.TimestampType: "TIMESTAMP",
        it.TimestamptzType: "TIMESTAMPTZ",
        it.StringType: "VARCHAR",
        it.BinaryType: "BLOB",
    }
    for cls, name in simple.items():
        if isinstance(iceberg_type, cls):
            return name
    if isinstance(iceberg_type, it.DecimalType):
        return f"DECIMAL({iceberg_type.precision}, {iceberg_type.scale})"
    return None  # nested, UUID, fixed, nanosecond timestamps, geo...: pyiceberg reads them


@dataclass
class IcebergScan:
    """One pinned, filtered, projected scan of an Iceberg table, ready to be registered in a DuckDB connection.

    Build it with :meth:`plan`. ``columns`` are Iceberg column names; ``row_filter`` is a pyiceberg expression used
    for file pruning (and row filtering by the pyiceberg executor).
    """

    table: "Table"
    identifier: str
    snapshot_id: int | None
    columns: tuple[str, ...]
    row_filter: "BooleanExpression"
    allow_native: bool = True
    executor: str | None = field(default=None, init=False)
    fallback_reason: str | None = field(default=None, init=False)

    @classmethod
    def plan(cls, source: "IcebergSource", columns: Sequence[str], row_filter: "BooleanExpression | None" = None,
             allow_native: bool = True) -> "IcebergScan":
        """Load the source's table, pin its snapshot and keep only the conjuncts of ``row_filter`` that bind."""
        from pyiceberg.expressions import AlwaysTrue

        table = load_table(source)
        identifier = f"{source.namespace}.{source.iceberg_table}"
        missing = [c for c in columns if c not in {f.name for f in table.schema().fields}]
        if missing:
            raise ValueError(f"Iceberg table {identifier} has no column(s) {', '.join(missing)} "
                             f"(it has {', '.join(f.name for f in table.schema().fields)})")
        snap = pinned_snapshot_id(table, identifier)
        scan = cls(table, identifier, snap, tuple(dict.fromkeys(columns)), AlwaysTrue(), allow_native)
        scan.row_filter = scan._bindable(row_filter) if row_filter is not None else AlwaysTrue()
        return scan

    # --- planning ------------------------------------------------------------------------------------------------
    def _bindable(self, expr: "BooleanExpression") -> "BooleanExpression":
        """``expr`` if it binds to the scanned schema, else its bindable conjuncts (pruning is an optimisation)."""
        from pyiceberg.expressions import AlwaysTrue, And
        from pyiceberg.expressions.visitors import bind

        schema = self._schema()
        try:
            bind(schema, expr, case_sensitive=True)
            return expr
        except Exception:  # noqa: BLE001 - a filter that does not bind only loses pruning, never rows
            pass
        if isinstance(expr, And):
            left, right = self._bindable(expr.left), self._bindable(expr.right)
            return And(left, right)
        log.debug("row filter %s does not bind to %s; not pushed down", expr, self.identifier)
        return AlwaysTrue()

    def _scan(self):
        return self.table.scan(row_filter=self.row_filter, selected_fields=self.columns, snapshot_id=self.snapshot_id)

    def _schema(self) -> "Schema":
        return self.table.scan(selected_fields=self.columns, snapshot_id=self.snapshot_id).projection()

    def tasks(self) -> list["FileScanTask"]:
        """The data files this scan reads (after partition and metrics pruning)."""
        if self.snapshot_id is None:
            return []
        return list(self._scan().plan_files())

    def _native_paths(self, tasks: Iterable["FileScanTask"]) -> list[str] | None:
        """Local paths of the planned files, or None (with ``fallback_reason`` set) if DuckDB cannot read them."""
        from pyiceberg.manifest import FileFormat
        from pyiceberg.transforms import IdentityTransform

        if not self.allow_native:
            self.fallback_reason = "native reads disabled in the store config"
            return None
        if self.table.metadata.name_mapping() is not None:
            self.fallback_reason = "table has a name mapping (files without field ids)"
            return None
        schema = self._schema()
        for f in schema.fields:
            if _duckdb_type(f.field_type) is None:
                self.fallback_reason = f"column {f.name} has type {f.field_type}"
                return None
            if f.initial_default is not None:
                self.fallback_reason = f"column {f.name} has an initial default"
                return None
        for spec in self.table.metadata.partition_specs:
            for pf in spec.fields:
                if isinstance(pf.transform, IdentityTransform) and pf.source_id in {f.field_id for f in schema.fields}:
                    self.fallback_reason = "identity-partitioned column (may be absent from data files)"
                    return None
        paths = []
        for task in tasks:
            if task.delete_files:
                self.fallback_reason = "delete files"
                return None
            if task.file.file_format != FileFormat.PARQUET:
                self.fallback_reason = f"{task.file.file_format} data file"
                return None
            parsed = urlparse(task.file.file_path)
            if parsed.scheme not in ("", "file"):
                self.fallback_reason = f"{parsed.scheme}:// data file"
                return None
            paths.append(unquote(parsed.path) if parsed.scheme == "file" else task.file.file_path)
        return paths

    # --- reading -------------------------------------------------------------------------------------------------
    def relation_sql(self, paths: list[str]) -> str:
        """``SELECT`` of the projected columns from the planned Parquet files, columns mapped by field id."""
        schema = self._schema()
        cols = ", ".join(quote(f.name) for f in schema.fields)
        if not paths:
            typed = ", ".join(f"NULL::{_duckdb_type(f.field_type)} AS {quote(f.name)}" for f in schema.fields)
            return f"SELECT {typed} WHERE false"
        mapping = ", ".join(
            f"{f.field_id}: {{name: {sql_string(f.name)}, type: {sql_string(_duckdb_type(f.field_type) or '')}, "
            "default_value: NULL}"
            for f in schema.fields
        )
        files = "[" + ", ".join(sql_string(p) for p in paths) + "]"
        return (f"SELECT {cols} FROM read_parquet({files}, schema = MAP {{{mapping}}}, "
                "hive_partitioning = false, union_by_name = false)")

    def register(self, con: "duckdb.DuckDBPyConnection", name: str) -> str:
        """Make the scan queryable as ``name`` in ``con``; returns the executor used (``native``/``pyiceberg``).

        A ``pyiceberg`` registration is a one-pass stream: query it once.
        """
        tasks = self.tasks()
        paths = self._native_paths(tasks)
        if paths is not None:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS {self.relation_sql(paths)}")
            self.executor = NATIVE
        else:
            log.info("reading %s through pyiceberg: %s", self.identifier, self.fallback_reason)
            con.register(name, self.arrow_reader())
            self.executor = PYICEBERG
        return self.executor

    def arrow_reader(self):
        """The scan as an Arrow ``RecordBatchReader`` (pyiceberg's reader; an empty one for an empty table)."""
        import pyarrow as pa
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        if self.snapshot_id is None:
            schema = schema_to_pyarrow(self._schema(), include_field_ids=False)
            return pa.RecordBatchReader.from_batches(schema, [])
        return self._scan().to_arrow_batch_reader()


def timestamp_bounds_filter(column: str, lower: Any | None, upper: Any | None) -> "BooleanExpression":
    """``lower <= column <= upper`` as a pyiceberg expression (either bound optional)."""
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThanOrEqual

    expr: BooleanExpression = AlwaysTrue()
    if lower is not None:
        expr = And(expr, GreaterThanOrEqual(column, lower))
    if upper is not None:
        expr = And(expr, LessThanOrEqual(column, upper))
    return expr
