"""Feature definitions: every feature's name, type, meaning and the SQL that computes it — declared once here.

Engines (DuckDB in :mod:`skewless.features.build`, Spark in :mod:`skewless.features.spark`) run this SQL; the Feast
schema (:mod:`skewless.feast_ext.schema`), the feature repository, the README catalogue and the tests derive names
and types from these declarations. Nothing here touches data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa

from skewless.core.config import (COMMIT_EVENTS_TABLE, FEATURES_NAMESPACE, NEXT_WEEK_COMMITS_LIVE_SERVICE,
                                  NEXT_WEEK_COMMITS_SERVICE)


@dataclass(frozen=True)
class Feature:
    name: str
    arrow_type: pa.DataType
    description: str
    #: Null is one of its values (the description says when). A feature that is not nullable and holds no value in
    #: the rows of a materialization is refused there (ADR 0019); a nullable one is refused only when its values
    #: were never computed.
    nullable: bool = False


@dataclass(frozen=True)
class FeatureTable:
    """One feature view's table: its entity key, its features and the SQL that computes them."""

    name: str
    entity_key: str
    description: str
    features: tuple[Feature, ...]
    sql: str

    @property
    def identifier(self) -> str:
        return f"{FEATURES_NAMESPACE}.{self.name}"

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(self.entity_key, pa.string(), nullable=False),
             pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False)]
            + [pa.field(f.name, f.arrow_type) for f in self.features]
        )


# Inputs of every query: `c` (commits: naive UTC timestamps) and `targets(<key>, from_day)`: the entities to
# (re)compute and the first day D to emit for each; `$until` is the last day D to emit.
REPO_SQL = """
WITH first AS (
    SELECT repo, date_trunc('day', min(committed_at)) AS first_day FROM c GROUP BY repo
), days AS (
    SELECT repo, unnest(generate_series(greatest(first_day, t.from_day), $until, INTERVAL 1 DAY)) AS d
    FROM first JOIN targets t USING (repo)
    WHERE greatest(first_day, t.from_day) <= $until
), win AS (
    SELECT d.repo, d.d,
        count(c.committed_at) FILTER (WHERE c.committed_at >= d.d - INTERVAL 7 DAY) AS commits_last_7d,
        count(c.committed_at) AS commits_last_30d,
        count(DISTINCT c.author_id) AS active_authors_last_30d,
        coalesce(sum(c.lines_added::BIGINT + c.lines_deleted) FILTER (WHERE c.committed_at >= d.d - INTERVAL 7 DAY),
                 0) AS lines_changed_last_7d,
        avg(c.files_changed) FILTER (WHERE NOT c.is_merge) AS mean_files_per_commit_last_30d
    FROM days d LEFT JOIN c ON c.repo = d.repo AND c.committed_at >= d.d - INTERVAL 30 DAY AND c.committed_at < d.d
    GROUP BY d.repo, d.d
), last AS (
    SELECT d.repo, d.d, (epoch_us(d.d) - epoch_us(c.committed_at)) / 86400000000.0 AS days_since_last_commit
    FROM days d ASOF LEFT JOIN c ON d.repo = c.repo AND d.d > c.committed_at
)
SELECT win.repo, win.d AS event_timestamp,
    commits_last_7d::BIGINT AS commits_last_7d, commits_last_30d::BIGINT AS commits_last_30d,
    active_authors_last_30d::BIGINT AS active_authors_last_30d, lines_changed_last_7d::BIGINT AS lines_changed_last_7d,
    mean_files_per_commit_last_30d::DOUBLE AS mean_files_per_commit_last_30d,
    days_since_last_commit::DOUBLE AS days_since_last_commit
FROM win JOIN last USING (repo, d)
ORDER BY repo, event_timestamp
"""

AUTHOR_SQL = """
WITH commit_days AS (
    SELECT author_id, date_trunc('day', committed_at) AS day, count(*) AS n FROM c GROUP BY ALL
), cum_commits AS (
    SELECT author_id, day, sum(n) OVER (PARTITION BY author_id ORDER BY day) AS total FROM commit_days
), lang_first AS (
    SELECT author_id, lang, min(date_trunc('day', committed_at)) AS day
    FROM (SELECT author_id, committed_at, unnest(languages) AS lang FROM c)
    WHERE lang <> 'Other' GROUP BY ALL
), cum_langs AS (
    SELECT author_id, day, sum(count(*)) OVER (PARTITION BY author_id ORDER BY day) AS langs
    FROM lang_first GROUP BY author_id, day
), weeks AS (
    SELECT DISTINCT author_id, date_trunc('week', committed_at) AS wk FROM c
), runs AS (
    SELECT author_id, wk, row_number() OVER (PARTITION BY author_id, grp ORDER BY wk) AS run_len
    FROM (SELECT author_id, wk,
                 wk - to_days(7 * row_number() OVER (PARTITION BY author_id ORDER BY wk)::INTEGER) AS grp FROM weeks)
), points AS (
    SELECT author_id, min(day) AS d FROM commit_days GROUP BY author_id
    UNION SELECT author_id, day + INTERVAL 1 DAY FROM commit_days
    UNION SELECT author_id, wk + INTERVAL 7 DAY FROM weeks
    UNION SELECT author_id, wk + INTERVAL 14 DAY FROM weeks
), wanted AS (
    SELECT p.author_id, p.d FROM points p JOIN targets t USING (author_id) WHERE p.d >= t.from_day AND p.d <= $until
), with_total AS (
    SELECT w.author_id, w.d, coalesce(cc.total, 0) AS commits_total
    FROM wanted w ASOF LEFT JOIN cum_commits cc ON w.author_id = cc.author_id AND w.d > cc.day
), with_langs AS (
    SELECT w.author_id, w.d, w.commits_total, coalesce(cl.langs, 0) AS langs_used
    FROM with_total w ASOF LEFT JOIN cum_langs cl ON w.author_id = cl.author_id AND w.d > cl.day
)
SELECT w.author_id, w.d AS event_timestamp, w.commits_total::BIGINT AS commits_total,
    w.langs_used::BIGINT AS langs_used, coalesce(r.run_len, 0)::BIGINT AS weekly_streak
FROM with_langs w LEFT JOIN runs r ON r.author_id = w.author_id AND r.wk = date_trunc('week', w.d) - INTERVAL 7 DAY
ORDER BY author_id, event_timestamp
"""

REPO_ACTIVITY = FeatureTable(
    name="repo_activity",
    entity_key="repo",
    description="Commit activity of a repository over trailing UTC-day windows that end at the start of the day.",
    features=(
        Feature("commits_last_7d", pa.int64(), "commits with committed_at in [D-7d, D)"),
        Feature("commits_last_30d", pa.int64(), "commits with committed_at in [D-30d, D)"),
        Feature("active_authors_last_30d", pa.int64(), "distinct author_id with a commit in [D-30d, D)"),
        Feature("lines_changed_last_7d", pa.int64(), "sum of lines_added + lines_deleted of commits in [D-7d, D)"),
        Feature("mean_files_per_commit_last_30d", pa.float64(),
                "mean files_changed over non-merge commits in [D-30d, D); null if there are none", nullable=True),
        Feature("days_since_last_commit", pa.float64(),
                "D minus the last committed_at before D, in days; null if there is none", nullable=True),
    ),
    sql=REPO_SQL,
)

AUTHOR_ACTIVITY = FeatureTable(
    name="author_activity",
    entity_key="author_id",
    description="Lifetime activity of a (pseudonymous) author across all repositories, as of the start of the day.",
    features=(
        Feature("commits_total", pa.int64(), "all the author's commits with committed_at before D"),
        Feature("langs_used", pa.int64(), "distinct languages (\"Other\" excluded) of those commits"),
        Feature("weekly_streak", pa.int64(),
                "consecutive Monday-start UTC weeks with >= 1 commit, counting back from the week ending at the "
                "Monday 00:00 on or before D"),
    ),
    sql=AUTHOR_SQL,
)

TABLES: tuple[FeatureTable, ...] = (REPO_ACTIVITY, AUTHOR_ACTIVITY)


# --- fresh features: windows that end at the request instant, fed by the stream (ADR 0016) ------------------------
@dataclass(frozen=True)
class WindowFeature:
    """A feature of a live view: an aggregation over the commits of the entity as known at the instant T.

    ``aggregation`` is ``count`` (commits with committed_at in [T - window, T)), ``count_distinct`` (distinct
    ``column`` over those commits) or ``seconds_since_last`` (T minus the newest committed_at before T; null if none,
    ``window`` None). Both engines derive from these fields: the online read evaluates them in Python at read time
    (:mod:`skewless.feast_ext.live`), the offline store in one DuckDB query.
    """

    name: str
    arrow_type: pa.DataType
    description: str
    aggregation: str
    window: timedelta | None = None
    column: str | None = None


@dataclass(frozen=True)
class LiveTable:
    """A live feature view: its entity key, its window features and the event table it is computed from."""

    name: str
    entity_key: str
    description: str
    features: tuple[WindowFeature, ...]
    events: str

    @property
    def longest_window(self) -> timedelta:
        return max(f.window for f in self.features if f.window is not None)


REPO_ACTIVITY_LIVE = LiveTable(
    name="repo_activity_live",
    entity_key="repo",
    description=("Commit activity of a repository over windows ending at the request instant T, as known at T: a "
                 "commit counts iff committed_at < T and the stream processor had applied it by T (bitemporal)."),
    features=(
        WindowFeature("commits_last_1h", pa.int64(), "commits with committed_at in [T-1h, T), as known at T",
                      "count", timedelta(hours=1)),
        WindowFeature("commits_last_24h", pa.int64(), "commits with committed_at in [T-24h, T), as known at T",
                      "count", timedelta(hours=24)),
        WindowFeature("commits_last_7d_live", pa.int64(), "commits with committed_at in [T-7d, T), as known at T",
                      "count", timedelta(days=7)),
        WindowFeature("active_authors_last_24h", pa.int64(),
                      "distinct author_id with a commit in [T-24h, T), as known at T", "count_distinct",
                      timedelta(hours=24), "author_id"),
        WindowFeature("seconds_since_last_commit", pa.float64(),
                      "T minus the newest committed_at before T, in seconds, as known at T; null if there is none",
                      "seconds_since_last"),
    ),
    events=COMMIT_EVENTS_TABLE,
)

LIVE_TABLES: tuple[LiveTable, ...] = (REPO_ACTIVITY_LIVE,)



# --- feature services: each lists its features by name, fixed here once (ADR 0020) ----------------------------------
@dataclass(frozen=True)
class ServiceFeatures:
    """The features of one feature service, listed by name per view: the one place that list is written.

    A service never selects a whole view: a feature added to a view joins no existing service, so a model version
    trained on a service keeps being served exactly the features it was trained on. A new list is a new service
    (``next_week_commits_v2``). ``feature_repo/feature_services.py`` derives the Feast projections from these.
    """

    name: str
    views: tuple[tuple[FeatureTable | LiveTable, tuple[str, ...]], ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for table, names in self.views:
            known = [f.name for f in table.features]
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"feature service {self.name} lists {', '.join(unknown)}, which view {table.name} "
                                 f"does not define (it defines {', '.join(known)})")
            twice = sorted({n for n in names if n in seen or names.count(n) > 1})
            if twice:
                raise ValueError(f"feature service {self.name} lists {', '.join(twice)} twice")
            seen.update(names)

    @property
    def refs(self) -> tuple[str, ...]:
        """The features as Feast references ``view:feature``, in the service's order."""
        return tuple(f"{table.name}:{n}" for table, names in self.views for n in names)


NEXT_WEEK_COMMITS_V1 = ServiceFeatures(NEXT_WEEK_COMMITS_SERVICE, (
    (REPO_ACTIVITY, ("commits_last_7d", "commits_last_30d", "active_authors_last_30d", "lines_changed_last_7d",
                     "mean_files_per_commit_last_30d", "days_since_last_commit")),
))
AUTHOR_PROFILE_V1 = ServiceFeatures("author_profile_v1", (
    (AUTHOR_ACTIVITY, ("commits_total", "langs_used", "weekly_streak")),
))
NEXT_WEEK_COMMITS_LIVE_V1 = ServiceFeatures(NEXT_WEEK_COMMITS_LIVE_SERVICE, (
    (REPO_ACTIVITY_LIVE, ("commits_last_1h", "commits_last_24h", "commits_last_7d_live", "active_authors_last_24h",
                          "seconds_since_last_commit")),
))

SERVICES: tuple[ServiceFeatures, ...] = (NEXT_WEEK_COMMITS_V1, AUTHOR_PROFILE_V1, NEXT_WEEK_COMMITS_LIVE_V1)
