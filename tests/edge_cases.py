"""Small hand-made commit tables for the edges of the feature semantics, with hand-computed expectations.

Every builder returns ``(table, cases)``: ``table`` is a ``pyarrow.Table`` with exactly the schema of the shipped
sample (``SCHEMA``), ``cases`` a list of ``(entity, T, expected)``:

- ``entity`` is a repository name (contains ``/``; join key ``repo``, view ``repo_activity``) or an author id
  (starts with ``a_``; join key ``author_id``, view ``author_activity``): see :func:`view_of`.
- ``T`` is a tz-aware UTC ``pandas.Timestamp``.
- ``expected`` is a dict of features of that view by name (``repo_row(commits_last_7d=1, ...)``), computed BY HAND
  and written here as literals (arithmetic spelled out in comments), or ``None`` when the entity has no commit
  strictly before D (no row: Feast answers null). Tests compare feature by feature the features a case names; every
  feature is named in every builder of its view (``test_reference``). These literals test the reference
  implementation as well as the pipeline.

Builders use disjoint repositories and author ids, so :func:`all_cases` can concatenate every table into one and
ingest it once.

Calendar reminders used below: 2020-01-01 Wed; 2021-03-01 Mon; 2022-06-11 Sat, 2022-06-13 Mon; 2023-03-01 Wed,
2023-03-06 Mon; 2023-05-01 Mon; 2024 is a leap year, 2024-01-01 Mon (Mondays 01-01, 01-08, 01-15, 01-22, 01-29,
02-05, 02-12, 02-19, 02-26), 2024-03-15 Fri.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import pyarrow as pa

import reference

#: Identical to the schema of src/skewless/data/sample_commits.parquet (checked by a test).
SCHEMA = pa.schema(
    [
        pa.field("repo", pa.string()),
        pa.field("sha", pa.string()),
        pa.field("author_id", pa.string()),
        pa.field("authored_at", pa.timestamp("us", tz="UTC")),
        pa.field("committed_at", pa.timestamp("us", tz="UTC")),
        pa.field("is_merge", pa.bool_()),
        pa.field("files_changed", pa.int32()),
        pa.field("lines_added", pa.int32()),
        pa.field("lines_deleted", pa.int32()),
        pa.field("languages", pa.list_(pa.field("element", pa.string()))),
    ]
)

Case = tuple[str, pd.Timestamp, "dict | None"]
Built = tuple[pa.Table, list[Case]]


def T(s: str) -> pd.Timestamp:
    """A UTC timestamp from an ISO string."""
    return pd.Timestamp(s, tz="UTC")


def aid(n: int) -> str:
    """A made-up author id in the dataset's format ("a_" + 12 hex)."""
    return f"a_{0xED9E00000000 + n:012x}"


def view_of(entity: str) -> str:
    """The feature view an edge-case entity belongs to."""
    return "author_activity" if entity.startswith("a_") else "repo_activity"


def join_key_of(entity: str) -> str:
    return "author_id" if entity.startswith("a_") else "repo"


def _row(view: str, values: Mapping[str, Any] | None, named: Mapping[str, Any]) -> dict:
    """Expected values of a case, keyed by feature name: only the named features are checked (per feature)."""
    row = {**(values or {}), **named}
    known = reference.VIEWS[view][1]
    unknown = sorted(set(row) - set(known))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a feature of {view} (its features: {', '.join(known)})")
    if not row:
        raise ValueError(f"an expected {view} row names no feature")
    return row


def repo_row(values: Mapping[str, Any] | None = None, /, **named: Any) -> dict:
    """Expected ``repo_activity`` values by feature name (keywords, or a dict): a new feature is one more keyword
    in the cases that check it; ``test_reference`` requires every feature to be checked in every builder."""
    return _row(reference.REPO_VIEW, values, named)


def author_row(values: Mapping[str, Any] | None = None, /, **named: Any) -> dict:
    """Expected ``author_activity`` values by feature name (keywords, or a dict)."""
    return _row(reference.AUTHOR_VIEW, values, named)


class _Table:
    """Accumulates commit rows of one builder."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[dict] = []

    def add(
        self,
        repo: str,
        author: str,
        committed: str,
        *,
        authored: str | None = None,
        merge: bool = False,
        files: int = 1,
        added: int = 1,
        deleted: int = 0,
        langs: Sequence[str] = ("Python",),
    ) -> None:
        if merge:  # the dataset's quirk: merges carry no diff stats
            assert files == 0 and added == 0 and deleted == 0 and not langs, "merges have no diff stats"
        sha = hashlib.sha1(f"{self.name}:{len(self.rows)}".encode()).hexdigest()
        self.rows.append(
            {
                "repo": repo,
                "sha": sha,
                "author_id": author,
                "authored_at": T(authored or committed).to_pydatetime(),
                "committed_at": T(committed).to_pydatetime(),
                "is_merge": merge,
                "files_changed": files,
                "lines_added": added,
                "lines_deleted": deleted,
                "languages": sorted(langs),
            }
        )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=SCHEMA)


# --- builders ----------------------------------------------------------------------------------------------------
def window_edges() -> Built:
    """Commits exactly at D - 7d (in), exactly at D (out), just before D - 7d, exactly at / before D - 30d.

    D = 2024-03-15. D - 7d = 2024-03-08 00:00. D - 30d = 2024-02-14 00:00 (leap February).
    """
    r = "edge/windows"
    a1, a2, a3, a4 = aid(101), aid(102), aid(103), aid(104)
    t = _Table("window_edges")
    t.add(r, a1, "2024-03-08 00:00:00", files=2, added=10, deleted=5)  # c1 = D - 7d exactly
    t.add(r, a2, "2024-03-07 23:59:59", files=4, added=100, deleted=0)  # c2 = 1 s before D - 7d
    t.add(r, a1, "2024-03-15 00:00:00", files=6, added=1000, deleted=1000)  # c3 = D exactly
    t.add(r, a3, "2024-02-14 00:00:00", files=8, added=1, deleted=1)  # c4 = D - 30d exactly
    t.add(r, a4, "2024-02-13 23:59:59", files=10, added=3, deleted=3)  # c5 = 1 s before D - 30d (first)
    cases: list[Case] = [
        # D=03-15: 7d [03-08, 03-15) = {c1}: lines 10+5. 30d [02-14, 03-15) = {c1,c2,c4}: authors a1,a2,a3,
        # mean (2+4+8)/3. Last before D: c1 at 03-08 00:00 -> 7 days. c3 (00:00 on D) is not counted.
        (r, T("2024-03-15 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=3, active_authors_last_30d=3, lines_changed_last_7d=15,
            mean_files_per_commit_last_30d=14 / 3, days_since_last_commit=7.0)),
        (r, T("2024-03-15 23:59:59.999999"), repo_row(
            commits_last_7d=1, commits_last_30d=3, active_authors_last_30d=3, lines_changed_last_7d=15,
            mean_files_per_commit_last_30d=14 / 3, days_since_last_commit=7.0)),
        # D=03-14: 7d [03-07, 03-14) = {c1,c2}: lines 15+100. 30d [02-13, 03-14) = all but c3:
        # authors a1..a4, mean (2+4+8+10)/4 = 6. Last: c1 -> 6 days.
        (r, T("2024-03-14 12:00:00"), repo_row(
            commits_last_7d=2, commits_last_30d=4, active_authors_last_30d=4, lines_changed_last_7d=115,
            mean_files_per_commit_last_30d=6.0, days_since_last_commit=6.0)),
        # D=03-16: 7d [03-09, 03-16) = {c3}: lines 2000. 30d [02-15, 03-16) = {c1,c2,c3}: a1,a2; mean 12/3.
        (r, T("2024-03-16 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=3, active_authors_last_30d=2, lines_changed_last_7d=2000,
            mean_files_per_commit_last_30d=4.0, days_since_last_commit=1.0)),
        # D=03-22: 7d [03-15, 03-22) = {c3} (c3 exactly at D - 7d is IN). 30d [02-21, 03-22) = {c1,c2,c3}.
        (r, T("2024-03-22 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=3, active_authors_last_30d=2, lines_changed_last_7d=2000,
            mean_files_per_commit_last_30d=4.0, days_since_last_commit=7.0)),
        # D=03-23: 7d [03-16, 03-23) empty -> 0 (not null). 30d [02-22, 03-23) = {c1,c2,c3}. Last c3 -> 8 days.
        (r, T("2024-03-23 06:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=3, active_authors_last_30d=2, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=4.0, days_since_last_commit=8.0)),
        # D=04-07: 30d [03-08, 04-07) = {c1, c3}: a1 only, mean (2+6)/2. 7d empty. Last c3 -> 23 days.
        (r, T("2024-04-07 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=2, active_authors_last_30d=1, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=4.0, days_since_last_commit=23.0)),
        # D=04-08: 30d [03-09, 04-08) = {c3}. 24 days.
        (r, T("2024-04-08 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=6.0, days_since_last_commit=24.0)),
        # D=04-15: 30d [03-16, 04-15) empty -> counts 0, mean null, days_since 31.
        (r, T("2024-04-15 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=0, active_authors_last_30d=0, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=31.0)),
        # First commit c5 at 02-13 23:59:59: as of D=02-13 nothing is strictly before D -> no row.
        (r, T("2024-02-13 23:59:59.999999"), None),
        (r, T("2024-02-13 00:00:00"), None),
        # D=02-14: {c5} only (c4 is at D). days_since = 1 second.
        (r, T("2024-02-14 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=6,
            mean_files_per_commit_last_30d=10.0, days_since_last_commit=1 / 86400)),
    ]
    return t.table(), cases


def inactivity() -> Built:
    """Gaps far longer than any plausible TTL: windows fall to 0 (never null), days_since keeps growing."""
    r = "edge/dormant"
    b1, b2 = aid(201), aid(202)
    t = _Table("inactivity")
    t.add(r, b1, "2020-01-01 06:00:00", files=3, added=5, deleted=2, langs=["Go"])  # c1 (first)
    t.add(r, b2, "2020-01-02 18:00:00", merge=True, files=0, added=0, deleted=0, langs=[])  # c2 merge
    t.add(r, b1, "2021-03-01 12:00:00", files=1, added=1, deleted=1, langs=["Go"])  # c3 after 424 days
    cases: list[Case] = [
        (r, T("2020-01-01 23:00:00"), None),
        # D=2020-01-02: {c1}; days_since 01-02 00:00 - 01-01 06:00 = 18 h = 0.75.
        (r, T("2020-01-02 10:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=7,
            mean_files_per_commit_last_30d=3.0, days_since_last_commit=0.75)),
        # D=2020-01-03: {c1, c2}; lines 7 + 0; mean over non-merges = c1 only = 3; 01-03 - 01-02 18:00 = 0.25.
        (r, T("2020-01-03 00:00:00"), repo_row(
            commits_last_7d=2, commits_last_30d=2, active_authors_last_30d=2, lines_changed_last_7d=7,
            mean_files_per_commit_last_30d=3.0, days_since_last_commit=0.25)),
        # D=2020-02-01: 30d [01-02, 02-01) = {c2} (merge only): mean null; 7d empty. 30 - 0.75 = 29.25 days.
        (r, T("2020-02-01 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=29.25)),
        # D=2021-02-05: 2020-01-02 18:00 -> 2021-01-02 18:00 = 366 days (2020 leap) -> 2021-02-02 18:00 = 397
        # -> 2021-02-05 00:00 = 399.25 days. All windows empty.
        (r, T("2021-02-05 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=0, active_authors_last_30d=0, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=399.25)),
        # D=2021-03-01 (c3 at 12:00 that day, not before D): 399.25 + 24 (Feb 2021 has 28 days) = 423.25.
        (r, T("2021-03-01 12:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=0, active_authors_last_30d=0, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=423.25)),
        # D=2021-03-02: {c3}; 0.5 days since 03-01 12:00.
        (r, T("2021-03-02 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=2,
            mean_files_per_commit_last_30d=1.0, days_since_last_commit=0.5)),
        # D=2023-03-01: 2021-03-01 12:00 -> 2023-03-01 12:00 = 730 days; minus 12 h = 729.5.
        (r, T("2023-03-01 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=0, active_authors_last_30d=0, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=729.5)),
        # Authors after long inactivity. b1 as of D=2021-02-05 (Fri; M = Mon 02-01): {c1}: Go; week
        # [01-25, 02-01) empty -> streak 0.
        (b1, T("2021-02-05 00:00:00"), author_row(commits_total=1, langs_used=1, weekly_streak=0)),
        # b2 only has a merge (languages []): 1 commit, 0 languages.
        (b2, T("2021-02-05 00:00:00"), author_row(commits_total=1, langs_used=0, weekly_streak=0)),
        # b1 as of D=2023-03-01: c1, c3 -> 2 commits, {Go}; streak 0.
        (b1, T("2023-03-01 00:00:00"), author_row(commits_total=2, langs_used=1, weekly_streak=0)),
        # b1 as of D=2021-03-08 (Mon, M = D): week [03-01, 03-08) holds c3 -> 1; [02-22, 03-01) none.
        (b1, T("2021-03-08 00:00:00"), author_row(commits_total=2, langs_used=1, weekly_streak=1)),
    ]
    return t.table(), cases


def late_commits() -> Built:
    """committed_at far after (and once before) authored_at: everything is bucketed by committed_at."""
    r = "edge/late"
    l1, l2 = aid(301), aid(302)
    t = _Table("late_commits")
    # c1: written 2022-01-01 but landed 2022-06-10 06:00 (5 months late).
    t.add(r, l1, "2022-06-10 06:00:00", authored="2022-01-01 10:00:00", files=2, added=3, deleted=1, langs=["Rust"])
    # c2: author clock ahead: authored 2022-06-20, committed 2022-06-09 12:00 (the repo's first commit).
    t.add(r, l2, "2022-06-09 12:00:00", authored="2022-06-20 00:00:00", files=1, added=10, deleted=0, langs=["Go"])
    cases: list[Case] = [
        # Nothing COMMITTED before D=2022-01-15 (c1 was only authored then): no row.
        (r, T("2022-01-15 00:00:00"), None),
        (l1, T("2022-01-15 00:00:00"), None),
        # D=06-10: c2 only (c1 lands at 06:00 on D). 06-10 - 06-09 12:00 = 0.5.
        (r, T("2022-06-10 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=10,
            mean_files_per_commit_last_30d=1.0, days_since_last_commit=0.5)),
        # D=06-11: c1, c2: lines 4 + 10, mean (2+1)/2; 06-11 - 06-10 06:00 = 0.75.
        (r, T("2022-06-11 18:00:00"), repo_row(
            commits_last_7d=2, commits_last_30d=2, active_authors_last_30d=2, lines_changed_last_7d=14,
            mean_files_per_commit_last_30d=1.5, days_since_last_commit=0.75)),
        # D=06-17: 7d [06-10, 06-17) = {c1}; 30d both. 6.75 days.
        (r, T("2022-06-17 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=2, active_authors_last_30d=2, lines_changed_last_7d=4,
            mean_files_per_commit_last_30d=1.5, days_since_last_commit=6.75)),
        # D=07-10: 30d [06-10, 07-10) = {c1} (06:00 >= 00:00). 30 - 0.25 = 29.75.
        (r, T("2022-07-10 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=2.0, days_since_last_commit=29.75)),
        # D=07-11: 30d [06-11, 07-11) empty.
        (r, T("2022-07-11 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=0, active_authors_last_30d=0, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=30.75)),
        # l1 as of D=06-11 (Sat; M = Mon 06-06): c1 {Rust}; week [05-30, 06-06) empty -> 0 (it was authored in
        # Dec/Jan weeks, which do not count).
        (l1, T("2022-06-11 00:00:00"), author_row(commits_total=1, langs_used=1, weekly_streak=0)),
        # l1 as of D=06-13 (Mon, M = D): week [06-06, 06-13) has c1 -> 1; [05-30, 06-06) none.
        (l1, T("2022-06-13 00:00:00"), author_row(commits_total=1, langs_used=1, weekly_streak=1)),
        # l2 as of D=06-13: c2 (committed 06-09, in week [06-06, 06-13)) -> 1.
        (l2, T("2022-06-13 00:00:00"), author_row(commits_total=1, langs_used=1, weekly_streak=1)),
        # l2 as of D=06-10 (Fri, M = 06-06): c2 is in the current partial week, not counted -> 0.
        (l2, T("2022-06-10 00:00:00"), author_row(commits_total=1, langs_used=1, weekly_streak=0)),
    ]
    return t.table(), cases


def merges() -> Built:
    """Merges count as commits and authors but are excluded from mean files; empty non-merge commits count 0."""
    r, ro = "edge/merges", "edge/merge-only"
    m1, m2, m3 = aid(401), aid(402), aid(403)
    t = _Table("merges")
    t.add(r, m1, "2023-05-01 10:00:00", files=4, added=20, deleted=5, langs=["Markdown", "Python"])  # c1
    t.add(r, m2, "2023-05-01 12:00:00", files=0, added=0, deleted=0, langs=[])  # c2 empty NON-merge commit
    t.add(r, m1, "2023-05-02 10:00:00", merge=True, files=0, added=0, deleted=0, langs=[])  # c3 merge
    t.add(r, m2, "2023-05-03 10:00:00", merge=True, files=0, added=0, deleted=0, langs=[])  # c4 merge
    t.add(ro, m3, "2023-05-01 10:00:00", merge=True, files=0, added=0, deleted=0, langs=[])  # only a merge
    cases: list[Case] = [
        # D=05-02: {c1, c2}: lines 25, mean (4+0)/2 = 2; 05-02 - 05-01 12:00 = 0.5.
        (r, T("2023-05-02 00:00:00"), repo_row(
            commits_last_7d=2, commits_last_30d=2, active_authors_last_30d=2, lines_changed_last_7d=25,
            mean_files_per_commit_last_30d=2.0, days_since_last_commit=0.5)),
        # D=05-04: all four; mean still over c1, c2 only = 2; 05-04 - 05-03 10:00 = 14 h = 7/12 days.
        (r, T("2023-05-04 00:00:00"), repo_row(
            commits_last_7d=4, commits_last_30d=4, active_authors_last_30d=2, lines_changed_last_7d=25,
            mean_files_per_commit_last_30d=2.0, days_since_last_commit=7 / 12)),
        # D=05-31: 30d [05-01, 05-31) all four; 7d empty. 27 days + 14 h.
        (r, T("2023-05-31 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=4, active_authors_last_30d=2, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=2.0, days_since_last_commit=27 + 7 / 12)),
        # D=06-01: 30d [05-02, 06-01) = {c3, c4} merges only: 2 commits, 2 authors, mean null.
        (r, T("2023-06-01 00:00:00"), repo_row(
            commits_last_7d=0, commits_last_30d=2, active_authors_last_30d=2, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=28 + 7 / 12)),
        # Merge-only repo as of D=05-02: 1 commit, 0 lines, mean null, 14 h.
        (ro, T("2023-05-02 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=0,
            mean_files_per_commit_last_30d=None, days_since_last_commit=7 / 12)),
        # m1 as of D=05-08 (Mon): c1 (Markdown, Python), c3 merge -> 2 commits, 2 langs; week [05-01, 05-08) -> 1.
        (m1, T("2023-05-08 00:00:00"), author_row(commits_total=2, langs_used=2, weekly_streak=1)),
        # m2: empty commit + merge: 2 commits, no languages.
        (m2, T("2023-05-08 00:00:00"), author_row(commits_total=2, langs_used=0, weekly_streak=1)),
    ]
    return t.table(), cases


def multi_repo_authors() -> Built:
    """One author committing to two repositories: author features count across repos, repo features don't."""
    ra, rb = "edge/multi-a", "edge/multi-b"
    x1, x2 = aid(501), aid(502)
    t = _Table("multi_repo_authors")
    t.add(ra, x1, "2024-01-02 09:00:00", files=2, added=1, deleted=1, langs=["Other", "Python"])
    t.add(rb, x1, "2024-01-03 09:00:00", files=2, added=5, deleted=5, langs=["Go", "Python"])
    t.add(ra, x2, "2024-01-03 10:00:00", files=1, added=2, deleted=0, langs=["Other"])
    t.add(rb, x1, "2024-01-04 09:00:00", merge=True, files=0, added=0, deleted=0, langs=[])
    t.add(ra, x1, "2024-01-05 09:00:00", files=1, added=0, deleted=3, langs=["Other"])
    t.add(ra, x1, "2024-01-06 09:00:00", files=3, added=4, deleted=4, langs=["Markdown", "Python", "YAML"])
    cases: list[Case] = [
        # x1 as of D=01-07 (Sun; M = Mon 01-01): 5 commits over both repos; {Python, Go, Markdown, YAML};
        # week [12-25, 01-01) empty -> 0.
        (x1, T("2024-01-07 00:00:00"), author_row(commits_total=5, langs_used=4, weekly_streak=0)),
        # x1 as of D=01-08 (Mon, M = D): week [01-01, 01-08) active -> 1.
        (x1, T("2024-01-08 00:00:00"), author_row(commits_total=5, langs_used=4, weekly_streak=1)),
        # x1 as of D=01-03: only the multi-a commit of 01-02: {Python} (Other excluded).
        (x1, T("2024-01-03 00:00:00"), author_row(commits_total=1, langs_used=1, weekly_streak=0)),
        # x2: a single commit touching only "Other" files -> 0 languages.
        (x2, T("2024-01-08 00:00:00"), author_row(commits_total=1, langs_used=0, weekly_streak=1)),
        # multi-a as of D=01-07: 4 commits (x1 x3, x2); lines 2+2+3+8 = 15; mean (2+1+1+3)/4; 15 h = 0.625.
        (ra, T("2024-01-07 00:00:00"), repo_row(
            commits_last_7d=4, commits_last_30d=4, active_authors_last_30d=2, lines_changed_last_7d=15,
            mean_files_per_commit_last_30d=1.75, days_since_last_commit=0.625)),
        # multi-b as of D=01-07: x1's commit + merge; lines 10; mean 2/1; 01-07 - 01-04 09:00 = 2 d 15 h.
        (rb, T("2024-01-07 00:00:00"), repo_row(
            commits_last_7d=2, commits_last_30d=2, active_authors_last_30d=1, lines_changed_last_7d=10,
            mean_files_per_commit_last_30d=2.0, days_since_last_commit=2.625)),
    ]
    return t.table(), cases


def week_boundaries() -> Built:
    """weekly_streak around Sunday 23:59:59 / Monday 00:00:00, D on a Monday vs a Tuesday, a gap week."""
    r = "edge/weeks"
    w = aid(601)
    t = _Table("week_boundaries")
    t.add(r, w, "2024-01-07 23:59:59", langs=["Python"])  # k1 Sunday -> week [01-01, 01-08)
    t.add(r, w, "2024-01-08 00:00:00", langs=["Other", "Shell"])  # k2 Monday 00:00 -> week [01-08, 01-15)
    t.add(r, w, "2024-01-21 23:59:59", langs=["Python"])  # k3 Sunday -> week [01-15, 01-22)
    # (no commit in week [01-22, 01-29): the gap)
    t.add(r, w, "2024-01-29 00:00:00", langs=["Other"])  # k4 -> week [01-29, 02-05)
    t.add(r, w, "2024-02-05 12:00:00", langs=["Python", "Shell"])  # k5 -> week [02-05, 02-12)
    t.add(r, w, "2024-02-12 00:00:00", langs=["TOML"])  # k6 -> week [02-12, 02-19)
    cases: list[Case] = [
        (w, T("2024-01-07 23:59:59.999999"), None),  # k1 is on D=01-07, not before it
        # D=01-08 Mon (M = D): [01-01, 01-08) has k1 -> 1; k2 (00:00 on D) not before D. {Python}.
        (w, T("2024-01-08 00:00:00"), author_row(commits_total=1, langs_used=1, weekly_streak=1)),
        # D=01-09 Tue (M = 01-08): first week checked is still [01-01, 01-08) -> 1. k1, k2: {Python, Shell}.
        (w, T("2024-01-09 00:00:00"), author_row(commits_total=2, langs_used=2, weekly_streak=1)),
        # D=01-10 Wed: k2 sits in the current partial week [01-08, 01-10): not counted -> still 1.
        (w, T("2024-01-10 08:00:00"), author_row(commits_total=2, langs_used=2, weekly_streak=1)),
        # D=01-15 Mon: [01-08, 01-15) k2, [01-01, 01-08) k1, [12-25, 01-01) none -> 2.
        (w, T("2024-01-15 00:00:00"), author_row(commits_total=2, langs_used=2, weekly_streak=2)),
        # D=01-21 Sun 23:59:59.999999 (M = 01-15): same weeks -> 2.
        (w, T("2024-01-21 23:59:59.999999"), author_row(commits_total=2, langs_used=2, weekly_streak=2)),
        # D=01-22 Mon: [01-15, 01-22) k3, then k2's, k1's weeks -> 3.
        (w, T("2024-01-22 00:00:00"), author_row(commits_total=3, langs_used=2, weekly_streak=3)),
        # D=01-23 Tue (M = 01-22): same -> 3.
        (w, T("2024-01-23 00:00:00"), author_row(commits_total=3, langs_used=2, weekly_streak=3)),
        # D=01-29 Mon: [01-22, 01-29) empty -> 0, though earlier weeks are active. k4 is at D (not before).
        (w, T("2024-01-29 00:00:00"), author_row(commits_total=3, langs_used=2, weekly_streak=0)),
        # D=01-30 Tue (M = 01-29): first week [01-22, 01-29) empty -> 0. k4 now before D.
        (w, T("2024-01-30 12:00:00"), author_row(commits_total=4, langs_used=2, weekly_streak=0)),
        # D=02-05 Mon: [01-29, 02-05) k4 -> 1; [01-22, 01-29) gap resets -> 1.
        (w, T("2024-02-05 00:00:00"), author_row(commits_total=4, langs_used=2, weekly_streak=1)),
        # D=02-12 Mon: [02-05, 02-12) k5, [01-29, 02-05) k4, gap -> 2. k6 at D not before it.
        (w, T("2024-02-12 06:00:00"), author_row(commits_total=5, langs_used=2, weekly_streak=2)),
        # D=02-13 Tue: same weeks -> 2; k6 now counted: {Python, Shell, TOML}.
        (w, T("2024-02-13 00:00:00"), author_row(commits_total=6, langs_used=3, weekly_streak=2)),
        # D=02-19 Mon: [02-12, 02-19) k6, k5's, k4's weeks, gap -> 3.
        (w, T("2024-02-19 00:00:00"), author_row(commits_total=6, langs_used=3, weekly_streak=3)),
        # D=02-25 Sun (M = 02-19): [02-12, 02-19) active -> still 3 though [02-19, 02-25) is empty.
        (w, T("2024-02-25 23:59:59.999999"), author_row(commits_total=6, langs_used=3, weekly_streak=3)),
        # D=02-26 Mon: [02-19, 02-26) empty -> 0.
        (w, T("2024-02-26 00:00:00"), author_row(commits_total=6, langs_used=3, weekly_streak=0)),
        # The repo of these commits, D=01-08: 7d [01-01, 01-08) = {k1}; k2 at D is out. 1 s since k1.
        (r, T("2024-01-08 00:00:00"), repo_row(
            commits_last_7d=1, commits_last_30d=1, active_authors_last_30d=1, lines_changed_last_7d=1,
            mean_files_per_commit_last_30d=1.0, days_since_last_commit=1 / 86400)),
        # D=01-09: {k1, k2}; 1 day since k2.
        (r, T("2024-01-09 00:00:00"), repo_row(
            commits_last_7d=2, commits_last_30d=2, active_authors_last_30d=1, lines_changed_last_7d=2,
            mean_files_per_commit_last_30d=1.0, days_since_last_commit=1.0)),
    ]
    return t.table(), cases


def languages() -> Built:
    """"Other" is excluded; a language seen in several commits counts once; C and C++ are distinct."""
    r = "edge/langs"
    g = aid(701)
    t = _Table("languages")
    t.add(r, g, "2023-03-01 10:00:00", langs=["Other"])  # Wed
    t.add(r, g, "2023-03-02 10:00:00", langs=["Other", "Python"])
    t.add(r, g, "2023-03-03 10:00:00", langs=["Python", "Rust"])
    t.add(r, g, "2023-03-04 10:00:00", merge=True, files=0, added=0, deleted=0, langs=[])
    t.add(r, g, "2023-03-05 10:00:00", files=3, langs=["C", "C++", "Python"])
    cases: list[Case] = [
        (g, T("2023-03-01 12:00:00"), None),
        # D=03-02 (Thu; M = Mon 02-27): only "Other" -> 0 langs; week [02-20, 02-27) empty -> 0.
        (g, T("2023-03-02 00:00:00"), author_row(commits_total=1, langs_used=0, weekly_streak=0)),
        (g, T("2023-03-03 00:00:00"), author_row(commits_total=2, langs_used=1, weekly_streak=0)),  # {Python}
        (g, T("2023-03-04 00:00:00"), author_row(commits_total=3, langs_used=2, weekly_streak=0)),  # {Python, Rust}
        (g, T("2023-03-05 00:00:00"), author_row(commits_total=4, langs_used=2, weekly_streak=0)),  # merge adds nothing
        # D=03-06 Mon: 5 commits, {Python, Rust, C, C++}; week [02-27, 03-06) active -> 1.
        (g, T("2023-03-06 00:00:00"), author_row(commits_total=5, langs_used=4, weekly_streak=1)),
        # D=03-13 Mon: week [03-06, 03-13) empty -> 0.
        (g, T("2023-03-13 00:00:00"), author_row(commits_total=5, langs_used=4, weekly_streak=0)),
    ]
    return t.table(), cases


BUILDERS: dict[str, Callable[[], Built]] = {
    "window_edges": window_edges,
    "inactivity": inactivity,
    "late_commits": late_commits,
    "merges": merges,
    "multi_repo_authors": multi_repo_authors,
    "week_boundaries": week_boundaries,
    "languages": languages,
}


def all_cases() -> Built:
    """Every builder's table concatenated (entities are disjoint across builders) and every case."""
    tables: list[pa.Table] = []
    cases: list[Case] = []
    owner: dict[str, str] = {}
    for name, build in BUILDERS.items():
        table, cs = build()
        for col in ("repo", "author_id"):
            for entity in set(table.column(col).to_pylist()):
                assert owner.setdefault(entity, name) == name, f"{entity} used by {owner[entity]} and {name}"
        tables.append(table)
        cases.extend(cs)
    return pa.concat_tables(tables), cases


def last_day(table: pa.Table, cases: Sequence[Case]) -> dt.date:
    """The last day a pipeline must build so that every case's D and every commit is covered."""
    last_t = max(t for _, t, _ in cases)
    last_commit = pd.Timestamp(max(table.column("committed_at").to_pylist()))
    return max(last_t.date(), last_commit.date())
