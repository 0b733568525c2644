"""The reference implementation against hand-computed edge cases, plus property tests of the spec."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_cases
import reference
from skewless.data import SAMPLE_COMMITS as SAMPLE

ALL_BUILDERS = sorted(edge_cases.BUILDERS)


def assert_features_equal(got: dict | None, want: dict | None, context: str = "") -> None:
    """``got`` (a whole row of the reference) against the features ``want`` names, feature by feature."""
    if want is None:
        assert got is None, f"{context}: expected no row, got {got}"
        return
    assert got is not None, f"{context}: expected {want}, got no row"
    assert set(want) <= set(got), f"{context}: the reference computes no {sorted(set(want) - set(got))}"
    for name, w in want.items():
        g = got[name]
        if w is None:
            assert g is None, f"{context}: {name} expected null, got {g!r}"
        elif isinstance(w, float):
            assert g is not None and math.isclose(g, w, rel_tol=0, abs_tol=1e-9), f"{context}: {name} {g!r} != {w!r}"
        else:
            assert type(g) is int and g == w, f"{context}: {name} {g!r} != {w!r}"


# --- edge cases --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_BUILDERS)
def test_edge_case_tables_have_the_sample_schema(name: str) -> None:
    table, cases = edge_cases.BUILDERS[name]()
    assert table.schema.equals(pq.read_schema(SAMPLE), check_metadata=False)
    assert table.num_rows > 0 and cases
    assert len(set(table.column("sha").to_pylist())) == table.num_rows


@pytest.mark.parametrize("name", ALL_BUILDERS)
def test_reference_matches_hand_computed_edge_cases(name: str) -> None:
    table, cases = edge_cases.BUILDERS[name]()
    commits = table.to_pandas()
    for entity, t, want in cases:
        view = edge_cases.view_of(entity)
        got = reference.features(commits, view, entity, t)
        assert got is None or set(got) == set(reference.VIEWS[view][1]), f"{view}: the reference's row {got}"
        assert_features_equal(got, want, f"{name}: {entity} @ {t}")


@pytest.mark.parametrize("name", ALL_BUILDERS)
def test_every_feature_has_hand_computed_values_in_every_builder_of_its_view(name: str) -> None:
    # Cases name their features (per-feature comparison), so a feature no case names would go unchecked: every
    # builder checks every feature of each view it has cases for, with a value (not only "no row") somewhere.
    _, cases = edge_cases.BUILDERS[name]()
    for view, (_, names) in reference.VIEWS.items():
        rows = [w for e, _, w in cases if edge_cases.view_of(e) == view and w is not None]
        if rows:
            unchecked = [n for n in names if not any(n in w for w in rows)]
            assert not unchecked, f"{name}: no case of {view} expects {', '.join(unchecked)}"


def test_expected_rows_are_named_and_checked():
    row = edge_cases.repo_row({"commits_last_7d": 1}, days_since_last_commit=0.5)
    assert row == {"commits_last_7d": 1, "days_since_last_commit": 0.5}
    with pytest.raises(ValueError, match="commits_last_8d: not a feature of repo_activity"):
        edge_cases.repo_row(commits_last_8d=1)
    with pytest.raises(ValueError, match="names no feature"):
        edge_cases.author_row()
    commits = edge_cases.window_edges()[0].to_pandas()
    got = reference.features(commits, "repo_activity", "edge/windows", pd.Timestamp("2024-03-15", tz="UTC"))
    assert_features_equal(got, edge_cases.repo_row(commits_last_7d=1))  # only the named feature is compared
    with pytest.raises(AssertionError, match="commits_last_7d 1 != 2"):
        assert_features_equal(got, edge_cases.repo_row(commits_last_7d=2, commits_last_30d=3))


def test_all_cases_concatenates_disjoint_builders() -> None:
    table, cases = edge_cases.all_cases()
    commits = table.to_pandas()
    assert len(cases) == sum(len(b()[1]) for b in edge_cases.BUILDERS.values())
    for entity, t, want in cases:  # other builders' rows do not leak into an entity's values
        assert_features_equal(reference.features(commits, edge_cases.view_of(entity), entity, t), want, entity)
    assert edge_cases.last_day(table, cases) >= max(t.date() for _, t, _ in cases)


def test_expected_frame_aligns_with_entity_df() -> None:
    table, cases = edge_cases.week_boundaries()
    commits = table.to_pandas()
    author_cases = [c for c in cases if edge_cases.view_of(c[0]) == reference.AUTHOR_VIEW]
    entity_df = pd.DataFrame(
        {"author_id": [c[0] for c in author_cases], "event_timestamp": [c[1] for c in author_cases]},
        index=range(100, 100 + len(author_cases)),
    ).iloc[::-1]
    frame = reference.expected_frame(commits, entity_df, reference.AUTHOR_VIEW)
    assert list(frame.index) == list(entity_df.index)
    assert str(frame["commits_total"].dtype) == "Int64"
    by_t = {c[1]: c[2] for c in author_cases}
    for _, row in frame.iterrows():
        want = by_t[row["event_timestamp"]]
        assert row["reference_has_row"] == (want is not None)
        for name in reference.AUTHOR_FEATURES:
            if want is not None and name not in want:
                continue
            if want is None or want[name] is None:
                assert pd.isna(row[name])
            else:
                assert row[name] == want[name]


def test_reference_on_the_sample_is_null_before_and_zero_long_after() -> None:
    commits = pd.read_parquet(SAMPLE)
    g = commits[commits["repo"] == "golang/groupcache"]
    first, last = g["committed_at"].min(), g["committed_at"].max()
    assert reference.repo_features(commits, "golang/groupcache", reference.day_of(first)) is None
    after = reference.repo_features(commits, "golang/groupcache", pd.Timestamp("2026-08-22", tz="UTC"))
    assert after is not None
    assert after["commits_last_7d"] == after["commits_last_30d"] == after["active_authors_last_30d"] == 0
    assert after["lines_changed_last_7d"] == 0 and after["mean_files_per_commit_last_30d"] is None
    assert after["days_since_last_commit"] == (pd.Timestamp("2026-08-22", tz="UTC") - last) / pd.Timedelta(days=1)


def test_time_helpers() -> None:
    assert reference.day_of(pd.Timestamp("2024-01-08 23:59:59.999999", tz="UTC")) == pd.Timestamp("2024-01-08", tz="UTC")
    # A non-UTC timestamp is floored on its UTC day: 2024-01-08 01:00 +02:00 is 2024-01-07 23:00 UTC.
    assert reference.day_of(pd.Timestamp("2024-01-08 01:00", tz="Etc/GMT-2")) == pd.Timestamp("2024-01-07", tz="UTC")
    assert reference.monday_on_or_before(pd.Timestamp("2024-01-08", tz="UTC")) == pd.Timestamp("2024-01-08", tz="UTC")
    assert reference.monday_on_or_before(pd.Timestamp("2024-01-14", tz="UTC")) == pd.Timestamp("2024-01-08", tz="UTC")
    assert reference.as_of_date(dt.date(2024, 1, 9)) == pd.Timestamp("2024-01-09", tz="UTC")


# --- property tests ----------------------------------------------------------------------------------------------
START = pd.Timestamp("2024-01-01", tz="UTC")
SPAN_S = 120 * 86400
REPOS = ["p/one", "p/two"]
AUTHORS = [edge_cases.aid(900 + i) for i in range(4)]
LANGS = ["Go", "Python", "Other", "Rust"]

commit_st = st.fixed_dictionaries(
    {
        "repo": st.sampled_from(REPOS),
        "author_id": st.sampled_from(AUTHORS),
        "committed_s": st.integers(0, SPAN_S),
        "authored_s": st.integers(-400 * 86400, SPAN_S + 10 * 86400),
        "is_merge": st.booleans(),
        "files": st.integers(0, 50),
        "added": st.integers(0, 1000),
        "deleted": st.integers(0, 1000),
        "languages": st.lists(st.sampled_from(LANGS), unique=True),
    }
)


def _commits(rows: list[dict]) -> pd.DataFrame:
    built = []
    for i, r in enumerate(rows):
        merge = r["is_merge"]
        built.append(
            {
                "repo": r["repo"],
                "sha": f"{i:040x}",
                "author_id": r["author_id"],
                "authored_at": (START + pd.Timedelta(seconds=r["authored_s"])).to_pydatetime(),
                "committed_at": (START + pd.Timedelta(seconds=r["committed_s"])).to_pydatetime(),
                "is_merge": merge,
                "files_changed": 0 if merge else r["files"],
                "lines_added": 0 if merge else r["added"],
                "lines_deleted": 0 if merge else r["deleted"],
                "languages": [] if merge else sorted(r["languages"]),
            }
        )
    return pa.Table.from_pylist(built, schema=edge_cases.SCHEMA).to_pandas()


T_US = st.integers(-5 * 86_400_000_000, (SPAN_S + 40 * 86400) * 1_000_000)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _t(us: int) -> pd.Timestamp:
    return START + pd.Timedelta(microseconds=us)


@PROPS
@given(rows=st.lists(commit_st, min_size=1, max_size=25), t_us=T_US, repo=st.sampled_from(REPOS))
def test_repo_window_invariants(rows: list[dict], t_us: int, repo: str) -> None:
    commits = _commits(rows)
    f = reference.repo_features(commits, repo, _t(t_us))
    if f is None:
        return
    assert 0 <= f["commits_last_7d"] <= f["commits_last_30d"]
    assert (f["active_authors_last_30d"] == 0) == (f["commits_last_30d"] == 0)
    assert f["active_authors_last_30d"] <= f["commits_last_30d"]
    assert f["lines_changed_last_7d"] >= 0
    assert f["commits_last_30d"] > 0 or f["mean_files_per_commit_last_30d"] is None
    assert f["days_since_last_commit"] > 0
    assert (f["commits_last_7d"] > 0) == (f["days_since_last_commit"] <= 7)
    assert (f["commits_last_30d"] > 0) == (f["days_since_last_commit"] <= 30)


@PROPS
@given(rows=st.lists(commit_st, min_size=1, max_size=25), t_us=T_US, author=st.sampled_from(AUTHORS))
def test_author_invariants(rows: list[dict], t_us: int, author: str) -> None:
    commits = _commits(rows)
    f = reference.author_features(commits, author, _t(t_us))
    if f is None:
        return
    assert f["commits_total"] >= 1
    assert 0 <= f["langs_used"] <= 3  # Go, Python, Rust; never Other
    assert 0 <= f["weekly_streak"] <= f["commits_total"]


@PROPS
@given(
    rows=st.lists(commit_st, min_size=1, max_size=25),
    day=st.integers(-3, SPAN_S // 86400 + 40),
    offsets=st.lists(st.integers(0, 86_400_000_000 - 1), min_size=1, max_size=4),
)
def test_values_constant_within_a_utc_day(rows: list[dict], day: int, offsets: list[int]) -> None:
    commits = _commits(rows)
    d = START + pd.Timedelta(days=day)
    for entity in REPOS:
        base = reference.repo_features(commits, entity, d)
        for off in offsets:
            assert reference.repo_features(commits, entity, d + pd.Timedelta(microseconds=off)) == base
    for entity in AUTHORS:
        base = reference.author_features(commits, entity, d)
        for off in offsets:
            assert reference.author_features(commits, entity, d + pd.Timedelta(microseconds=off)) == base


@PROPS
@given(
    rows=st.lists(commit_st, min_size=1, max_size=25),
    new_authored=st.lists(st.integers(-4000 * 86400, 4000 * 86400), min_size=25, max_size=25),
    t_us=T_US,
)
def test_authored_at_is_ignored(rows: list[dict], new_authored: list[int], t_us: int) -> None:
    commits = _commits(rows)
    moved = commits.copy()
    moved["authored_at"] = [START + pd.Timedelta(seconds=s) for s in new_authored[: len(moved)]]
    t = _t(t_us)
    for entity in REPOS:
        assert reference.repo_features(commits, entity, t) == reference.repo_features(moved, entity, t)
    for entity in AUTHORS:
        assert reference.author_features(commits, entity, t) == reference.author_features(moved, entity, t)


@PROPS
@given(rows=st.lists(commit_st, min_size=1, max_size=25), day=st.integers(-3, SPAN_S // 86400 + 40))
def test_windows_agree_with_a_calendar_day_count(rows: list[dict], day: int) -> None:
    """A second formulation: an N-day window is the commits whose UTC calendar date is one of the N days before D."""
    commits = _commits(rows)
    d = START + pd.Timedelta(days=day)
    for repo in REPOS:
        f = reference.repo_features(commits, repo, d)
        mine = [r for r in commits.to_dict("records") if r["repo"] == repo]
        dates = [r["committed_at"].date() for r in mine]
        if not any(x < d.date() for x in dates):
            assert f is None
            continue
        last7 = {d.date() - dt.timedelta(days=k) for k in range(1, 8)}
        last30 = {d.date() - dt.timedelta(days=k) for k in range(1, 31)}
        in7 = [r for r in mine if r["committed_at"].date() in last7]
        in30 = [r for r in mine if r["committed_at"].date() in last30]
        assert f["commits_last_7d"] == len(in7)
        assert f["commits_last_30d"] == len(in30)
        assert f["lines_changed_last_7d"] == sum(r["lines_added"] + r["lines_deleted"] for r in in7)
        assert f["active_authors_last_30d"] == len({r["author_id"] for r in in30})
        nm = [r["files_changed"] for r in in30 if not r["is_merge"]]
        if nm:
            assert math.isclose(f["mean_files_per_commit_last_30d"], sum(nm) / len(nm), abs_tol=1e-9)
        else:
            assert f["mean_files_per_commit_last_30d"] is None


@PROPS
@given(rows=st.lists(commit_st, min_size=1, max_size=25), day=st.integers(0, SPAN_S // 86400 + 40))
def test_weekly_streak_agrees_with_iso_weeks(rows: list[dict], day: int) -> None:
    """A second formulation of weekly_streak via ISO (year, week) numbers, which also start on Monday."""
    commits = _commits(rows)
    d = (START + pd.Timedelta(days=day)).date()
    for author in AUTHORS:
        f = reference.author_features(commits, author, pd.Timestamp(d, tz="UTC"))
        stamps = [c.date() for a, c in zip(commits["author_id"], commits["committed_at"]) if a == author]
        if not any(x < d for x in stamps):
            assert f is None
            continue
        active = {x.isocalendar()[:2] for x in stamps if x < d}
        # the first week checked ends at the Monday on or before d: it is the ISO week containing that Monday - 1
        probe = d - dt.timedelta(days=d.weekday()) - dt.timedelta(days=1)
        streak = 0
        while probe.isocalendar()[:2] in active:
            streak += 1
            probe -= dt.timedelta(days=7)
        assert f["weekly_streak"] == streak
