"""Live feature views: windows that end at the request instant, fed by the stream (ADR 0016)."""

from datetime import timedelta

from feast import FeatureView

from entities import repo
from skewless.feast_ext.schema import fields_of
from skewless.features.definitions import REPO_ACTIVITY_LIVE
from sources import commit_events_push

repo_activity_live_fv = FeatureView(
    name=REPO_ACTIVITY_LIVE.name,
    entities=[repo],
    ttl=timedelta(0),
    schema=fields_of(REPO_ACTIVITY_LIVE),
    source=commit_events_push,
    # Never materialized: the online store computes the windows at read time from the commit versions the stream
    # processor writes (skewless.feast_ext.live); `online=False` keeps `feast materialize` away from it.
    # get_online_features reads it like any other view.
    online=False,
    description=REPO_ACTIVITY_LIVE.description,
    owner="platform@skewless.dev",
    tags={
        "freshness": "stream",
        "schedule": "stream",
        "tier": "1",
    },
)
