"""Iceberg sources: the feature tables that `skewless features build` writes.

The catalog location comes from the active profile (skewless.core.config.profile), never from this file.
"""

from skewless.core.config import FEATURES_NAMESPACE, profile
from skewless.feast_ext.sources import DefinedIcebergSource
from skewless.features.definitions import AUTHOR_ACTIVITY, REPO_ACTIVITY

_profile = profile()
_catalog = _profile.catalog_properties()


def _source(table_name: str, description: str) -> DefinedIcebergSource:
    # Feast's IcebergSource whose registry proto depends on this definition only: `feast plan` of an unchanged
    # repository reports no change (skewless/feast_ext/sources.py).
    return DefinedIcebergSource(
        name=f"{table_name}_source",
        catalog_type="sql",
        catalog_name=_profile.catalog_name,
        warehouse=_catalog["warehouse"],
        namespace=FEATURES_NAMESPACE,
        table=table_name,
        catalog_properties={"uri": _catalog["uri"]},
        timestamp_field="event_timestamp",
        description=description,
        owner="platform@skewless.dev",
        tags={"built_by": "skewless features build"},
    )


repo_activity_source = _source(REPO_ACTIVITY.name, REPO_ACTIVITY.description)
author_activity_source = _source(AUTHOR_ACTIVITY.name, AUTHOR_ACTIVITY.description)
