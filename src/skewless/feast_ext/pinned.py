"""Feast's stock DuckDB offline store made to honour :mod:`skewless.lake.snapshots` pins.

Feast's DuckDB offline store reads Iceberg through a module-level function it hands to its ibis helpers as the
``data_source_reader`` callback. :class:`PinnedDuckDBOfflineStore` is the same store with that callback replaced by
:func:`read_iceberg_source` (a subclass, no patching). Select it in a ``feature_store.yaml`` with
``offline_store: {type: skewless.feast_ext.pinned.PinnedDuckDBOfflineStore}``, or let :func:`pinnable` derive such
a store from one whose yaml names the stock ``duckdb`` store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig

from skewless.lake.snapshots import SnapshotPinError, snapshot_to_read

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.data_source import DataSource
    from ibis.expr.types import Table as IbisTable
    from pyiceberg.table import Table


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


def _ibis_io(config) -> dict[str, Any]:
    """The reader, writer and staging arguments every ibis helper of Feast's DuckDB store takes, with the reader
    replaced by the pin-honouring one."""
    from feast.infra.offline_stores import duckdb as feast_duckdb

    return dict(data_source_reader=_read_data_source, data_source_writer=feast_duckdb._write_data_source,
                staging_location=config.offline_store.staging_location,
                staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override)


class PinnedDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Config of :class:`PinnedDuckDBOfflineStore` (same options as Feast's ``duckdb`` offline store)."""

    type: Literal["skewless.feast_ext.pinned.PinnedDuckDBOfflineStore"] = (
        "skewless.feast_ext.pinned.PinnedDuckDBOfflineStore")


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
            filter_by_created_timestamp=filter_by_created_timestamp, **_ibis_io(config),
        )

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                        timestamp_field, created_timestamp_column, start_date, end_date):
        """Same as the DuckDB store's, with the pin-honouring Iceberg reader."""
        from feast.infra.offline_stores.ibis import pull_latest_from_table_or_query_ibis

        return pull_latest_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
            **_ibis_io(config),
        )

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                     timestamp_field, created_timestamp_column=None, start_date=None,
                                     end_date=None):
        """Same as the DuckDB store's, with the pin-honouring Iceberg reader."""
        from feast.infra.offline_stores.ibis import pull_all_from_table_or_query_ibis

        return pull_all_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
            **_ibis_io(config),
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
            f"offline store {cls.__module__}.{cls.__name__} does not honour skewless.lake.snapshots pins; "
            "it must call skewless.lake.snapshots.snapshot_to_read and declare honours_snapshot_pins = True"
        )
    options = store.config.offline_store.model_dump(exclude={"type"})
    config = store.config.model_copy()
    config.offline_config = PinnedDuckDBOfflineStoreConfig(**options)
    config._offline_store = None
    return FeatureStore(repo_path=str(store.repo_path), config=config)
