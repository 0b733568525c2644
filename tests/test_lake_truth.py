"""The lake tells the truth about each repository (issue "The lake tells the truth").

Each of the four situations users hit is reproduced here first: two repositories under one name, a rewritten
history, a corrected row, a bad clock. Then a property test drives random sequences of commit / amend /
force-push / re-ingest / correction against a small model of "the reachable history" and compares the stored
commits and every feature of the repository at random instants with the reference implementation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
from skewless import features, lake
from skewless.lake import ingest

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)


class Git:
    """A throwaway repository driven by the git CLI with fixed identities; dates are given per commit."""

    def __init__(self, path: Path, bare_clone_of: "Git | None" = None, origin: str | None = None) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        self.env.update(HOME=str(path.parent), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", GIT_AUTHOR_NAME="A",
                        GIT_COMMITTER_NAME="C", GIT_COMMITTER_EMAIL="c@example.net")
        if bare_clone_of is not None:
            subprocess.run(["git", "clone", "-q", "--bare", "--no-local", str(bare_clone_of.path), str(path)],
                           env=self.env, check=True, capture_output=True)
            self.git("remote", "remove", "origin")
        else:
            path.mkdir(parents=True)
            self.git("init", "-q", "-b", "main")
            self.git("config", "commit.gpgsign", "false")
        if origin:
            self.git("remote", "add", "origin", origin)
        self.n = 0

    def git(self, *args: str, env: dict | None = None) -> str:
        r = subprocess.run(["git", "-C", str(self.path), *args], env={**self.env, **(env or {})},
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def commit(self, when: datetime, author: str = "dev@example.com", authored: datetime | None = None,
               amend: bool = False) -> str:
        self.n += 1
        (self.path / f"f{self.n % 3}.py").write_text(f"x = {self.n}\n" * (self.n % 4 + 1))
        self.git("add", "-A")
        env = {"GIT_AUTHOR_DATE": (authored or when).isoformat(), "GIT_COMMITTER_DATE": when.isoformat(),
               "GIT_AUTHOR_EMAIL": author}
        self.git("commit", "-q", "--allow-empty", *(["--amend"] if amend else []), "-m", f"c{self.n}", env=env)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref)

    def reachable(self, ref: str = "main") -> set[str]:
        return set(self.git("rev-list", ref).split())


def stored(repo: str | None = None) -> pa.Table:
    t = lake.commits_table().scan().to_arrow()
    return t.filter(pc.equal(t["repo"], repo)) if repo else t


def history(repo: str) -> set[str]:
    return set(stored(repo)["sha"].to_pylist())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skewless.cli", *args], capture_output=True, text=True,
                          env=os.environ.copy())


def make_repo(tmp_path: Path, name: str, n: int, start: datetime = T0, **kw) -> Git:
    g = Git(tmp_path / name, **kw)
    for i in range(n):
        g.commit(start + timedelta(hours=7 * i))
    return g


# --- 1. two repositories, one entity ---------------------------------------------------------------------------

def test_two_unrelated_repositories_under_one_derived_name_are_refused(home, tmp_path):
    a_src, b_src = make_repo(tmp_path / "a_src", "w", 4), make_repo(tmp_path / "b_src", "w", 3, T0 + timedelta(days=3))
    a = Git(tmp_path / "mirrors_a" / "repo", bare_clone_of=a_src)
    b = Git(tmp_path / "mirrors_b" / "repo", bare_clone_of=b_src)
    first = ingest.ingest([a.path])
    assert first.rows_added == 4
    assert any("comes from the directory name" in n and "--name" in n for n in first.notes)
    with pytest.raises(ingest.IngestError) as err:
        ingest.ingest([b.path])
    msg = str(err.value)
    assert "'repo' already holds 4 commits of an unrelated history" in msg and str(b.path) in msg
    assert "--name" in msg and "skewless repos rename" in msg
    assert history("repo") == a.reachable()  # nothing of b was written
    from skewless.stream import intake  # the fresh path's git push applies the same rule, before sending anything

    with pytest.raises(ingest.IngestError) as err:
        intake.push([b.path])
    assert "'repo' already holds 4 commits of an unrelated history" in str(err.value)
    assert "skewless ingest --replace" in str(err.value)
    named = ingest.ingest([b.path], name="acme/other")
    assert named.rows_added == 3 and history("acme/other") == b.reachable() and history("repo") == a.reachable()
    assert not any("directory name" in n for n in named.notes)


def test_foo_and_foo_git_in_one_call_are_refused(home, tmp_path):
    src = make_repo(tmp_path / "src_a", "w", 2)
    other = make_repo(tmp_path / "src_b", "w", 2, T0 + timedelta(days=9))
    foo = Git(tmp_path / "x" / "foo", bare_clone_of=src)
    foo_git = Git(tmp_path / "y" / "foo.git", bare_clone_of=other)
    with pytest.raises(ingest.IngestError, match="would both be stored as 'foo'"):
        ingest.ingest([foo.path, foo_git.path])
    with pytest.raises(lake.LakeError):
        lake.commits_table()  # nothing was written


def test_a_name_from_the_origin_remote_is_not_flagged(home, tmp_path):
    g = make_repo(tmp_path, "checkout", 2, origin="https://github.com/acme/widgets.git")
    res = ingest.ingest([g.path])
    assert history("acme/widgets") == g.reachable()
    assert not any("directory name" in n for n in res.notes)


def test_bad_name_and_options_for_the_wrong_source_are_refused(home, tmp_path, sample_parquet):
    g = make_repo(tmp_path, "w", 1)
    for bad in ("", "a b", "../x", "a//b", "x/"):
        with pytest.raises(ingest.IngestError, match="is not valid"):
            ingest.ingest([g.path], name=bad)
    with pytest.raises(ingest.IngestError, match="apply to a git repository"):
        ingest.ingest([sample_parquet], name="acme/x")
    with pytest.raises(ingest.IngestError, match="exactly one git repository"):
        ingest.ingest([g.path, sample_parquet], ref="main")
    with pytest.raises(ingest.IngestError, match="no branch, tag or commit named 'nope'"):
        ingest.ingest([g.path], ref="nope")


def test_rename_moves_a_repository_and_the_features_follow(home, tmp_path):
    g = make_repo(tmp_path, "repo", 5)
    ingest.ingest([g.path])
    features.build(until=(T0 + timedelta(days=3)).date())
    res = cli("repos", "rename", "repo", "acme/widgets")
    assert res.returncode == 0, res.stderr
    assert history("acme/widgets") == g.reachable() and history("repo") == set()
    features.build(until=(T0 + timedelta(days=3)).date())
    rows = features.REPO_ACTIVITY
    t = lake.load_table(rows.identifier).scan().to_arrow()
    assert set(t["repo"].to_pylist()) == {"acme/widgets"}
    again = cli("repos", "rename", "nothing/here", "x/y")
    assert again.returncode == 1 and "no repository named 'nothing/here'" in again.stderr
    assert "Traceback" not in again.stderr


# --- 2. rewritten history ------------------------------------------------------------------------------------------

def test_amended_commit_is_retracted_and_features_restated(home, tmp_path):
    g = make_repo(tmp_path, "repo", 9, origin="git@github.com:acme/amend.git")
    assert ingest.ingest([g.path]).rows_added == 9
    day = (T0 + timedelta(days=4)).date()
    features.build(until=day)
    repo_t = lake.load_table(features.REPO_ACTIVITY.identifier)
    pinned = lake.snapshot_id(repo_t)
    old_last = g.head()
    g.commit(T0 + timedelta(hours=7 * 8, minutes=5), amend=True)
    res = ingest.ingest([g.path])
    assert (res.rows_added, len(res.retracted)) == (1, 1)
    assert res.retracted == (("acme/amend", old_last),) and f"retracted acme/amend@{old_last}" in str(res)
    assert history("acme/amend") == g.reachable() and stored().num_rows == 9
    features.build(until=day)
    _assert_features_equal_reference("acme/amend", stored("acme/amend"), day)
    # the snapshot a training set was pinned to still answers what it answered
    before = lake.load_table(features.REPO_ACTIVITY.identifier).scan(snapshot_id=pinned).to_arrow()
    assert before.num_rows > 0 and pinned in [s.snapshot_id for s in
                                              lake.load_table(features.REPO_ACTIVITY.identifier).snapshots()]


def test_force_push_and_squash_merged_branch_are_retracted(home, tmp_path):
    g = make_repo(tmp_path, "repo", 4, origin="https://github.com/acme/squash")
    g.git("checkout", "-q", "-b", "topic")
    for i in range(3):
        g.commit(T0 + timedelta(days=2, hours=i))
    topic = g.reachable("topic") - g.reachable("main")
    # one run made while the checkout was on the branch, asked for explicitly
    res = ingest.ingest([g.path], ref="topic")
    assert res.rows_added == 7 and any("refs/heads/topic" in n for n in res.notes)
    g.git("checkout", "-q", "main")
    g.git("merge", "-q", "--squash", "topic")
    g.commit(T0 + timedelta(days=3))
    g.git("branch", "-q", "-D", "topic")
    res = ingest.ingest([g.path])  # the default branch
    assert {sha for _, sha in res.retracted} == topic and res.rows_added == 1
    assert history("acme/squash") == g.reachable()
    # a force-push: main reset two commits back and rebuilt
    g.git("reset", "-q", "--hard", "HEAD~2")
    g.commit(T0 + timedelta(days=4))
    res = ingest.ingest([g.path])
    assert len(res.retracted) == 2 and res.rows_added == 1 and history("acme/squash") == g.reachable()


def test_checked_out_feature_branch_is_not_the_default(home, tmp_path):
    g = make_repo(tmp_path, "repo", 3, origin="https://github.com/acme/dflt")
    g.git("checkout", "-q", "-b", "wip")
    g.commit(T0 + timedelta(days=5))
    res = ingest.ingest([g.path])
    assert history("acme/dflt") == g.reachable("main") and any("refs/heads/main" in n for n in res.notes)


# --- 3. corrections --------------------------------------------------------------------------------------------

def test_a_corrected_row_is_a_conflict_unless_replace(home, tmp_path, sample_parquet):
    t = pq.read_table(sample_parquet).slice(0, 20)
    pq.write_table(t, tmp_path / "a.parquet")
    ingest.ingest([tmp_path / "a.parquet"])
    before = lake.snapshot_id(lake.commits_table())
    fixed = t.set_column(t.schema.get_field_index("lines_added"), "lines_added",
                         pa.array([t["lines_added"][0].as_py() + 5] + t["lines_added"].to_pylist()[1:], pa.int32()))
    pq.write_table(fixed, tmp_path / "fixed.parquet")
    sha, repo = t["sha"][0].as_py(), t["repo"][0].as_py()
    res = cli("ingest", str(tmp_path / "fixed.parquet"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"commit {sha} of {repo} is already stored with different values" in res.stderr
    assert f"lines_added: stored {t['lines_added'][0].as_py()}, incoming {t['lines_added'][0].as_py() + 5}" in \
        res.stderr and "--replace" in res.stderr
    assert lake.snapshot_id(lake.commits_table()) == before
    # equal values stay a no-op
    same = ingest.ingest([tmp_path / "a.parquet"])
    assert same.rows_added == 0 and same.duplicates_skipped == 20 and same.snapshot_id == before
    ok = ingest.ingest([tmp_path / "fixed.parquet"], replace=True)
    assert ok.corrected == (f"{repo}@{sha}: lines_added",) and f"corrected {repo}@{sha}" in str(ok)
    now = stored()
    assert now.num_rows == 20
    row = now.filter(pc.equal(now["sha"], sha)).to_pylist()[0]
    assert row["lines_added"] == t["lines_added"][0].as_py() + 5


def test_a_correction_restates_the_features(home, tmp_path, sample_parquet):
    t = pq.read_table(sample_parquet)
    repo = t["repo"][0].as_py()
    t = t.filter(pc.equal(t["repo"], repo)).slice(0, 60)
    pq.write_table(t, tmp_path / "a.parquet")
    ingest.ingest([tmp_path / "a.parquet"])
    day = pc.max(t["committed_at"]).as_py().date() + timedelta(days=1)
    features.build(until=day)
    i = 5
    when = t["committed_at"][i].as_py() - timedelta(days=20)  # moved three weeks back: windows change
    fixed = t.set_column(t.schema.get_field_index("committed_at"), "committed_at",
                         pa.array(t["committed_at"].to_pylist()[:i] + [when] + t["committed_at"].to_pylist()[i + 1:],
                                  t.schema.field("committed_at").type))
    pq.write_table(fixed, tmp_path / "b.parquet")
    ingest.ingest([tmp_path / "b.parquet"], replace=True)
    features.build(until=day)
    _assert_features_equal_reference(repo, stored(repo), day)


# --- 4. bad clocks -------------------------------------------------------------------------------------------------

def test_future_author_date_is_accepted_and_reported(home, tmp_path):
    g = make_repo(tmp_path, "repo", 3, origin="https://github.com/acme/clock")
    g.commit(T0 + timedelta(days=2), authored=datetime(2099, 1, 1, tzinfo=timezone.utc))
    res = ingest.ingest([g.path])
    assert res.rows_added == 4
    assert any("implausible authored_at" in n and "2099-01-01" in n for n in res.notes)


def _pre_1970_commit(g: Git) -> str:
    """A hand-made commit object on main whose committer date (before 1970) git cannot format."""
    tree = g.head("HEAD^{tree}")
    parent = g.head()
    body = (f"tree {tree}\nparent {parent}\nauthor A <a@example.com> -100 +0000\n"
            "committer A <a@example.com> -100 +0000\n\nold clock\n")
    r = subprocess.run(["git", "-C", str(g.path), "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
                       input=body, capture_output=True, text=True, env=g.env, check=True)
    sha = r.stdout.strip()
    g.git("update-ref", "refs/heads/main", sha)
    return sha


def test_unformattable_commit_date_names_source_and_commit(home, tmp_path):
    g = make_repo(tmp_path, "repo", 3, origin="https://github.com/acme/old")
    bad = _pre_1970_commit(g)
    res = cli("ingest", str(g.path))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(g.path) in res.stderr and bad in res.stderr and "git could not read the commit's date" in res.stderr
    assert "--skip-invalid" in res.stderr
    with pytest.raises(lake.LakeError):
        lake.commits_table()
    ok = cli("ingest", "--skip-invalid", str(g.path))
    assert ok.returncode == 0, ok.stderr
    assert "quarantined 1" in ok.stdout
    assert history("acme/old") == g.reachable() - {bad}
    listed = cli("quarantine", "list")
    assert listed.returncode == 0 and bad in listed.stdout and "no-null" in listed.stdout
    q = ingest.quarantined()
    assert q.num_rows == 1 and q["sha"][0].as_py() == bad and q["source"][0].as_py() == str(g.path)
    assert json.loads(q["row"][0].as_py())["committed_at"] is None
    ingest.ingest([g.path], skip_invalid=True)  # again: the quarantine holds the row once
    assert ingest.quarantined().num_rows == 1


def test_skip_invalid_sets_rows_aside_and_keeps_the_rest(home, tmp_path, sample_parquet):
    t = pq.read_table(sample_parquet).slice(0, 30)
    future = t["committed_at"].to_pylist()
    future[3] = datetime(2100, 1, 1, tzinfo=timezone.utc)
    shas = t["sha"].to_pylist()
    shas[7] = "nope"
    bad = t.set_column(t.schema.get_field_index("committed_at"), "committed_at",
                       pa.array(future, t.schema.field("committed_at").type))
    bad = bad.set_column(bad.schema.get_field_index("sha"), "sha", pa.array(shas, pa.string()))
    path = tmp_path / "bad.parquet"
    pq.write_table(bad, path)
    with pytest.raises(ingest.IngestError) as err:
        ingest.ingest([path])
    assert str(path) in str(err.value) and "row 7" in str(err.value) and "rule full-sha" in str(err.value)
    res = ingest.ingest([path], skip_invalid=True)
    assert res.rows_added == 28 and res.quarantined == 2
    rules = sorted(ingest.quarantined()["rule"].to_pylist())
    assert rules == ["committed_at-not-in-future", "full-sha"]


# --- the property: the lake equals the reachable history -----------------------------------------------------------

def _assert_features_equal_reference(repo: str, commits: pa.Table, through) -> None:
    """Every repo_activity feature of ``repo`` at instants through ``through`` equals the reference's."""
    frame = commits.to_pandas()
    t = lake.load_table(features.REPO_ACTIVITY.identifier).scan().to_arrow().to_pandas()
    t = t[t["repo"] == repo].sort_values("event_timestamp")
    start = reference.day_of(frame["committed_at"].min()) - pd.Timedelta(days=2) if len(frame) else None
    instants = [] if start is None else list(pd.date_range(start, pd.Timestamp(through, tz="UTC"), freq="13h"))
    for at in instants:
        want = reference.repo_features(frame, repo, at)
        got_rows = t[t["event_timestamp"] <= at]
        got = None if got_rows.empty else got_rows.iloc[-1]
        if want is None:  # no commit before D: no row, or a zero-history row (the reference allows both)
            if got is None:
                continue
            want = reference.empty_history(reference.REPO_VIEW)
        assert got is not None, (repo, at, want)
        for name in reference.REPO_FEATURES:
            w, v = want[name], got[name]
            if w is None or (isinstance(w, float) and pd.isna(w)):
                assert pd.isna(v), (repo, at, name, w, v)
            else:
                assert v == pytest.approx(w), (repo, at, name, w, v)
    if not len(frame):
        assert t.empty, f"{repo} has no commit left but still has feature rows"


LAKE_RUNS = settings(max_examples=int(os.environ.get("SKEWLESS_LAKE_EXAMPLES", "8")), deadline=None,
                     derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

OPS = st.lists(st.sampled_from(["commit", "commit", "amend", "force_push", "ingest", "ingest", "correct"]),
               min_size=3, max_size=7)


_SEEN: dict[str, int] = {}


@LAKE_RUNS
@given(ops=OPS, seed=st.integers(0, 10_000))
def test_the_lake_equals_the_reachable_history(home, tmp_path_factory, ops, seed):
    """Random commit / amend / force-push / ingest / correction sequences against a model of the stored history.

    The model: after a git ingest, the stored commits of the repository are exactly the reachable ones, with the
    git values; a correction (Parquet, ``replace=True``) changes one stored commit's values until the next git
    ingest, which refuses the call while a corrected commit's values differ from git's (a conflict) and otherwise
    leaves the table as the model says. After every step the stored rows and every feature at instants through
    the last day are compared."""
    import random

    rnd = random.Random(seed)
    root = tmp_path_factory.mktemp("lake_prop")
    name = f"acme/prop{root.name}"  # one home for all examples: each example is its own repository
    g = Git(root / "repo", origin=f"https://github.com/{name}")
    clock = T0
    for _ in range(2):
        clock += timedelta(hours=rnd.randint(1, 40))
        g.commit(clock, author=f"dev{rnd.randint(0, 2)}@example.com")
    model: dict[str, dict] | None = None  # sha -> row as stored (None: nothing stored yet)
    corrected: set[str] = set()
    day = None
    for op in ops + ["ingest"]:
        _SEEN[op] = _SEEN.get(op, 0) + 1
        if op == "commit":
            clock += timedelta(hours=rnd.randint(1, 60))
            g.commit(clock, author=f"dev{rnd.randint(0, 2)}@example.com")
        elif op == "amend" and len(g.reachable()) > 1:
            clock += timedelta(minutes=rnd.randint(1, 90))
            g.commit(clock, author=f"dev{rnd.randint(0, 2)}@example.com", amend=True)
        elif op == "force_push" and len(g.reachable()) > 2:
            g.git("reset", "-q", "--hard", f"HEAD~{rnd.randint(1, min(3, len(g.reachable()) - 1))}")
            clock += timedelta(hours=rnd.randint(1, 30))
            g.commit(clock, author=f"dev{rnd.randint(0, 2)}@example.com")
        elif op == "correct" and model:
            sha = rnd.choice(sorted(model))
            row = dict(model[sha])
            row["lines_added"] += rnd.randint(1, 50)
            row["committed_at"] = row["committed_at"] - timedelta(hours=rnd.randint(0, 100))
            path = root / f"fix{len(corrected)}_{sha[:7]}.parquet"
            pq.write_table(pa.Table.from_pylist([row], schema=lake.COMMITS_ARROW_SCHEMA), path)
            ingest.ingest([path], replace=True)
            model[sha] = row
            corrected.add(sha)
        elif op == "ingest":
            from skewless.lake.gitsource import read_git_repository

            truth = {r["sha"]: r for r in read_git_repository(g.path, repo_name=name).to_pylist()}
            conflict = model is not None and any(s in truth and _differs(truth[s], model[s]) for s in model)
            if model is not None and set(model) - set(truth):
                _SEEN["retraction"] = _SEEN.get("retraction", 0) + 1
            if conflict:
                _SEEN["conflict"] = _SEEN.get("conflict", 0) + 1
                before = lake.snapshot_id(lake.commits_table())
                with pytest.raises(ingest.IngestError, match="already stored with different values"):
                    ingest.ingest([g.path])
                assert lake.snapshot_id(lake.commits_table()) == before
                ingest.ingest([g.path], replace=True)  # the operator takes git's values back
            else:
                ingest.ingest([g.path])
            model = truth
            corrected.clear()
        if model is None:
            continue
        got = {r["sha"]: r for r in stored(name).to_pylist()}
        assert set(got) == set(model), (op, set(got) ^ set(model))
        for sha, r in model.items():
            assert not _differs(got[sha], r), (op, sha)
        day = max(r["committed_at"] for r in model.values()).date() + timedelta(days=1)
        features.build(until=day)
        _assert_features_equal_reference(name, stored(name), day)


def test_the_property_run_exercised_every_situation():
    """Runs after the property test (file order): it must have met retractions, conflicts and corrections."""
    print(f"RELIABILITY lake property: {_SEEN}")
    if _SEEN:
        assert all(_SEEN.get(k, 0) > 0 for k in ("amend", "force_push", "correct", "retraction", "conflict")), _SEEN


def _differs(a: dict, b: dict) -> bool:
    return any((sorted(a[c]) if c == "languages" else a[c]) != (sorted(b[c]) if c == "languages" else b[c])
               for c in ingest.VALUE_COLUMNS)
