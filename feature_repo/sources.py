"""Iceberg sources: the feature tables that `skewless features build` writes.

The catalog location comes from the active profile (skewless.core.config.profile), never from this file.
"""

from skewless.core.config import FEATURES_NAMESPACE, profile
from skewless.feast_ext.sources import DefinedIcebergSource, DefinedPushSource
from skewless.features.definitions import AUTHOR_ACTIVITY, REPO_ACTIVITY, REPO_ACTIVITY_LIVE

_profile = profile()
_catalog = _profile.catalog_properties()


def _source(table_name: str, description: str, namespace: str = FEATURES_NAMESPACE,
            timestamp_field: str = "event_timestamp", built_by: str = "skewless features build") -> DefinedIcebergSource:
    # Feast's IcebergSource whose registry proto depends on this definition only: `feast plan` of an unchanged
    # repository reports no change (skewless/feast_ext/sources.py).
    return DefinedIcebergSource(
        name=f"{table_name}_source",
        catalog_type="sql",
        catalog_name=_profile.catalog_name,
        warehouse=_catalog["warehouse"],
        namespace=namespace,
        table=table_name,
        catalog_properties={"uri": _catalog["uri"]},
        timestamp_field=timestamp_field,
        description=description,
        owner="platform@skewless.dev",
        tags={"built_by": built_by},
    )


repo_activity_source = _source(REPO_ACTIVITY.name, REPO_ACTIVITY.description)
author_activity_source = _source(AUTHOR_ACTIVITY.name, AUTHOR_ACTIVITY.description)

# The fresh path (ADR 0016): the commit events the stream processor applied, with the instant each became known.
_events_namespace, _events_table = REPO_ACTIVITY_LIVE.events.split(".")
commit_events_source = _source(_events_table, "Every commit event the stream processor applied (add / retract), "
                               "stamped with the instant it became known online (known_at).",
                               namespace=_events_namespace, timestamp_field="committed_at",
                               built_by="skewless stream run")
# Feast's PushSource names the stream that feeds the live view; its rows are commit events, not feature values, so
# they are sent with `skewless events push` (or the webhook), never with FeatureStore.push (the online store
# refuses finished values for a live view).
commit_events_push = DefinedPushSource(name="commit_events_push", batch_source=commit_events_source,
                                description="Commit events pushed to skewless's intake (skewless events push, webhook).")
