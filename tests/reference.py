"""Independent reference implementation of the `repo_activity` and `author_activity` feature semantics.

Written from the spec only, in plain pandas/Python, deliberately slow and obvious. It imports nothing from
``skewless``: the tests compare the real pipeline against this module, so the two must not share code.

The spec, restated
------------------
As of any timestamp ``T`` let ``D`` be ``T`` floored to 00:00 UTC. A window of ``N`` days holds the commits with
``committed_at`` in ``[D - N days, D)``. ``committed_at`` is the event time; ``authored_at`` is never used.

``repo_activity`` (join key ``repo``):
    commits_last_7d, commits_last_30d, active_authors_last_30d (distinct author_id over 30 days),
    lines_changed_last_7d (lines_added + lines_deleted over 7 days),
    mean_files_per_commit_last_30d (mean files_changed over the NON-merge commits of the 30-day window, None if
    there are none), days_since_last_commit ((D - last committed_at before D) in fractional days).

``author_activity`` (join key ``author_id``):
    commits_total (all the author's commits before D, every repository), langs_used (distinct languages of those
    commits, "Other" excluded), weekly_streak (consecutive Monday-start UTC weeks with >= 1 commit, counting back
    from the week that ends at the Monday 00:00 on or before D; the current, partial week [M, D) is not counted).

When the entity has no commit strictly before ``D`` the functions return ``None``: the pipeline has no row for
it yet, and Feast answers null for every feature.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

REPO_VIEW = "repo_activity"
AUTHOR_VIEW = "author_activity"

#: Every feature of a view, once: name -> (pandas dtype, its value in a zero-history row; see empty_history).
#: A new feature is one line here and its computation in repo_features / author_features.
REPO_SPEC: dict[str, tuple[str, Any]] = {
    "commits_last_7d": ("Int64", 0),
    "commits_last_30d": ("Int64", 0),
    "active_authors_last_30d": ("Int64", 0),
    "lines_changed_last_7d": ("Int64", 0),
    "mean_files_per_commit_last_30d": ("Float64", None),
    "days_since_last_commit": ("Float64", None),
}
AUTHOR_SPEC: dict[str, tuple[str, Any]] = {
    "commits_total": ("Int64", 0),
    "langs_used": ("Int64", 0),
    "weekly_streak": ("Int64", 0),
}
REPO_FEATURES: tuple[str, ...] = tuple(REPO_SPEC)
AUTHOR_FEATURES: tuple[str, ...] = tuple(AUTHOR_SPEC)

#: pandas dtype of every feature (Int64 counts, Float64 means and durations).
DTYPES: dict[str, str] = {name: dtype for spec in (REPO_SPEC, AUTHOR_SPEC) for name, (dtype, _) in spec.items()}

VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    REPO_VIEW: ("repo", REPO_FEATURES),
    AUTHOR_VIEW: ("author_id", AUTHOR_FEATURES),
}

ONE_DAY = pd.Timedelta(days=1)
ONE_WEEK = pd.Timedelta(days=7)


# --- time helpers ------------------------------------------------------------------------------------------------
def as_utc(t: Any) -> pd.Timestamp:
    """A tz-aware UTC Timestamp; a naive value is taken to be UTC already."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        return ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


def day_of(t: Any) -> pd.Timestamp:
    """D: ``t`` floored to 00:00 UTC of its UTC calendar day."""
    ts = as_utc(t)
    return pd.Timestamp(year=ts.year, month=ts.month, day=ts.day, tz="UTC")


def monday_on_or_before(d: pd.Timestamp) -> pd.Timestamp:
    """The Monday 00:00 UTC on or before the day ``d`` (``d`` itself when it is a Monday)."""
    d = day_of(d)
    return d - d.weekday() * ONE_DAY  # weekday(): Monday == 0


# --- input normalisation -----------------------------------------------------------------------------------------
def _frame(commits: Any) -> pd.DataFrame:
    """Accept a DataFrame (or a pyarrow Table) of commits; make committed_at tz-aware UTC."""
    if not isinstance(commits, pd.DataFrame):  # a pyarrow.Table
        commits = commits.to_pandas()
    col = commits["committed_at"]
    if not (isinstance(col.dtype, pd.DatetimeTZDtype) and str(col.dtype.tz) == "UTC"):
        commits = commits.copy()
        commits["committed_at"] = pd.to_datetime(col, utc=True)
    return commits


def _languages(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(x) for x in list(value)]


# --- the features ------------------------------------------------------------------------------------------------
def repo_features(commits: pd.DataFrame, repo: str, t: pd.Timestamp) -> dict | None:
    """`repo_activity` of ``repo`` as of ``t``; None when the repo has no commit strictly before D."""
    rows = _frame(commits)
    d = day_of(t)
    mine = rows[rows["repo"] == repo]
    before = mine[mine["committed_at"] < d]
    if len(before) == 0:
        return None

    w7 = before[before["committed_at"] >= d - 7 * ONE_DAY]
    w30 = before[before["committed_at"] >= d - 30 * ONE_DAY]

    lines_7 = 0
    for added, deleted in zip(w7["lines_added"], w7["lines_deleted"]):
        lines_7 += int(added) + int(deleted)

    non_merge_files = [int(f) for f, merge in zip(w30["files_changed"], w30["is_merge"]) if not bool(merge)]
    mean_files = (sum(non_merge_files) / len(non_merge_files)) if non_merge_files else None

    last = max(before["committed_at"])
    days_since = (d - last) / ONE_DAY  # float, fractional days

    row = {
        "commits_last_7d": len(w7),
        "commits_last_30d": len(w30),
        "active_authors_last_30d": len(set(w30["author_id"])),
        "lines_changed_last_7d": lines_7,
        "mean_files_per_commit_last_30d": mean_files,
        "days_since_last_commit": float(days_since),
    }
    assert tuple(row) == REPO_FEATURES, "repo_features computes exactly the features of REPO_SPEC"
    return row


def author_features(commits: pd.DataFrame, author_id: str, t: pd.Timestamp) -> dict | None:
    """`author_activity` of ``author_id`` as of ``t``; None when the author has no commit strictly before D."""
    rows = _frame(commits)
    d = day_of(t)
    mine = rows[rows["author_id"] == author_id]
    before = mine[mine["committed_at"] < d]
    if len(before) == 0:
        return None

    langs: set[str] = set()
    for value in before["languages"]:
        for lang in _languages(value):
            if lang != "Other":
                langs.add(lang)

    # Monday 00:00 starting the week of every commit before D.
    active_weeks = {monday_on_or_before(c) for c in before["committed_at"]}
    streak = 0
    week_start = monday_on_or_before(d) - ONE_WEEK  # the week [M - 7d, M), M = the Monday on or before D
    while week_start in active_weeks:
        streak += 1
        week_start -= ONE_WEEK

    row = {
        "commits_total": len(before),
        "langs_used": len(langs),
        "weekly_streak": streak,
    }
    assert tuple(row) == AUTHOR_FEATURES, "author_features computes exactly the features of AUTHOR_SPEC"
    return row


def features(commits: pd.DataFrame, view: str, entity: str, t: pd.Timestamp) -> dict | None:
    """Dispatch on the view name."""
    if view == REPO_VIEW:
        return repo_features(commits, entity, t)
    if view == AUTHOR_VIEW:
        return author_features(commits, entity, t)
    raise ValueError(f"unknown view {view!r}")


def empty_history(view: str) -> dict:
    """What a row for an entity with no commit before D would hold, if a pipeline chose to emit one.

    The spec allows null for that case; a zero-history row (0 counts, null mean and days_since) is the only other
    answer that is consistent with the spec, so tests accept either.
    """
    spec = REPO_SPEC if view == REPO_VIEW else AUTHOR_SPEC
    return {name: empty for name, (_, empty) in spec.items()}


def expected_frame(commits: pd.DataFrame, entity_df: pd.DataFrame, view: str) -> pd.DataFrame:
    """Reference values aligned row by row with ``entity_df`` (same index, same order).

    ``entity_df`` has the view's join key (``repo`` or ``author_id``) and ``event_timestamp``. The result holds
    the entity_df's columns, the feature columns (nullable Int64 / Float64; all NA where the entity has no commit
    before D) and a bool column ``reference_has_row`` (False exactly where the reference returned None).
    """
    key, names = VIEWS[view]
    rows = _frame(commits)
    # Pre-split by entity: same semantics (each call still filters on the entity), just fewer rows to scan.
    groups = {k: g for k, g in rows.groupby(key, sort=False)}
    empty = rows.iloc[0:0]
    values: dict[str, list] = {n: [] for n in names}
    has_row: list[bool] = []
    for entity, t in zip(entity_df[key], entity_df["event_timestamp"]):
        f = features(groups.get(entity, empty), view, entity, t)
        has_row.append(f is not None)
        for n in names:
            values[n].append(None if f is None else f[n])
    out = entity_df.copy()
    for n in names:
        out[n] = pd.array(values[n], dtype=DTYPES[n])
    out["reference_has_row"] = has_row
    return out


def as_of_date(d: dt.date) -> pd.Timestamp:
    """00:00 UTC of a calendar date."""
    return pd.Timestamp(year=d.year, month=d.month, day=d.day, tz="UTC")
