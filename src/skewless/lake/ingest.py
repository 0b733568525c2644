"""Stage 1 — ingest commit events into the Iceberg table ``abukix.commits``.

A source is a Parquet file with the columns of ``shared/data/commits/README.md`` or the path of a local git
repository (read from its history by :mod:`skewless.lake.gitsource`). All sources of one call are validated first and
written in ONE Iceberg commit: either everything lands or nothing does. The rules (README "Ingest"):

* **Key.** ``(repo, sha)``. A commit stored with the same values is skipped; stored with *different* values it is a
  conflict, refused with the key and the columns that differ, unless ``replace=True`` applies it as a correction.
* **Identity.** A git source is stored under ``--name``, else ``owner/name`` of its GitHub/GitLab ``origin``, else
  its directory name (said in the result). A git history stored under a name that already holds an unrelated
  history (no commit in common) is refused; :func:`rename_repo` renames a repository ingested under a bad name.
* **A git source is the repository's whole history.** After a git ingest the repository's stored commits are
  exactly those reachable from the ingested ref (default branch unless ``ref``): commits that disappeared
  (amend, rebase, force-push, a squash-merged branch) are retracted in the same commit, and the feature build
  restates the days they touched. A Parquet source only adds (and, with ``replace``, corrects) rows.
* **Event time.** Only ``committed_at`` decides what a feature counts, so only it must be plausible (not in the
  future, not before 1970); an implausible ``authored_at`` is accepted and reported.
* **Rows that break a rule** fail the whole call, naming the source, the commit (or row) and the rule; with
  ``skip_invalid=True`` they are set aside in ``abukix.commits_quarantine`` instead and the rest is ingested.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless import lake
from skewless.core.config import COMMITS_TABLE, QUARANTINE_TABLE, profile
from skewless.core.days import utc_duckdb
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from skewless.lake.gitsource import GitHistory

log = logging.getLogger(__name__)

KEY = ("repo", "sha")
STRING_COLUMNS = ("repo", "sha", "author_id")
TIMESTAMP_COLUMNS = ("authored_at", "committed_at")
INT_COLUMNS = ("files_changed", "lines_added", "lines_deleted")
#: The columns compared when a stored commit arrives again (everything but the key).
VALUE_COLUMNS = ("author_id", "authored_at", "committed_at", "is_merge", "files_changed", "lines_added",
                 "lines_deleted", "languages")
#: Commits dated further ahead than this (wall clock) are rejected as corrupt.
FUTURE_TOLERANCE = timedelta(days=1)
#: Commits dated before this are rejected as corrupt (git dates are seconds since the Unix epoch).
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
COMMIT_RETRIES = 5
#: Table properties of every table skewless writes: ONE commit attempt in pyiceberg. On a conflict pyiceberg
#: (0.12) would otherwise re-apply the same append on top of the concurrent writer's snapshot ("Commit failed due
#: to a concurrent update, retrying"), but skewless decides what to write from the snapshot it read (ingest skips
#: the stored (repo, sha), a build writes the days after the built one): a blind re-apply duplicates rows. The
#: conflict surfaces as CommitFailedException instead, and skewless retries by re-reading and recomputing.
SINGLE_ATTEMPT_COMMITS = {"commit.retry.num-retries": "0"}
#: A repository name: path segments of letters, digits, '.', '_' and '-' (``owner/name``, GitLab sub-groups).
REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
#: Retracted or corrected shas listed by name in a result (the rest are counted).
LISTED = 20
SKIP_HINT = "nothing was written; pass --skip-invalid to set such rows aside in " + QUARANTINE_TABLE


class IngestError(SkewlessError, ValueError):
    """A source cannot be ingested; the message names the source and the problem. Nothing was written."""


@dataclass(frozen=True)
class Rejected:
    """One row set aside: where it came from, the rule it broke (and why), and the row as read (JSON)."""

    source: str
    rule: str
    reason: str
    repo: str | None
    sha: str | None
    row: str


@dataclass(frozen=True)
class IngestResult:
    rows_read: int
    rows_added: int
    duplicates_skipped: int
    snapshot_id: int | None
    corrected: tuple[str, ...] = ()  # "repo@sha: col, col" of each stored commit replaced by corrected values
    retracted: tuple[tuple[str, str], ...] = ()  # (repo, sha) of each stored commit no longer in its history
    quarantined: int = 0
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"read {self.rows_read} commits, added {self.rows_added}, skipped {self.duplicates_skipped} "
                 f"already stored, corrected {len(self.corrected)}, retracted {len(self.retracted)}, "
                 f"quarantined {self.quarantined}; {COMMITS_TABLE} snapshot {self.snapshot_id}"]
        lines += [f"  corrected {c}" for c in self.corrected[:LISTED]]
        if len(self.corrected) > LISTED:
            lines.append(f"  ... and {len(self.corrected) - LISTED} more corrected")
        lines += [f"  retracted {repo}@{sha} (no longer reachable)" for repo, sha in self.retracted[:LISTED]]
        if len(self.retracted) > LISTED:
            lines.append(f"  ... and {len(self.retracted) - LISTED} more retracted")
        if self.quarantined:
            lines.append(f"  {self.quarantined} row(s) set aside in {QUARANTINE_TABLE}: `skewless quarantine list`")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# --- reading and validating -----------------------------------------------------------------------------------

def _fail(source: str, msg: str) -> IngestError:
    return IngestError(f"{source}: {msg}")


def _as_utc_timestamp(col: pa.ChunkedArray, name: str, source: str) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise _fail(source, f"column {name} is a timestamp without time zone ({t}); "
                                "skewless stores instants: write it as timestamp with tz (UTC)")
        return pc.cast(col, pa.timestamp("us", tz="UTC"), safe=False) if t.unit == "ns" else col.cast(
            pa.timestamp("us", tz="UTC"))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        import pandas as pd

        values = col.to_pandas()
        try:
            parsed = pd.to_datetime(values, format="ISO8601", utc=False)
        except (ValueError, TypeError) as e:
            bad = next((v for v in values if not _parses(v)), None)
            raise _fail(source, f"column {name} has an unparsable timestamp {bad!r} ({e})") from None
        if parsed.dt.tz is None:
            raise _fail(source, f"column {name} holds timestamps without a UTC offset (e.g. {values.iloc[0]!r})")
        return pa.chunked_array([pa.Array.from_pandas(parsed.dt.tz_convert("UTC"))]).cast(
            pa.timestamp("us", tz="UTC"))
    raise _fail(source, f"column {name} has type {t}, expected timestamp[us, tz=UTC]")


def _parses(v) -> bool:
    import pandas as pd

    try:
        pd.Timestamp(v)
        return True
    except (ValueError, TypeError):
        return False



def _string_columns(table: pa.Table, source: str) -> dict[str, pa.ChunkedArray]:
    cols = {}
    for name in STRING_COLUMNS:
        col = table[name]
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise _fail(source, f"column {name} has type {col.type}, expected string")
        cols[name] = col.cast(pa.string())
    return cols


def _typed(table: pa.Table, source: str) -> pa.Table:
    """The table in the commit schema's types (nulls still allowed), or IngestError for a column-level problem."""
    missing = [f.name for f in lake.COMMITS_ARROW_SCHEMA if f.name not in table.column_names]
    if missing:
        raise _fail(source, f"missing column(s) {', '.join(missing)}")
    cols = _string_columns(table, source)
    for name in TIMESTAMP_COLUMNS:
        cols[name] = _as_utc_timestamp(table[name], name, source)
    if not pa.types.is_boolean(table["is_merge"].type):
        raise _fail(source, f"column is_merge has type {table['is_merge'].type}, expected bool")
    cols["is_merge"] = table["is_merge"]
    for name in INT_COLUMNS:
        col = table[name]
        if not pa.types.is_integer(col.type):
            raise _fail(source, f"column {name} has type {col.type}, expected int32")
        try:
            cols[name] = col.cast(pa.int32())
        except pa.ArrowInvalid:
            raise _fail(source, f"column {name} has values outside int32") from None
    langs = table["languages"]
    if not (pa.types.is_list(langs.type) or pa.types.is_large_list(langs.type)) or not (
        pa.types.is_string(langs.type.value_type) or pa.types.is_large_string(langs.type.value_type)
    ):
        raise _fail(source, f"column languages has type {langs.type}, expected list<string>")
    cols["languages"] = langs.cast(pa.list_(pa.string()))
    for name in (*STRING_COLUMNS, "languages"):  # Parquet does not check UTF-8: a damaged file decodes later
        try:
            cols[name].validate(full=True)
        except pa.ArrowInvalid as e:
            raise _fail(source, f"column {name} holds invalid data ({e})") from None
    names = [f.name for f in lake.COMMITS_ARROW_SCHEMA]
    return pa.Table.from_arrays([cols[n].combine_chunks() if isinstance(cols[n], pa.ChunkedArray) else cols[n]
                                 for n in names], names=names)


def _false_if_null(mask) -> pa.Array:
    return pc.fill_null(mask, False)


def _row_rules(t: pa.Table, git: bool):
    """(rule, mask, message of n rows) of every row-level rule, in the order they are reported."""
    utc_us = pa.timestamp("us", tz="UTC")
    for name in t.column_names:
        extra = ""
        if git and name in TIMESTAMP_COLUMNS:
            extra = " (git could not read the commit's date: before 1970 or malformed)"
        yield ("no-null", pc.is_null(t[name]),
               lambda n, name=name, extra=extra: f"column {name} has {n} null value(s){extra}")
    langs = t["languages"]
    flat_null = pc.is_null(pc.list_flatten(langs))
    parents = pc.list_parent_indices(langs)
    bad_parents = pc.unique(pc.filter(parents, flat_null))
    yield ("no-null-language", pc.is_in(pa.array(range(t.num_rows), pa.int64()), value_set=bad_parents.cast(pa.int64())),
           lambda n: f"column languages has null language name(s) inside the lists of {n} row(s)")
    for name in STRING_COLUMNS:
        yield ("non-empty", _false_if_null(pc.equal(pc.utf8_length(t[name]), 0)),
               lambda n, name=name: f"column {name} has empty strings ({n} row(s))")
    yield ("full-sha", _false_if_null(pc.invert(pc.match_substring_regex(t["sha"], r"^([0-9a-f]{40}|[0-9a-f]{64})$"))),
           lambda n: f"column sha must be a full lower-case hex commit id ({n} row(s))")
    for name in INT_COLUMNS:
        yield ("non-negative", _false_if_null(pc.less(t[name], 0)),
               lambda n, name=name: f"column {name} has negative values ({n} row(s))")
    limit = pa.scalar(datetime.now(timezone.utc) + FUTURE_TOLERANCE, utc_us)
    yield ("committed_at-not-in-future", _false_if_null(pc.greater(t["committed_at"], limit)),
           lambda n: f"column committed_at has {n} commit(s) dated in the future")
    yield ("committed_at-after-1970", _false_if_null(pc.less(t["committed_at"], pa.scalar(EARLIEST, utc_us))),
           lambda n: f"column committed_at has {n} commit(s) dated before {EARLIEST:%Y-%m-%d}")


def _where(t: pa.Table, i: int) -> str:
    """A row by its commit when the row names one, else by its position."""
    repo, sha = t["repo"][i].as_py(), t["sha"][i].as_py()
    at = f"row {i}"
    if sha:
        at += f", commit {sha}" + (f" of {repo}" if repo else "")
    extra = []
    for name in TIMESTAMP_COLUMNS:
        us = t[name].cast(pa.int64())[i].as_py()
        if us is not None:
            extra.append(f"{name} {_instant(us)}")
    return at + (f" ({', '.join(extra)})" if extra else "")


def _row_json(t: pa.Table, i: int) -> str:
    row = {}
    for name in t.column_names:
        v = t[name][i]
        if pa.types.is_timestamp(v.type):
            us = v.cast(pa.int64()).as_py()
            row[name] = None if us is None else _instant(us)
        else:
            row[name] = v.as_py()
    return json.dumps(row, sort_keys=True, default=str)


def _reject(t: pa.Table, rows, source: str, rule: str, reason: str) -> list[Rejected]:
    return [Rejected(source, rule, reason, t["repo"][i].as_py(), t["sha"][i].as_py(), _row_json(t, i))
            for i in rows]


def normalize(table: pa.Table, source: str, skip_invalid: bool = False,
              git: bool = False) -> tuple[pa.Table, list[Rejected], list[str]]:
    """Check a table against the commit schema: (valid rows in exactly that schema, rows set aside, notes).

    A column-level problem (missing, mistyped, undecodable) always raises :class:`IngestError`. A row that breaks
    a rule raises too, naming the row and the rule, unless ``skip_invalid``: then it is returned as
    :class:`Rejected`. An implausible ``authored_at`` is accepted and reported in the notes.
    """
    t = _typed(table, source)
    bad = pa.array([False] * t.num_rows, pa.bool_())
    rejected: list[Rejected] = []
    for rule, mask, message in _row_rules(t, git):
        mask = pc.and_(mask, pc.invert(bad))  # a row is reported under the first rule it breaks
        n = pc.sum(mask.cast(pa.int64())).as_py() or 0
        if not n:
            continue
        rows = pc.indices_nonzero(mask).to_pylist()
        reason = message(n)
        if not skip_invalid:
            raise _fail(source, f"{reason}, first at {_where(t, rows[0])}; rule {rule}; {SKIP_HINT}")
        rejected += _reject(t, rows, source, rule, reason.split(" (")[0] if rule == "no-null" else reason)
        bad = pc.or_(bad, mask)
    good = t.filter(pc.invert(bad))
    notes = []
    ts = good["authored_at"]
    utc_us = pa.timestamp("us", tz="UTC")
    odd = pc.or_(pc.greater(ts, pa.scalar(datetime.now(timezone.utc) + FUTURE_TOLERANCE, utc_us)),
                 pc.less(ts, pa.scalar(EARLIEST, utc_us)))
    n_odd = pc.sum(odd.cast(pa.int64())).as_py() or 0
    if n_odd:
        i = pc.indices_nonzero(odd)[0].as_py()
        notes.append(f"{source}: accepted {n_odd} commit(s) with an implausible authored_at (e.g. commit "
                     f"{good['sha'][i].as_py()} authored {_instant(ts.cast(pa.int64())[i].as_py())}); features "
                     "read committed_at only")
    out = good.cast(lake.COMMITS_ARROW_SCHEMA)
    out, conflicts = _dedupe_within(out, source)
    if conflicts:
        if not skip_invalid:
            repo, sha = conflicts[0]
            raise _fail(source, f"commit {sha} of {repo} appears twice with different values; rule one-row-per-key; "
                                f"{SKIP_HINT}")
        out, rejected_dups = _drop_keys(out, conflicts, source, "one-row-per-key",
                                        "the commit appears twice with different values")
        rejected += rejected_dups
    return out, rejected, notes


def _instant(us: int) -> str:
    """Microseconds since the epoch as an ISO time, or as a number when no datetime can hold it."""
    try:
        return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)).isoformat()
    except OverflowError:
        return f"{us} microseconds from 1970-01-01"


def _dedupe_within(t: pa.Table, source: str) -> tuple[pa.Table, list[tuple[str, str]]]:
    """Exact duplicate rows dropped, and the keys that carry two different commits (left in place)."""
    con = utc_duckdb()
    con.register("t", t)
    conflicts = con.execute(
        "SELECT repo, sha FROM (SELECT DISTINCT * EXCLUDE (languages), list_sort(languages)::VARCHAR AS l FROM t) "
        "GROUP BY repo, sha HAVING count(*) > 1 ORDER BY repo, sha").fetchall()
    if con.execute("SELECT count(*) = count(DISTINCT (repo, sha)) FROM t").fetchall()[0][0]:
        return t, [tuple(c) for c in conflicts]
    deduped = con.sql("SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY repo, sha) = 1").to_arrow_table()
    if conflicts:  # keep every copy of a conflicting key so that all of them are reported / set aside
        con.register("bad", pa.table({"repo": [c[0] for c in conflicts], "sha": [c[1] for c in conflicts]}))
        deduped = con.sql("SELECT * FROM t SEMI JOIN bad USING (repo, sha) UNION ALL "
                          "SELECT * FROM (SELECT * FROM t ANTI JOIN bad USING (repo, sha)) "
                          "QUALIFY row_number() OVER (PARTITION BY repo, sha) = 1").to_arrow_table()
    return deduped.cast(t.schema), [tuple(c) for c in conflicts]


def _drop_keys(t: pa.Table, keys, source: str, rule: str, reason: str,
               hidden: tuple[str, ...] = ()) -> tuple[pa.Table, list[Rejected]]:
    """``t`` without the rows of the (repo, sha) ``keys``, and those rows set aside as :class:`Rejected`; the
    ``hidden`` columns (ingest's own bookkeeping) stay in the table but are left out of the rejected rows."""
    keyset = set(map(tuple, keys))
    hit = pa.array([(r, s) in keyset for r, s in zip(t["repo"].to_pylist(), t["sha"].to_pylist())], pa.bool_())
    rows = pc.indices_nonzero(hit).to_pylist()
    return t.filter(pc.invert(hit)), _reject(t.drop_columns(list(hidden)), rows, source, rule, reason)


@dataclass
class _Read:
    """One source, read and checked."""

    source: str
    rows: pa.Table
    rejected: list[Rejected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    git: "GitHistory | None" = None
    history: frozenset[str] = frozenset()  # every sha the git history holds (valid or not)
    oldest: datetime | None = None  # a shallow clone's oldest committed_at read


def unreachable(rd: _Read, stored: dict[str, datetime]) -> set[str]:
    """The stored commits (sha -> committed_at) of a git source's repository that its history no longer reaches:
    what a git ingest (or push) retracts. A shallow clone judges only what lies inside its boundary."""
    gone = {sha for sha in stored if sha not in rd.history}
    if rd.oldest is not None:  # shallow: what lies beyond the boundary was not read, so it is not judged
        gone = {sha for sha in gone if stored[sha] >= rd.oldest}
    return gone


def check_repo_name(name: str) -> str:
    if not REPO_NAME.match(name or "") or any(part in (".", "..") for part in name.split("/")):
        raise IngestError(f"repository name {name!r} is not valid: use OWNER/NAME (letters, digits, '.', '_', '-', "
                          "segments separated by '/')")
    return name


def read_source(path: Path, progress: Callable[[int], None] | None = None, name: str | None = None,
                ref: str | None = None, skip_invalid: bool = False) -> _Read:
    """Read one source (Parquet file or git repository) into the commit schema, validated."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        from skewless.lake.gitsource import NotAGitRepository, read_git_history

        try:
            table, hist = read_git_history(path, repo_name=name, ref=ref, progress=progress)
        except NotAGitRepository as e:
            raise _fail(source, f"not a git repository ({e})") from None
        except RuntimeError as e:  # git itself failed
            raise _fail(source, f"git could not read the history ({e})") from None
        rows, rejected, notes = normalize(table, source, skip_invalid, git=True)
        notes.insert(0, f"{source}: {table.num_rows} commits reachable from {hist.ref} ({hist.head[:12]}) "
                        f"stored as {hist.name!r}")
        if hist.name_origin == "directory":
            notes.insert(1, f"{source}: the name {hist.name!r} comes from the directory name (no GitHub/GitLab "
                            "`origin` remote); pass --name OWNER/NAME to choose it")
        oldest = None
        if hist.shallow and rows.num_rows:
            oldest = pc.min(rows["committed_at"]).as_py()
            notes.append(f"{source}: a shallow clone: commits older than {oldest.isoformat()} are left as stored")
        return _Read(source, rows, rejected, notes, hist, frozenset(table["sha"].to_pylist()), oldest)
    if name is not None or ref is not None:
        raise _fail(source, "--name and --ref apply to a git repository; a Parquet file names its repo in its rows")
    if not path.exists():
        raise _fail(source, "no such file or directory")
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)  # verified where the writer stored CRCs
        batches = []
        for batch in pf.iter_batches(batch_size=65_536):
            batches.append(batch)
            if progress:
                progress(batch.num_rows)
        table = pa.Table.from_batches(batches, schema=pf.schema_arrow)
    except (pa.ArrowException, OSError, ValueError, OverflowError) as e:  # damaged bytes fail in many ways
        raise _fail(source, f"not a readable Parquet file ({type(e).__name__}: {e})") from None
    rows, rejected, notes = normalize(table, source, skip_invalid)
    return _Read(source, rows, rejected, notes)



# --- writing ----------------------------------------------------------------------------------------------------

def single_attempt_commits(table):
    """``table`` with :data:`SINGLE_ATTEMPT_COMMITS` set (one metadata commit the first time; may raise
    CommitFailedException under concurrency, like any commit: call it inside the caller's retry loop)."""
    if all(table.properties.get(k) == v for k, v in SINGLE_ATTEMPT_COMMITS.items()):
        return table
    with table.transaction() as tx:
        tx.set_properties(SINGLE_ATTEMPT_COMMITS)
    return table.refresh()


def _stored_rows(table, repos: list[str]) -> pa.Table:
    """Every stored commit of these repositories (all columns)."""
    from pyiceberg.expressions import In

    if table.current_snapshot() is None or not repos:
        return lake.COMMITS_ARROW_SCHEMA.empty_table()
    return table.scan(row_filter=In("repo", repos)).to_arrow().cast(lake.COMMITS_ARROW_SCHEMA)


def _differences(incoming: pa.Table, stored: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(incoming rows whose key is not stored, incoming rows whose key is stored with other values + a ``_diff``
    column listing those columns). Incoming rows equal to the stored ones are in neither."""
    con = utc_duckdb()
    con.register("inc", incoming)
    con.register("st", stored)
    new = con.sql("SELECT * FROM inc ANTI JOIN st USING (repo, sha) ORDER BY repo, committed_at").to_arrow_table()
    checks = ", ".join(
        f"CASE WHEN list_sort(i.{c}) IS DISTINCT FROM list_sort(s.{c}) THEN '{c}' END" if c == "languages" else
        f"CASE WHEN i.{c} IS DISTINCT FROM s.{c} THEN '{c}' END" for c in VALUE_COLUMNS)
    changed = con.sql(f"SELECT i.*, list_filter([{checks}], lambda x: x IS NOT NULL) AS _diff "
                      "FROM inc i JOIN st s USING (repo, sha) ORDER BY repo, sha").to_arrow_table()
    changed = changed.filter(pc.greater(pc.list_value_length(changed["_diff"]), 0))
    return new.cast(incoming.schema), changed


def _value(t: pa.Table, i: int, col: str) -> str:
    v = t[col][i]
    if pa.types.is_timestamp(v.type):
        return _instant(v.cast(pa.int64()).as_py())
    return repr(v.as_py())


def _conflict_message(changed: pa.Table, stored: pa.Table, source: str) -> str:
    repo, sha, diff = changed["repo"][0].as_py(), changed["sha"][0].as_py(), changed["_diff"][0].as_py()
    j = next(k for k, (r, s) in enumerate(zip(stored["repo"].to_pylist(), stored["sha"].to_pylist()))
             if (r, s) == (repo, sha))
    what = "; ".join(f"{c}: stored {_value(stored, j, c)}, incoming {_value(changed, 0, c)}" for c in diff)
    more = f" (and {changed.num_rows - 1} more commit(s) like it)" if changed.num_rows > 1 else ""
    return (f"{source}: commit {sha} of {repo} is already stored with different values ({what}){more}; rule "
            "stored-commits-keep-their-values; nothing was written. Pass --replace to apply the incoming values as "
            "corrections")


@dataclass
class _Plan:
    append: pa.Table  # new commits and corrected ones
    delete: dict[str, list[str]]  # repo -> shas to remove (retracted + the old versions of corrected commits)
    added: int
    skipped: int
    corrected: list[str]
    retracted: list[tuple[str, str]]
    rejected: list[Rejected]


def refuse_unrelated(rd: "_Read", held: dict[str, Any], hint: str = "or pass --replace if this IS that repository "
                     "with its whole history rewritten") -> None:
    """Rule one-history-per-name: a git history whose name already holds commits, none of them in this history, is
    refused (``held``: sha -> committed_at of the commits stored under the name)."""
    assert rd.git is not None
    if held and not (held.keys() & rd.history):
        name = rd.git.name
        raise IngestError(
            f"{rd.source}: the repository name {name!r} already holds {len(held)} commits of an unrelated history "
            f"(committed {min(held.values()):%Y-%m-%d} to {max(held.values()):%Y-%m-%d}; no commit in common with "
            f"{rd.git.path} at {rd.git.ref}, whose root commit is {', '.join(r[:12] for r in rd.git.roots)}); "
            f"rule one-history-per-name; nothing was written. Choose a name with --name OWNER/NAME, rename the "
            f"stored one with `skewless repos rename {name} NEW`, {hint}")


def _plan(reads: list[_Read], incoming: pa.Table, src: list[int], stored: pa.Table, replace: bool,
          skip_invalid: bool) -> _Plan:
    """What one ingest writes, decided from the stored snapshot; raises IngestError for a refusal."""
    rejected: list[Rejected] = []
    retract: dict[str, set[str]] = {}
    for rd in reads:
        if rd.git is None:
            continue
        name = rd.git.name
        mine = stored.filter(pc.equal(stored["repo"], name))
        if not replace:
            refuse_unrelated(rd, dict(zip(mine["sha"].to_pylist(), mine["committed_at"].to_pylist())))
        retract.setdefault(name, set()).update(
            unreachable(rd, dict(zip(mine["sha"].to_pylist(), mine["committed_at"].to_pylist()))))
        others = [(rp, s, src_i) for rp, s, src_i in zip(incoming["repo"].to_pylist(), incoming["sha"].to_pylist(), src)
                  if rp == name and s not in rd.history]
        if others:
            raise IngestError(f"{reads[others[0][2]].source}: commit {others[0][1]} of {name} is not in the history of "
                              f"{rd.source} at {rd.git.ref}, ingested in the same call; rule one-history-per-name; "
                              "nothing was written")
    new, changed = _differences(incoming, stored)
    src_of = {(r, s): i for r, s, i in zip(incoming["repo"].to_pylist(), incoming["sha"].to_pylist(), src)}
    corrected: list[str] = []
    if changed.num_rows:
        first_source = reads[src_of[(changed["repo"][0].as_py(), changed["sha"][0].as_py())]].source
        if not replace and not skip_invalid:
            raise IngestError(_conflict_message(changed, stored, first_source))
        if not replace:
            for i in range(changed.num_rows):
                key = (changed["repo"][i].as_py(), changed["sha"][i].as_py())
                rejected += _reject(changed.drop_columns(["_diff"]), [i], reads[src_of[key]].source,
                                    "stored-commits-keep-their-values",
                                    f"already stored with different {', '.join(changed['_diff'][i].as_py())}")
            changed = changed.slice(0, 0)
        corrected = [f"{r}@{s}: {', '.join(d)}" for r, s, d in
                     zip(changed["repo"].to_pylist(), changed["sha"].to_pylist(), changed["_diff"].to_pylist())]
    delete: dict[str, set[str]] = {repo: set(shas) for repo, shas in retract.items() if shas}
    for r, s in zip(changed["repo"].to_pylist(), changed["sha"].to_pylist()):
        delete.setdefault(r, set()).add(s)
    append = pa.concat_tables([new, changed.drop_columns(["_diff"]).cast(new.schema)])
    retracted = sorted((repo, sha) for repo, shas in retract.items() for sha in shas)
    skipped = incoming.num_rows - new.num_rows - changed.num_rows - sum(1 for r in rejected
                                                                        if r.rule == "stored-commits-keep-their-values")
    return _Plan(append, {r: sorted(s) for r, s in delete.items()}, new.num_rows, skipped, corrected, retracted,
                 rejected)


def _delete_filter(delete: dict[str, list[str]]):
    from pyiceberg.expressions import And, EqualTo, In, Or

    parts = [And(EqualTo("repo", repo), In("sha", shas)) for repo, shas in sorted(delete.items())]
    expr = parts[0]
    for part in parts[1:]:
        expr = Or(expr, part)
    return expr


def ingest(sources: Sequence[Path | str], show_progress: bool = False, name: str | None = None,
           ref: str | None = None, replace: bool = False, skip_invalid: bool = False) -> IngestResult:
    """Validate every source, then write what changes in one Iceberg commit (retried on conflicts).

    ``name`` / ``ref``: the repository name and the ref of ONE git source. ``replace``: apply stored commits with
    other values as corrections (and accept a rewritten whole history under a used name). ``skip_invalid``: set
    rows that break a rule aside in ``abukix.commits_quarantine`` instead of failing the call.
    """
    from pyiceberg.exceptions import CommitFailedException
    from tqdm import tqdm

    if not sources:
        raise IngestError("no source given")
    if (name is not None or ref is not None) and len(sources) != 1:
        raise IngestError("--name and --ref apply to exactly one git repository; ingest the others separately")
    if name is not None:
        check_repo_name(name)
    p = profile()
    reads: list[_Read] = []
    with tqdm(desc="reading commits", unit=" commits", disable=not show_progress) as bar:
        for s in sources:
            reads.append(read_source(Path(s), progress=bar.update, name=name, ref=ref, skip_invalid=skip_invalid))
    names: dict[str, str] = {}
    for rd in reads:
        if rd.git is not None:
            if rd.git.name in names:
                raise IngestError(f"{rd.source} and {names[rd.git.name]} would both be stored as {rd.git.name!r}; "
                                  "rule one-history-per-name; ingest one of them with --name OWNER/NAME")
            names[rd.git.name] = rd.source
    rejected = [r for rd in reads for r in rd.rejected]
    notes = tuple(n for rd in reads for n in rd.notes)
    rows_read = sum(rd.rows.num_rows for rd in reads) + len(rejected)
    tagged = pa.concat_tables([rd.rows for rd in reads])
    src = [i for i, rd in enumerate(reads) for _ in range(rd.rows.num_rows)]
    if len(reads) > 1:
        joined = "+".join(map(str, sources))
        tagged = tagged.append_column("_src", pa.array(src, pa.int32()))
        deduped, conflicts = _dedupe_within(tagged.drop_columns(["_src"]), joined)
        if conflicts:
            if not skip_invalid:
                raise _fail(joined, f"commit {conflicts[0][1]} of {conflicts[0][0]} appears twice with different "
                                    f"values; rule one-row-per-key; {SKIP_HINT}")
            tagged, dup_rejected = _drop_keys(tagged, conflicts, joined, "one-row-per-key",
                                              "the commit appears twice with different values", hidden=("_src",))
            rejected += dup_rejected
        # one row per key (exact duplicates across sources): the first source's
        con = utc_duckdb()
        con.register("t", tagged)
        tagged = con.sql("SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY repo, sha ORDER BY _src) = 1"
                         ).to_arrow_table()
        src = tagged["_src"].to_pylist()
        tagged = tagged.drop_columns(["_src"]).cast(lake.COMMITS_ARROW_SCHEMA)
    incoming = tagged

    for attempt in range(1, COMMIT_RETRIES + 1):
        table = lake.commits_table(p, create=True)
        repos = sorted(set(incoming["repo"].to_pylist()) | set(names))
        stored = _stored_rows(table, repos)
        plan = _plan(reads, incoming, src, stored, replace, skip_invalid)
        all_rejected = rejected + plan.rejected
        if plan.append.num_rows == 0 and not plan.delete:
            quarantined = _quarantine(all_rejected, p)
            return IngestResult(rows_read, 0, plan.skipped, lake.snapshot_id(table), quarantined=quarantined,
                                notes=notes)
        summary = {"skewless.operation": "ingest", "skewless.sources": ",".join(map(str, sources))[:1000],
                   "skewless.added": str(plan.added), "skewless.corrected": str(len(plan.corrected)),
                   "skewless.retracted": str(len(plan.retracted))}
        try:
            table = single_attempt_commits(table)
            with table.transaction() as tx:
                if plan.delete:
                    tx.delete(_delete_filter(plan.delete), snapshot_properties=summary)
                if plan.append.num_rows:
                    tx.append(plan.append.sort_by([("repo", "ascending"), ("committed_at", "ascending")]),
                              snapshot_properties=summary)
        except CommitFailedException as e:  # another writer committed first: re-read, re-plan, retry
            log.warning("ingest commit conflict (attempt %d/%d): %s", attempt, COMMIT_RETRIES, e)
            time.sleep(0.05 * attempt)
            continue
        quarantined = _quarantine(all_rejected, p)
        return IngestResult(rows_read, plan.added, plan.skipped, lake.snapshot_id(table.refresh()),
                            tuple(plan.corrected), tuple(plan.retracted), quarantined, notes)
    raise IngestError(f"could not commit to {COMMITS_TABLE} after {COMMIT_RETRIES} attempts (concurrent writers)")


# --- quarantine -------------------------------------------------------------------------------------------------

QUARANTINE_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("rule", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("repo", pa.string()),
    pa.field("sha", pa.string()),
    pa.field("row", pa.string(), nullable=False),
    pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


def _quarantine_table(p, create: bool):
    from pyiceberg.exceptions import NoSuchTableError

    cat = lake.catalog(p)
    try:
        return cat.load_table(QUARANTINE_TABLE)
    except NoSuchTableError:
        if not create:
            return None
    try:
        cat.create_table(QUARANTINE_TABLE, schema=QUARANTINE_SCHEMA)
    except Exception:  # a concurrent creator won: use its table
        if not cat.table_exists(QUARANTINE_TABLE):
            raise
    return cat.load_table(QUARANTINE_TABLE)


def _quarantine(rejected: list[Rejected], p) -> int:
    """Append the rows set aside (each (source, rule, row) once, however often the same file is ingested)."""
    if not rejected:
        return 0
    from pyiceberg.exceptions import CommitFailedException

    now = datetime.now(timezone.utc)
    for attempt in range(1, COMMIT_RETRIES + 1):
        qt = single_attempt_commits(_quarantine_table(p, create=True))
        seen = set()
        if qt.current_snapshot() is not None:
            old = qt.scan(selected_fields=("source", "rule", "row")).to_arrow()
            seen = set(zip(old["source"].to_pylist(), old["rule"].to_pylist(), old["row"].to_pylist()))
        fresh, keys = [], set()
        for r in rejected:
            k = (r.source, r.rule, r.row)
            if k not in seen and k not in keys:
                keys.add(k)
                fresh.append(r)
        if not fresh:
            return len(rejected)
        rows = pa.Table.from_pylist([{**r.__dict__, "quarantined_at": now} for r in fresh], schema=QUARANTINE_SCHEMA)
        try:
            qt.append(rows, snapshot_properties={"skewless.operation": "quarantine"})
        except CommitFailedException:
            time.sleep(0.05 * attempt)
            continue
        return len(rejected)
    raise IngestError(f"the commits were stored, but {len(rejected)} invalid row(s) could not be written to "
                      f"{QUARANTINE_TABLE} (concurrent writers); ingest the same sources again with --skip-invalid")


def quarantined(source: str | None = None, limit: int | None = None) -> pa.Table:
    """The rows set aside so far (newest first), optionally of one source."""
    qt = _quarantine_table(profile(), create=False)
    if qt is None or qt.current_snapshot() is None:
        return QUARANTINE_SCHEMA.empty_table()
    from pyiceberg.expressions import EqualTo

    t = qt.scan(row_filter=EqualTo("source", source)) if source else qt.scan()
    t = t.to_arrow().sort_by([("quarantined_at", "descending"), ("source", "ascending")])
    return t.slice(0, limit) if limit else t


# --- renaming -----------------------------------------------------------------------------------------------------

def rename_repo(old: str, new: str) -> IngestResult:
    """Store every commit of repository ``old`` under the name ``new``, in one Iceberg commit.

    Refused when ``old`` holds nothing or ``new`` already holds commits. The feature build restates both entities
    (``old`` loses its rows, ``new`` gains them); earlier snapshots keep the old name for pinned training sets.
    """
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.expressions import EqualTo

    check_repo_name(new)
    p = profile()
    for attempt in range(1, COMMIT_RETRIES + 1):
        table = lake.commits_table(p)
        stored = _stored_rows(table, [old, new])
        n_old = pc.sum(pc.equal(stored["repo"], old).cast(pa.int64())).as_py() or 0
        n_new = stored.num_rows - n_old
        if not n_old:
            raise IngestError(f"no repository named {old!r} in {COMMITS_TABLE}; nothing was renamed")
        if old == new:
            raise IngestError(f"{old!r} is already its name; nothing was renamed")
        if n_new:
            raise IngestError(f"{new!r} already holds {n_new} commits; choose an unused name (nothing was renamed)")
        rows = stored.set_column(0, "repo", pa.array([new] * stored.num_rows, pa.string())).cast(
            lake.COMMITS_ARROW_SCHEMA)
        summary = {"skewless.operation": "rename", "skewless.renamed": f"{old} -> {new}"[:1000]}
        try:
            table = single_attempt_commits(table)
            with table.transaction() as tx:
                tx.delete(EqualTo("repo", old), snapshot_properties=summary)
                tx.append(rows, snapshot_properties=summary)
        except CommitFailedException:
            time.sleep(0.05 * attempt)
            continue
        return IngestResult(n_old, n_old, 0, lake.snapshot_id(table.refresh()),
                            notes=(f"renamed {n_old} commits of {old!r} to {new!r}; run `skewless features build` "
                                   f"and `skewless materialize` to restate both; the online store keeps answering "
                                   f"{old!r} with its last values (ADR 0012)",))
    raise IngestError(f"could not commit to {COMMITS_TABLE} after {COMMIT_RETRIES} attempts (concurrent writers)")
