"""Stage 2 — features: definitions (:mod:`.definitions`, the only place a feature is declared) apart from the
engines that compute them (:mod:`.build` with DuckDB, :mod:`.spark` on Spark).

``from skewless import features`` gives both through the names below.
"""

from skewless.features.build import (
    BUILT_THROUGH,
    COMMITS_SNAPSHOT,
    MIN_EVENT_DAY,
    ONLINE_SNAPSHOT,
    VARIANT_EVENT_TIMES,
    BuildResult,
    FeatureTableChangeError,
    build,
    build_table,
    build_variant,
    built_through,
    commits_arrow,
    compute,
    connect,
    day_start,
    engine_compute,
    restart_day,
    schema_changes,
    variant_identifier,
)
from skewless.features.definitions import (
    AUTHOR_ACTIVITY,
    AUTHOR_SQL,
    REPO_ACTIVITY,
    REPO_SQL,
    TABLES,
    Feature,
    FeatureTable,
)

__all__ = [
    "AUTHOR_ACTIVITY", "AUTHOR_SQL", "BUILT_THROUGH", "COMMITS_SNAPSHOT", "MIN_EVENT_DAY", "ONLINE_SNAPSHOT",
    "REPO_ACTIVITY", "REPO_SQL", "TABLES", "VARIANT_EVENT_TIMES", "BuildResult", "Feature", "FeatureTable",
    "FeatureTableChangeError", "build", "build_table", "build_variant", "built_through", "commits_arrow", "compute",
    "connect", "day_start", "engine_compute", "restart_day", "schema_changes", "variant_identifier",
]
