"""Ingestion: idempotent, atomic, clear errors on bad input (the table stays at exactly the same snapshot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from skewless import lake
from skewless.lake import ingest


def _sample(sample_parquet: Path, n: int | None = None) -> pa.Table:
    t = pq.read_table(sample_parquet)
    return t.slice(0, n) if n else t


def _write(tmp_path: Path, name: str, table: pa.Table) -> Path:
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def test_ingest_is_idempotent_and_keyed_by_repo_sha(home, sample_parquet):
    first = ingest.ingest([sample_parquet])
    assert first.rows_added == 7420
    again = ingest.ingest([sample_parquet])
    assert again.rows_added == 0 and again.duplicates_skipped == 7420
    assert again.snapshot_id == first.snapshot_id  # nothing written, not even an empty snapshot
    stored = lake.commits_table().scan(selected_fields=("repo", "sha")).to_arrow()
    assert stored.num_rows == 7420
    assert len(set(zip(stored["repo"].to_pylist(), stored["sha"].to_pylist()))) == 7420


def test_overlapping_sources_add_only_new_commits(home, sample_parquet, tmp_path):
    t = _sample(sample_parquet)
    a = _write(tmp_path, "a.parquet", t.slice(0, 5000))
    b = _write(tmp_path, "b.parquet", t.slice(4000))
    assert ingest.ingest([a]).rows_added == 5000
    res = ingest.ingest([b])
    assert res.rows_added == 7420 - 5000 and res.duplicates_skipped == 1000


def test_table_is_partitioned_by_commit_month(home, sample_parquet):
    ingest.ingest([sample_parquet])
    t = lake.commits_table()
    assert [f.name for f in t.spec().fields] == ["committed_month"]
    files = t.inspect.files()
    assert files.num_rows > 12  # one data file per month at least


def _mutations(t: pa.Table):
    """(name, table, expected message fragment) for every bad-input class."""
    n = t.num_rows
    yield "missing column", t.drop_columns(["committed_at"]), "missing column(s) committed_at"
    yield "mistyped int", t.set_column(t.schema.get_field_index("files_changed"), "files_changed",
                                       pc.cast(t["files_changed"], pa.string())), "column files_changed has type string"
    yield "mistyped bool", t.set_column(t.schema.get_field_index("is_merge"), "is_merge",
                                        pc.cast(t["is_merge"], pa.int8())), "column is_merge has type int8"
    bad_ts = pa.array(["2024-01-01T00:00:00Z"] * (n - 1) + ["yesterday-ish"])
    yield "unparsable timestamp", t.set_column(t.schema.get_field_index("committed_at"), "committed_at", bad_ts), \
        "unparsable timestamp 'yesterday-ish'"
    naive = t["authored_at"].cast(pa.timestamp("us"))
    yield "naive timestamp", t.set_column(t.schema.get_field_index("authored_at"), "authored_at", naive), \
        "without time zone"
    future = pa.array([pa.scalar(4102444800_000000, pa.timestamp("us", tz="UTC"))] * n)  # 2100-01-01
    yield "future timestamp", t.set_column(t.schema.get_field_index("committed_at"), "committed_at", future), \
        "dated in the future"
    nulls = pa.array([None] + t["author_id"].to_pylist()[1:], pa.string())
    yield "null author", t.set_column(t.schema.get_field_index("author_id"), "author_id", nulls), \
        "column author_id has 1 null value"
    shas = pa.array(["not-a-sha"] + t["sha"].to_pylist()[1:])
    yield "bad sha", t.set_column(t.schema.get_field_index("sha"), "sha", shas), "full lower-case hex commit id"
    neg = pa.array([-1] + t["lines_added"].to_pylist()[1:], pa.int32())
    yield "negative count", t.set_column(t.schema.get_field_index("lines_added"), "lines_added", neg), \
        "column lines_added has negative values"
    dup = pa.concat_tables([t, t.slice(0, 1).set_column(
        t.schema.get_field_index("lines_added"), "lines_added", pa.array([999_999], pa.int32()))])
    yield "conflicting duplicate", dup, "appears twice with different values"


@pytest.mark.parametrize("case", [
    "missing column", "mistyped int", "mistyped bool", "unparsable timestamp", "naive timestamp",
    "future timestamp", "null author", "bad sha", "negative count", "conflicting duplicate"])
def test_bad_input_fails_clearly_and_leaves_the_table_unchanged(home, sample_parquet, tmp_path, case):
    base = _sample(sample_parquet, 50)
    ingest.ingest([_write(tmp_path, "good.parquet", base)])
    before = lake.snapshot_id(lake.commits_table())
    fresh = _sample(sample_parquet).slice(100, 50)  # new commits: would be added if the file were valid
    name, bad, message = next(m for m in _mutations(fresh) if m[0] == case)
    path = _write(tmp_path, "bad.parquet", bad)
    with pytest.raises(ingest.IngestError) as err:
        ingest.ingest([path])
    assert str(path) in str(err.value) and message in str(err.value)
    assert lake.snapshot_id(lake.commits_table()) == before


def test_one_bad_source_rejects_the_whole_call(home, sample_parquet, tmp_path):
    good = _write(tmp_path, "good.parquet", _sample(sample_parquet, 100))
    with pytest.raises(ingest.IngestError, match="no such file"):
        ingest.ingest([good, tmp_path / "missing.parquet"])
    with pytest.raises(lake.LakeError):  # nothing at all was written, not even the good file's commits
        lake.commits_table()


def test_not_a_parquet_file_and_not_a_repository(home, tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet")
    with pytest.raises(ingest.IngestError, match="not a readable Parquet file"):
        ingest.ingest([junk])
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    with pytest.raises(ingest.IngestError, match="not a git repository"):
        ingest.ingest([plain_dir])


def test_exact_duplicates_inside_a_file_are_stored_once(home, sample_parquet, tmp_path):
    t = _sample(sample_parquet, 10)
    res = ingest.ingest([_write(tmp_path, "dup.parquet", pa.concat_tables([t, t]))])
    assert res.rows_added == 10


def _git(cwd: Path, *args: str, date: str) -> None:
    env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_NAME": "A", "GIT_COMMITTER_NAME": "A",
           "GIT_AUTHOR_EMAIL": "Dev@Example.com", "GIT_COMMITTER_EMAIL": "dev@example.com", "PATH": "/usr/bin:/bin",
           "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_ingest_a_real_git_repository(home, tmp_path):
    repo = tmp_path / "widgets"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main", date="2024-01-01T10:00:00Z")
    (repo / "app.py").write_text("print('hi')\n")
    _git(repo, "add", ".", date="2024-01-01T10:00:00Z")
    _git(repo, "commit", "-q", "-m", "first", date="2024-01-01T10:00:00Z")
    (repo / "README.md").write_text("# widgets\n\nmore\n")
    _git(repo, "add", ".", date="2024-01-03T12:00:00Z")
    _git(repo, "commit", "-q", "-m", "docs", date="2024-01-03T12:00:00Z")
    res = ingest.ingest([repo])
    assert res.rows_added == 2
    rows = lake.commits_table().scan().to_arrow().sort_by("committed_at").to_pylist()
    assert [r["repo"] for r in rows] == ["widgets", "widgets"]
    assert rows[0]["languages"] == ["Python"] and rows[1]["languages"] == ["Markdown"]
    assert rows[1]["lines_added"] == 3
    assert all(r["author_id"].startswith("a_") and "@" not in r["author_id"] for r in rows)
    assert ingest.ingest([repo]).rows_added == 0


def test_cli_reports_bad_input_without_a_traceback(home, tmp_path):
    bad = _write(tmp_path, "bad.parquet", pa.table({"repo": ["x"]}))
    proc = subprocess.run([sys.executable, "-m", "skewless.cli", "ingest", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "missing column(s)" in proc.stderr and "Traceback" not in proc.stderr
