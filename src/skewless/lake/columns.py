"""How far a column of an Iceberg table holds values, read from the table's metadata alone (no data file opened).

A column added to a table by schema evolution reads null in every row of the data files written before it existed:
those files carry no statistics for its field id. A file written with the column carries its value and null counts.
:func:`column_fill` sums them over the data files of a snapshot (optionally only the files a row filter can match),
which tells apart "no such column", "a history that was never computed" (files without the column) and "computed,
and null" — what :mod:`skewless.features.build` backfills, what materialization refuses and what
``skewless status`` and ``skewless parity`` name (ADR 0019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table


@dataclass(frozen=True)
class ColumnFill:
    """One column over the data files of one snapshot (or those a row filter keeps)."""

    name: str
    #: The column is in the schema of that snapshot.
    exists: bool
    #: Rows in the files considered.
    rows: int = 0
    #: Non-null values in the files that hold the column.
    values: int = 0
    #: Files written before the column existed (their rows read null: a history never computed), and all files.
    files_without: int = 0
    files: int = 0

    @property
    def uncomputed_rows(self) -> bool:
        """Some rows come from files written before the column existed."""
        return self.files_without > 0

    @property
    def all_null(self) -> bool:
        """There are rows, and none holds a value of the column."""
        return self.rows > 0 and self.values == 0


def column_fill(table: "Table", names: Iterable[str], snapshot_id: int | None = None,
                row_filter: "BooleanExpression | None" = None) -> dict[str, ColumnFill]:
    """The :class:`ColumnFill` of each column ``names`` at ``snapshot_id`` (default: the current snapshot)."""
    from pyiceberg.expressions import AlwaysTrue

    names = list(dict.fromkeys(names))
    current = table.current_snapshot()
    snap = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else current
    schema = table.schema()  # the current snapshot is read with the current schema (as pyiceberg reads it)
    if snap is not None and current is not None and snap.snapshot_id != current.snapshot_id \
            and snap.schema_id is not None:
        schema = table.schemas().get(snap.schema_id, schema)
    ids = {f.name: f.field_id for f in schema.fields}
    if snap is None:
        return {n: ColumnFill(n, n in ids) for n in names}
    rows, files = 0, 0
    values = dict.fromkeys(names, 0)
    without = dict.fromkeys(names, 0)
    for task in table.scan(row_filter=row_filter or AlwaysTrue(), snapshot_id=snap.snapshot_id).plan_files():
        f = task.file
        rows += f.record_count
        files += 1
        counts, nulls = f.value_counts or {}, f.null_value_counts or {}
        for n in names:
            fid = ids.get(n)
            if fid is None:
                continue
            if fid not in counts:
                without[n] += 1
            else:
                values[n] += counts[fid] - nulls.get(fid, 0)
    return {n: ColumnFill(n, n in ids, rows, values[n], without[n] if n in ids else files, files) for n in names}
