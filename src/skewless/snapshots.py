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
    :func:`read_iceberg_source` does the whole read of a Feast ``IcebergSource`` for stores that want it.
    An offline store class that does this declares ``honours_snapshot_pins = True``.

Feast's stock DuckDB offline store reads Iceberg through a module-level function it hands to its ibis helpers as
the ``data_source_reader`` callback. :class:`PinnedDuckDBOfflineStore` is the same store with that callback
replaced by :func:`read_iceberg_source` (a subclass, no patching). Select it in a ``feature_store.yaml`` with
``offline_store: {type: skewless.snapshots.PinnedDuckDBOfflineStore}``, or let :func:`pinnable` derive such a
store from one whose yaml names the stock ``duckdb`` store.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping

from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.data_source import DataSource
    from ibis.expr.types import Table as IbisTable
    from pyiceberg.table import Table


class SnapshotPinError(RuntimeError):
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
                "skewless.snapshots pins (see that module), so the rows may come from the current snapshot"
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


def _load_source_table(source: Any) -> "Table":
    """Load a Feast ``IcebergSource``'s pyiceberg table, resolving the catalog as Feast's DuckDB store does."""
    fqn = f"{source.namespace}.{source.iceberg_table}"
    if source.catalog_type != "rest":
        return source.get_catalog_client().load_table(fqn)
    import os

    from pyiceberg.catalog import load_catalog

    config: dict[str, str] = {"type": "rest", "uri": source.endpoint, "warehouse": source.warehouse}
    if source.token_env_var and os.environ.get(source.token_env_var):
        config["token"] = os.environ[source.token_env_var]
    return load_catalog(source.catalog_name, **config).load_table(fqn)


def read_iceberg_source(source: Any):
    """Arrow rows of a Feast ``IcebergSource`` at the snapshot :func:`snapshot_to_read` chooses."""
    table = _load_source_table(source)
    snap = snapshot_to_read(f"{source.namespace}.{source.iceberg_table}", table)
    if snap is None:
        return table.schema().as_arrow().empty_table()
    return table.scan(snapshot_id=snap).to_arrow()


def _read_data_source(data_source: "DataSource", repo_path: str) -> "IbisTable":
    """Feast DuckDB ``data_source_reader`` that honours pins for Iceberg sources (others: Feast's reader)."""
    import ibis
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
    from feast.infra.offline_stores import duckdb as feast_duckdb

    if isinstance(data_source, IcebergSource):
        return ibis.memtable(read_iceberg_source(data_source))
    return feast_duckdb._read_data_source(data_source, repo_path)


class PinnedDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Config of :class:`PinnedDuckDBOfflineStore` (same options as Feast's ``duckdb`` offline store)."""

    type: Literal["skewless.snapshots.PinnedDuckDBOfflineStore"] = "skewless.snapshots.PinnedDuckDBOfflineStore"


class PinnedDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store, reading Iceberg sources at the pinned snapshots and recording the reads."""

    honours_snapshot_pins = True

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names=False, filter_by_created_timestamp=False):
        """Same as the DuckDB store's, with the pin-honouring Iceberg reader."""
        from feast.infra.offline_stores import duckdb as feast_duckdb
        from feast.infra.offline_stores.ibis import get_historical_features_ibis

        feast_duckdb._validate_lance_feature_views(feature_views)
        return get_historical_features_ibis(
            config=config, feature_views=feature_views, feature_refs=feature_refs, entity_df=entity_df,
            registry=registry, project=project, full_feature_names=full_feature_names,
            data_source_reader=_read_data_source, data_source_writer=feast_duckdb._write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            filter_by_created_timestamp=filter_by_created_timestamp,
        )

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                        timestamp_field, created_timestamp_column, start_date, end_date):
        """Same as the DuckDB store's, with the pin-honouring Iceberg reader."""
        from feast.infra.offline_stores import duckdb as feast_duckdb
        from feast.infra.offline_stores.ibis import pull_latest_from_table_or_query_ibis

        return pull_latest_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
            data_source_reader=_read_data_source, data_source_writer=feast_duckdb._write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
        )

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                     timestamp_field, created_timestamp_column=None, start_date=None,
                                     end_date=None):
        """Same as the DuckDB store's, with the pin-honouring Iceberg reader."""
        from feast.infra.offline_stores import duckdb as feast_duckdb
        from feast.infra.offline_stores.ibis import pull_all_from_table_or_query_ibis

        return pull_all_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
            data_source_reader=_read_data_source, data_source_writer=feast_duckdb._write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
        )


def offline_store_class(store: "FeatureStore") -> type:
    """The offline store class a FeatureStore's config selects."""
    from feast.repo_config import get_offline_store_type
    from feast.importer import import_class

    module, name = get_offline_store_type(store.config.offline_store.type).rsplit(".", 1)
    return import_class(module, name, "OfflineStore")


def pinnable(store: "FeatureStore") -> "FeatureStore":
    """A FeatureStore over the same repository and config whose offline store honours snapshot pins.

    ``store`` itself when its offline store declares ``honours_snapshot_pins``; for Feast's stock ``duckdb``
    store, a store whose config differs only in selecting :class:`PinnedDuckDBOfflineStore` (same options);
    any other offline store is refused, with an error that names it.
    """
    from feast import FeatureStore

    cls = offline_store_class(store)
    if getattr(cls, "honours_snapshot_pins", False):
        return store
    if cls is not DuckDBOfflineStore:
        raise SnapshotPinError(
            f"offline store {cls.__module__}.{cls.__name__} does not honour skewless.snapshots pins; "
            "it must call skewless.snapshots.snapshot_to_read and declare honours_snapshot_pins = True"
        )
    options = store.config.offline_store.model_dump(exclude={"type"})
    config = store.config.model_copy()
    config.offline_config = PinnedDuckDBOfflineStoreConfig(**options)
    config._offline_store = None
    return FeatureStore(repo_path=str(store.repo_path), config=config)
