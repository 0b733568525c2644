"""Feature views keyed by repository."""

from datetime import timedelta

from feast import FeatureView

from entities import repo
from skewless.feast_ext.schema import fields_of
from skewless.features.definitions import REPO_ACTIVITY
from sources import repo_activity_source

repo_activity_fv = FeatureView(
    name=REPO_ACTIVITY.name,
    entities=[repo],
    # No TTL: the contract promises that after `materialize --until DAY` the online store serves the values as of
    # DAY whenever it is read, and online reads apply the same TTL rule as the offline join (skewless.feast_ext.ttl),
    # so any finite TTL would null a past DAY online. Staleness is caught by the freshness SLO (tags below) and the
    # exporter's event-time age of the online values, not hidden by a TTL.
    ttl=timedelta(0),
    schema=fields_of(REPO_ACTIVITY),
    source=repo_activity_source,
    online=True,
    description=REPO_ACTIVITY.description,
    owner="platform@skewless.dev",
    tags={
        "freshness_slo_seconds": str(26 * 3600),
        "freshness_objective": "0.99",
        "freshness_window_days": "28",
        "schedule": "daily",
        "tier": "1",
    },
)
