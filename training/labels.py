"""Labels of the next-week-commits model: commits per repository per UTC week — kept apart from features.

This module is training's one documented access to raw commits (the guard test's allow-list names it): labels
are *outcomes*, counted from ``abukix.commits``; features only ever come through Feast.

Examples and labels
-------------------
An example is ``(repo, M)`` with ``M`` a Monday 00:00 UTC (the feature lookup time). Its label is the number of the
repository's commits with ``committed_at`` in ``[M, M + 7 days)``.

Observed weeks
--------------
The data does not record the day each repository's history was read; it certainly covers the span from the first
to the last commit. A week ``[M, M + 7d)`` of repository ``r`` is *observed* iff::

    first committed_at of r  <=  M      and      M + 7d  <=  floor_day(last committed_at of r)

The first condition starts at the repository's first full week (the week holding the first commit is partial:
the repository did not exist for all of it). The second drops the final partial week (the one holding the last
commit's day) and every week after it: those weeks are unobserved, not zero. Floor to the UTC day is conservative
by design: the last commit's own day is not assumed to be complete. Inside the observed range a week without
commits has label 0.

Baselines
---------
Two label-derived predictors, computed from this module's labels and never from features: the previous week's
count and the mean of the (up to) four previous observed weeks. Both use only weeks that ended at or before ``M``,
so they are known at prediction time; an example with no earlier observed week predicts 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from skewless import lake
from skewless.lake import snapshots
from skewless.core.config import COMMITS_TABLE, Profile, profile
from skewless.core.errors import SkewlessError

KEYS = ["repo", "event_timestamp"]
LABEL = "label"
BASELINES = ("last_week", "mean_4w")

_US_PER_DAY = 86_400 * 1_000_000
_US_PER_WEEK = 7 * _US_PER_DAY
#: 1970-01-05 00:00 UTC, the first Monday of the Unix epoch, in microseconds.
_MONDAY0 = 4 * _US_PER_DAY


class LabelError(SkewlessError, ValueError):
    """The commits cannot be turned into labels (wrong columns, no observed week...)."""


@dataclass(frozen=True)
class Labels:
    """Weekly labels of every observed week, and where they came from."""

    frame: pd.DataFrame  #: repo, event_timestamp (Monday 00:00 UTC), label (int64); sorted by repo, Monday
    commits_snapshot: int | None  #: the snapshot of abukix.commits they were counted from
    last_commit_day: pd.Timestamp | None  #: UTC day of the newest commit read (any repository)


def _micros(ts: pd.Series) -> np.ndarray:
    """UTC microseconds since the epoch of a tz-aware timestamp column (refuses naive timestamps)."""
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise LabelError(f"committed_at must be a timezone-aware UTC timestamp column, got {ts.dtype}")
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").to_numpy("datetime64[us]").astype(np.int64)


def weekly_counts(commits: pd.DataFrame, offset: pd.Timedelta | None = None) -> pd.DataFrame:
    """Count commits per observed (repo, Monday) week; ``commits`` has columns repo and committed_at (UTC).

    Returns columns repo, event_timestamp (Monday 00:00 UTC), label (int64), sorted; see the module docstring for
    which weeks are observed. A repository without a single observed week contributes no row.

    ``offset`` (0 <= offset < 7 days) moves every example to ``M + offset`` (e.g. Thursday 12:00 for a mid-week
    prediction): its label counts ``[M + offset, M + offset + 7d)`` and the observed rule applies to that week.
    """
    off = 0 if offset is None else int(pd.Timedelta(offset).total_seconds() * 1_000_000)
    if not 0 <= off < _US_PER_WEEK:
        raise LabelError(f"offset {offset} is not within [0, 7 days)")
    missing = {"repo", "committed_at"} - set(commits.columns)
    if missing:
        raise LabelError(f"commits lack the column(s) {', '.join(sorted(missing))}")
    if commits["repo"].isna().any() or commits["committed_at"].isna().any():
        raise LabelError("commits have a null repo or committed_at")
    repos = commits["repo"].to_numpy(dtype=object)
    ts = _micros(commits["committed_at"])
    order = np.lexsort((ts, repos))
    repos, ts = repos[order], ts[order]
    names, starts = np.unique(repos, return_index=True)
    ends = np.append(starts[1:], len(repos))
    out_repo: list[np.ndarray] = []
    out_monday: list[np.ndarray] = []
    out_label: list[np.ndarray] = []
    for name, lo, hi in zip(names, starts, ends):
        own = ts[lo:hi]
        start0 = _MONDAY0 + off
        first_week = -(-(own[0] - start0) // _US_PER_WEEK)  # first instant at or after the first commit
        last_day = own[-1] - own[-1] % _US_PER_DAY
        last_week = (last_day - _US_PER_WEEK - start0) // _US_PER_WEEK  # last instant with T + 7d <= last_day
        if last_week < first_week:
            continue
        mondays = start0 + _US_PER_WEEK * np.arange(first_week, last_week + 1, dtype=np.int64)
        counts = np.searchsorted(own, mondays + _US_PER_WEEK, side="left") - np.searchsorted(own, mondays,
                                                                                               side="left")
        out_repo.append(np.full(len(mondays), name, dtype=object))
        out_monday.append(mondays)
        out_label.append(counts.astype(np.int64))
    if not out_repo:
        return pd.DataFrame({"repo": pd.Series([], dtype=object),
                             "event_timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
                             LABEL: pd.Series([], dtype=np.int64)})
    return pd.DataFrame({
        "repo": np.concatenate(out_repo),
        "event_timestamp": pd.to_datetime(np.concatenate(out_monday), unit="us", utc=True).astype(
            "datetime64[ns, UTC]"),
        LABEL: np.concatenate(out_label),
    })


def weekly_labels(p: Profile | None = None, until: date | None = None,
                  offset: pd.Timedelta | None = None) -> Labels:
    """Labels of every observed week, counted from ``abukix.commits``.

    The snapshot read is the one pinned by an enclosing :func:`skewless.lake.snapshots.pinned_snapshots` block (else
    the current one), and it is reported to that block like every Feast read. With ``until`` (a UTC day) the
    history is taken as read at the end of that day: later commits are ignored, so only weeks that ended by then
    are observed.
    """
    p = p or profile()
    table = lake.commits_table(p)
    snap = snapshots.snapshot_to_read(COMMITS_TABLE, table)
    if snap is None:
        raise LabelError(f"{COMMITS_TABLE} holds no commits yet; run `skewless ingest` first")
    commits = table.scan(selected_fields=("repo", "committed_at"), snapshot_id=snap).to_arrow().to_pandas()
    if until is not None:
        end = pd.Timestamp(until, tz="UTC") + pd.Timedelta(days=1)
        commits = commits[commits["committed_at"] < end]
    frame = weekly_counts(commits, offset)
    last = commits["committed_at"].max().tz_convert("UTC").floor("D") if len(commits) else None
    return Labels(frame=frame, commits_snapshot=snap, last_commit_day=last)


def label_baselines(labels: pd.DataFrame) -> pd.DataFrame:
    """Baseline predictions for every labelled week: ``last_week`` and ``mean_4w`` (see the module docstring).

    Computed from the labels of the previous four Mondays of the same repository (unobserved ones are absent,
    not zero). Returns the key columns plus one column per baseline.
    """
    keys = labels[KEYS]
    lags = []
    for k in range(1, 5):
        shifted = labels[KEYS + [LABEL]].assign(event_timestamp=labels["event_timestamp"] + pd.Timedelta(weeks=k))
        lags.append(keys.merge(shifted, on=KEYS, how="left", validate="one_to_one")[LABEL].to_numpy(float))
    lag = np.column_stack(lags) if lags else np.empty((0, 4))
    seen = ~np.isnan(lag)
    n = seen.sum(axis=1)
    mean4 = np.divide(np.where(seen, lag, 0.0).sum(axis=1), n, out=np.zeros(len(lag)), where=n > 0)
    out = keys.copy()
    out["last_week"] = np.nan_to_num(lag[:, 0], nan=0.0)
    out["mean_4w"] = mean4
    return out
