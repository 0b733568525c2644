"""Feature views keyed by author (pseudonymous personal data)."""

from datetime import timedelta

from feast import FeatureView

from entities import author
from skewless.feast_ext.schema import fields_of
from skewless.features.definitions import AUTHOR_ACTIVITY
from sources import author_activity_source

author_activity_fv = FeatureView(
    name=AUTHOR_ACTIVITY.name,
    entities=[author],
    # Rows are change points (the day after a commit, and Mondays for the streak): a value holds until the next
    # row, however far away, so the view has no TTL. Staleness is watched by the freshness SLO instead.
    ttl=timedelta(0),
    schema=fields_of(AUTHOR_ACTIVITY),
    source=author_activity_source,
    online=True,
    description=AUTHOR_ACTIVITY.description,
    owner="platform@skewless.dev",
    tags={
        "freshness_slo_seconds": str(8 * 24 * 3600),
        "freshness_objective": "0.99",
        "freshness_window_days": "28",
        "schedule": "daily",
        "tier": "2",
        "pii": "pseudonymous",
    },
)
