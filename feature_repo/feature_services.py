"""Feature services: the versioned contracts models are trained and served with.

Each service lists its features by name (``skewless.features.definitions``: ``NEXT_WEEK_COMMITS_V1``...), never a
whole view, so a feature added to a view joins no existing service (ADR 0020). A change that removes, renames or
retypes a feature of a service in use gets a new `_v2` service instead.
"""

from feast import FeatureService

from author_features import author_activity_fv
from live_features import repo_activity_live_fv
from repo_features import repo_activity_fv
from skewless.feast_ext.schema import projections
from skewless.features.definitions import AUTHOR_PROFILE_V1, NEXT_WEEK_COMMITS_LIVE_V1, NEXT_WEEK_COMMITS_V1

next_week_commits_v1 = FeatureService(
    name=NEXT_WEEK_COMMITS_V1.name,
    features=projections(NEXT_WEEK_COMMITS_V1, repo_activity_fv),
    description="Features of the next-week-commits model: a repository's recent activity.",
    owner="ml@skewless.dev",
    tags={"model": "next_week_commits"},
)

author_profile_v1 = FeatureService(
    name=AUTHOR_PROFILE_V1.name,
    features=projections(AUTHOR_PROFILE_V1, author_activity_fv),
    description="Author activity profile (personal data: restricted).",
    owner="platform@skewless.dev",
    tags={"pii": "pseudonymous"},
)

next_week_commits_live_v1 = FeatureService(
    name=NEXT_WEEK_COMMITS_LIVE_V1.name,
    features=projections(NEXT_WEEK_COMMITS_LIVE_V1, repo_activity_live_fv),
    description="Fresh features of the next-week-commits model: a repository's activity up to the request instant.",
    owner="ml@skewless.dev",
    tags={"freshness": "stream"},  # no "model" tag: no registered model uses it yet (the feature guard reads it)
)
