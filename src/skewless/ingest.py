"""Stage 1 — ingest commit events into the Iceberg table ``abukix.commits``.

A source is a Parquet file with the columns of ``shared/data/commits/README.md`` or the path of a local git
repository (read from its history by :mod:`skewless.gitsource`). All sources of one call are validated first and
written in ONE Iceberg snapshot: either every new commit lands or none does. ``(repo, sha)`` is the key: commits
already in the table are skipped, so ingesting the same data twice adds nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless import lake
from skewless.config import COMMITS_TABLE, profile

log = logging.getLogger(__name__)

KEY = ("repo", "sha")
STRING_COLUMNS = ("repo", "sha", "author_id")
TIMESTAMP_COLUMNS = ("authored_at", "committed_at")
INT_COLUMNS = ("files_changed", "lines_added", "lines_deleted")
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


class IngestError(ValueError):
    """A source cannot be ingested; the message names the source and the problem. Nothing was written."""


@dataclass(frozen=True)
class IngestResult:
    rows_read: int
    rows_added: int
    duplicates_skipped: int
    snapshot_id: int | None

    def __str__(self) -> str:
        return (f"read {self.rows_read} commits, added {self.rows_added}, skipped {self.duplicates_skipped} "
                f"already stored; {COMMITS_TABLE} snapshot {self.snapshot_id}")


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


def normalize(table: pa.Table, source: str) -> pa.Table:
    """Check a table against the commit schema and return it in exactly that schema, or raise IngestError."""
    missing = [f.name for f in lake.COMMITS_ARROW_SCHEMA if f.name not in table.column_names]
    if missing:
        raise _fail(source, f"missing column(s) {', '.join(missing)}")
    cols: dict[str, pa.ChunkedArray] = {}
    for name in STRING_COLUMNS:
        col = table[name]
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise _fail(source, f"column {name} has type {col.type}, expected string")
        cols[name] = col.cast(pa.string())
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
    cols["languages"] = langs.cast(lake.COMMITS_ARROW_SCHEMA.field("languages").type)
    for name in (*STRING_COLUMNS, "languages"):  # Parquet does not check UTF-8: a damaged file decodes later
        try:
            cols[name].validate(full=True)
        except pa.ArrowInvalid as e:
            raise _fail(source, f"column {name} holds invalid data ({e})") from None

    for name, col in cols.items():
        nulls = col.null_count
        if nulls:
            raise _fail(source, f"column {name} has {nulls} null value(s)")
    null_langs = pc.list_flatten(cols["languages"]).null_count
    if null_langs:
        raise _fail(source, f"column languages has {null_langs} null language name(s) inside its lists")
    for name in ("repo", "sha", "author_id"):
        if pc.any(pc.equal(pc.utf8_length(cols[name]), 0)).as_py():
            raise _fail(source, f"column {name} has empty strings")
    bad_sha = pc.invert(pc.match_substring_regex(cols["sha"], r"^([0-9a-f]{40}|[0-9a-f]{64})$"))
    if pc.any(bad_sha).as_py():
        example = pc.filter(cols["sha"], bad_sha)[0].as_py()
        raise _fail(source, f"column sha must be a full lower-case hex commit id, got {example!r}")
    for name in INT_COLUMNS:
        if len(cols[name]) and pc.min(cols[name]).as_py() < 0:
            raise _fail(source, f"column {name} has negative values")
    # Compared in Arrow: a damaged value can lie outside what a Python datetime holds (years 1-9999).
    utc_us = pa.timestamp("us", tz="UTC")
    limit = pa.scalar(datetime.now(timezone.utc) + FUTURE_TOLERANCE, utc_us)
    for name in TIMESTAMP_COLUMNS:
        for bad, what in ((pc.greater(cols[name], limit), "dated in the future"),
                          (pc.less(cols[name], pa.scalar(EARLIEST, utc_us)), f"dated before {EARLIEST:%Y-%m-%d}")):
            if len(cols[name]) and pc.any(bad).as_py():
                us = pc.filter(cols[name], bad)[0].cast(pa.int64()).as_py()
                raise _fail(source, f"column {name} has commits {what} ({_instant(us)})")
    out = pa.Table.from_arrays([cols[f.name] for f in lake.COMMITS_ARROW_SCHEMA], schema=lake.COMMITS_ARROW_SCHEMA)
    return _dedupe_within(out, source)


def _instant(us: int) -> str:
    """Microseconds since the epoch as an ISO time, or as a number when no datetime can hold it."""
    try:
        return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)).isoformat()
    except OverflowError:
        return f"{us} microseconds from 1970-01-01"


def _dedupe_within(t: pa.Table, source: str) -> pa.Table:
    """Drop exact duplicate rows; refuse one key carrying two different commits."""
    import duckdb

    con = duckdb.connect()
    con.register("t", t)
    conflicts = con.execute(
        "SELECT repo, sha FROM (SELECT DISTINCT * EXCLUDE (languages), list_sort(languages)::VARCHAR AS l FROM t) "
        "GROUP BY repo, sha HAVING count(*) > 1 LIMIT 1").fetchall()
    if conflicts:
        raise _fail(source, f"commit {conflicts[0][1]} of {conflicts[0][0]} appears twice with different values")
    if con.execute("SELECT count(*) = count(DISTINCT (repo, sha)) FROM t").fetchall()[0][0]:
        return t
    return con.sql("SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY repo, sha) = 1").to_arrow_table().cast(
        lake.COMMITS_ARROW_SCHEMA)


def read_source(path: Path, progress: Callable[[int], None] | None = None) -> pa.Table:
    """Read one source (Parquet file or git repository) into the commit schema, validated."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        from skewless.gitsource import NotAGitRepository, read_git_repository

        try:
            table = read_git_repository(path, progress=progress)
        except NotAGitRepository as e:
            raise _fail(source, f"not a git repository ({e})") from None
        return normalize(table, source)
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
    return normalize(table, source)


# --- writing ----------------------------------------------------------------------------------------------------

def single_attempt_commits(table):
    """``table`` with :data:`SINGLE_ATTEMPT_COMMITS` set (one metadata commit the first time; may raise
    CommitFailedException under concurrency, like any commit: call it inside the caller's retry loop)."""
    if all(table.properties.get(k) == v for k, v in SINGLE_ATTEMPT_COMMITS.items()):
        return table
    with table.transaction() as tx:
        tx.set_properties(SINGLE_ATTEMPT_COMMITS)
    return table.refresh()


def _new_rows(table, incoming: pa.Table) -> pa.Table:
    """The incoming commits whose (repo, sha) the table does not hold yet."""
    from pyiceberg.expressions import In

    if table.current_snapshot() is None or incoming.num_rows == 0:
        return incoming
    repos = pc.unique(incoming["repo"]).to_pylist()
    stored = table.scan(row_filter=In("repo", repos), selected_fields=KEY).to_arrow()
    if stored.num_rows == 0:
        return incoming
    import duckdb

    con = duckdb.connect()
    con.register("incoming", incoming)
    con.register("stored", stored)
    new = con.sql("SELECT * FROM incoming ANTI JOIN stored USING (repo, sha) ORDER BY repo, committed_at")
    return new.to_arrow_table().cast(lake.COMMITS_ARROW_SCHEMA)


def ingest(sources: Sequence[Path | str], show_progress: bool = False) -> IngestResult:
    """Validate every source, then append the commits not stored yet in one snapshot (retried on conflicts)."""
    from pyiceberg.exceptions import CommitFailedException
    from tqdm import tqdm

    if not sources:
        raise IngestError("no source given")
    p = profile()
    tables = []
    with tqdm(desc="reading commits", unit=" commits", disable=not show_progress) as bar:
        for s in sources:
            tables.append(read_source(Path(s), progress=bar.update))
    incoming = _dedupe_within(pa.concat_tables(tables), "+".join(map(str, sources))) if len(tables) > 1 else tables[0]
    incoming = incoming.sort_by([("repo", "ascending"), ("committed_at", "ascending")])

    for attempt in range(1, COMMIT_RETRIES + 1):
        table = lake.commits_table(p, create=True)
        new = _new_rows(table, incoming)
        if new.num_rows == 0:
            return IngestResult(incoming.num_rows, 0, incoming.num_rows, lake.snapshot_id(table))
        try:
            table = single_attempt_commits(table)
            table.append(new, snapshot_properties={"skewless.operation": "ingest",
                                                   "skewless.sources": ",".join(map(str, sources))[:1000]})
        except CommitFailedException as e:  # another writer committed first: re-read, re-dedupe, retry
            log.warning("ingest commit conflict (attempt %d/%d): %s", attempt, COMMIT_RETRIES, e)
            time.sleep(0.05 * attempt)
            continue
        return IngestResult(incoming.num_rows, new.num_rows, incoming.num_rows - new.num_rows,
                            lake.snapshot_id(table))
    raise IngestError(f"could not commit to {COMMITS_TABLE} after {COMMIT_RETRIES} attempts (concurrent writers)")
