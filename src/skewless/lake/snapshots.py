"""Pin the Iceberg snapshots that Feast reads, and record the snapshots it actually read.

Training must be reproducible from what it logged: the Iceberg snapshot id of every table it read. Feast's
``get_historical_features`` reads a source's *current* snapshot, so this module adds one small contract between
callers and offline stores, carried by a context variable (no global state, safe across threads and asyncio):

Callers
    ``with pinned_snapshots({"features.repo_activity": 123}) as reads: store.get_historical_features(...)``
    reads that table at snapshot 123; a table that is not pinned is read at its current snapshot. Either way
    ``reads.snapshots`` afterwards maps every Iceberg table the offline store read to the snapshot id it read,
    and :meth:`SnapshotReads.check` raises if a pin was not honoured (an offline store that ignores this contract
    would otherwise silently return current data).

Offline stores
    Before scanning an Iceberg table, call :func:`snapshot_to_read` with the table's identifier and the loaded
    pyiceberg table; scan the snapshot id it returns (``None``: the table has no snapshot yet).
    :func:`skewless.feast_ext.pinned.read_iceberg_source` does the whole read of a Feast ``IcebergSource``.
    An offline store class that does this declares ``honours_snapshot_pins = True``.

Feast's stock DuckDB store made to honour pins: :mod:`skewless.feast_ext.pinned`.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping

from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from pyiceberg.table import Table


class SnapshotPinError(SkewlessError, RuntimeError):
    """A snapshot pin names an unknown snapshot, or the offline store did not honour it."""


@dataclass
class SnapshotReads:
    """The pins of one ``pinned_snapshots`` block and the snapshots the offline store reported reading in it."""

    pins: dict[str, int]
    snapshots: dict[str, int | None] = field(default_factory=dict)

    def check(self) -> dict[str, int | None]:
        """Raise unless every pinned table was read (at its pin); return the snapshots read."""
        missing = sorted(set(self.pins) - set(self.snapshots))
        if missing:
            raise SnapshotPinError(
                f"the offline store did not report reading {', '.join(missing)}: it does not honour "
                "skewless.lake.snapshots pins (see that module), so the rows may come from the current snapshot"
            )
        return dict(self.snapshots)


_ACTIVE: contextvars.ContextVar[SnapshotReads | None] = contextvars.ContextVar("skewless_snapshot_pins",
                                                                                  default=None)


@contextlib.contextmanager
def pinned_snapshots(pins: Mapping[str, int] | None = None) -> Iterator[SnapshotReads]:
    """Read the given Iceberg tables (``namespace.table`` -> snapshot id) at those snapshots inside the block.

    With no pins the block only records the snapshots read. Blocks nest: an inner block sees the outer pins,
    overridden by its own, and what it reads is reported to the outer block too.
    """
    clean: dict[str, int] = {}
    for ident, snap in (pins or {}).items():
        if not isinstance(ident, str) or ident.count(".") != 1:
            raise SnapshotPinError(f"snapshot pin key {ident!r} is not an Iceberg identifier 'namespace.table'")
        if isinstance(snap, bool) or not isinstance(snap, int):
            raise SnapshotPinError(f"snapshot pin {ident}={snap!r} is not an integer snapshot id")
        clean[ident] = snap
    outer = _ACTIVE.get()
    reads = SnapshotReads({**(outer.pins if outer else {}), **clean})
    token = _ACTIVE.set(reads)
    try:
        yield reads
    finally:
        _ACTIVE.reset(token)
        if outer is not None:
            outer.snapshots.update(reads.snapshots)


def snapshot_to_read(identifier: str, table: "Table") -> int | None:
    """The snapshot id an offline store must scan for ``identifier`` (pinned, else current); records the read."""
    reads = _ACTIVE.get()
    pin = reads.pins.get(identifier) if reads else None
    if pin is not None:
        if table.snapshot_by_id(pin) is None:
            raise SnapshotPinError(f"Iceberg table {identifier} has no snapshot {pin} (expired, or another "
                                   "lakehouse); it cannot be read as pinned")
        snap: int | None = pin
    else:
        current = table.current_snapshot()
        snap = current.snapshot_id if current else None
    if reads is not None:
        reads.snapshots[identifier] = snap
    return snap
