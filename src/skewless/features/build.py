"""Stage 2 — build the feature tables of :mod:`skewless.features.definitions` from ``abukix.commits`` into Iceberg.

Semantics (README "Features"): as of a timestamp T, D = T floored to 00:00 UTC; an N-day window holds the commits
with ``committed_at`` in [D − N days, D). ``committed_at`` is the event time; ``authored_at`` is never read (it
leaks: rebased and long-lived branches carry author dates weeks or years before the commit reached the history).

Storage: one row per (entity, D) where D is a UTC midnight stored as ``event_timestamp``; a row holds the values as
of every T in [D, next row). ``repo_activity`` is dense (windows and ``days_since_last_commit`` move every day);
``author_activity`` only changes on the day after a commit and on Mondays (the streak), so it stores those change
points only — Feast's point-in-time join picks the latest row at or before T, which holds the exact value.

Schema evolution (ADR 0019): a feature table evolves in place. A feature the definitions add becomes a new column
(pyiceberg ``update_schema().add_column``) and the build backfills its whole history in the same Iceberg commit: every
row is recomputed from the commits and the table's rows replaced, so every snapshot from then on holds the column for
every day, and every older snapshot (and every model version pinned to one) still reads what it read. A column whose
history was never computed (added by hand, no backfill) is backfilled the same way. A declared feature's column is
never dropped or retyped: :class:`FeatureTableChangeError` names the column and the path (a new feature, ``..._v2``).

Incremental build: ``build(until=DAY)`` adds the rows of the days after the last built day through DAY. Commits
that changed since the previous build inside already built days (late arrivals, a newly ingested repository
history, commits retracted from a rewritten history, corrected values, a renamed repository) restate the affected
entities' rows from the earliest such day in the same Iceberg commit, so values stay exact. Building the same
DAY again with no new commits writes nothing.

The SQL below runs on DuckDB; the Spark engine renders the same relational steps (see ``skewless.features.spark``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Callable

import pyarrow as pa

from skewless import lake
from skewless.core.config import Profile, profile
from skewless.core.days import utc_duckdb
from skewless.core.errors import SkewlessError
from skewless.features.definitions import FeatureTable, TABLES

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

BUILT_THROUGH = "skewless.built-through"
COMMITS_SNAPSHOT = "skewless.commits-snapshot"
#: Snapshot summary property: the earliest event day a build wrote (materialize restarts from there).
MIN_EVENT_DAY = "skewless.min-event-day"


# --- helpers ------------------------------------------------------------------------------------------------------

def day_start(d: date) -> datetime:
    """Midnight UTC of a calendar day."""
    return datetime.combine(d, time(0), tzinfo=timezone.utc)


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(tzinfo=None)


def connect() -> "duckdb.DuckDBPyConnection":
    """The UTC DuckDB session the feature SQL runs in."""
    return utc_duckdb()


def commits_arrow(commits_table, snapshot_id: int | None = None, event_time: str = "committed_at") -> pa.Table:
    """The commit columns the features read (never authored_at), with naive UTC timestamps for DuckDB.

    ``event_time`` exists for the drill-only :func:`build_variant` alone: that column is read *as* committed_at.
    """
    cols = ("repo", "author_id", event_time, "is_merge", "files_changed", "lines_added", "lines_deleted",
            "languages")
    t = commits_table.scan(selected_fields=cols, snapshot_id=snapshot_id).to_arrow()
    i = t.schema.get_field_index(event_time)
    return t.set_column(i, "committed_at", t[event_time].cast(pa.timestamp("us")))


def compute(table: FeatureTable, commits: pa.Table, targets: pa.Table, until: date,
            con: "duckdb.DuckDBPyConnection | None" = None) -> pa.Table:
    """Run one feature table's SQL for ``targets`` (entity key, from_day) through day ``until``."""
    con = con or connect()
    con.register("c", commits)
    con.register("targets", targets)
    out = con.sql(table.sql, params={"until": datetime.combine(until, time(0))}).to_arrow_table()
    ts = out["event_timestamp"].cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    out = out.set_column(out.schema.get_field_index("event_timestamp"), "event_timestamp", ts)
    return out.cast(table.arrow_schema)


ONLINE_SNAPSHOT = "skewless.online-snapshot"


def restart_day(table, p: Profile) -> datetime | None:
    """The earliest event day written by builds after the snapshot the online store was last loaded from.

    A build that restates older rows (late commits) records the earliest day it wrote in its snapshot summary;
    the next materialization restarts from there so the online store never keeps a superseded value.
    """
    done = table.properties.get(f"{ONLINE_SNAPSHOT}.{p.name}")
    done_seq = -1
    if done is not None:
        snap = table.snapshot_by_id(int(done))
        done_seq = snap.sequence_number if snap else -1
    earliest: datetime | None = None
    for snap in table.snapshots():
        day = (snap.summary.additional_properties if snap.summary else {}).get(MIN_EVENT_DAY)
        if day and snap.sequence_number > done_seq:
            d = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
            earliest = d if earliest is None else min(earliest, d)
    return earliest


# --- engines: the one step of a build that differs between DuckDB and Spark --------------------------------------

#: An engine's compute: (table, abukix.commits, its snapshot id, targets, until, profile) -> rows in the table's
#: schema. Targets are ``(<entity key>, from_day)`` with naive UTC timestamps; the SQL is ``table.sql``.
Compute = Callable[[FeatureTable, "Table", int, pa.Table, date, Profile], pa.Table]


def duckdb_compute(table: FeatureTable, commits_table: "Table", snapshot_id: int, targets: pa.Table, until: date,
                   p: Profile) -> pa.Table:
    """The DuckDB engine: :func:`compute` over that snapshot's commits read into Arrow."""
    return compute(table, commits_arrow(commits_table, snapshot_id), targets, until)


def engine_compute(p: Profile) -> Compute:
    """The compute function of the profile's engine (``Profile.engine``, ADR 0008)."""
    if p.engine == "spark":
        from skewless.features.spark.engine import compute as spark_compute

        return spark_compute
    return duckdb_compute


# --- incremental build ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    table: str
    built_through: date | None
    rows_written: int
    restated_entities: int
    snapshot_id: int | None
    #: Columns this build added to the table (schema evolution), and the columns whose history it backfilled.
    added_columns: tuple[str, ...] = ()
    backfilled_columns: tuple[str, ...] = ()

    def __str__(self) -> str:
        out = (f"{self.table}: built through {self.built_through}, wrote {self.rows_written} rows "
               f"({self.restated_entities} entities restated), snapshot {self.snapshot_id}")
        if self.added_columns:
            out += f"; added column(s) {', '.join(self.added_columns)}"
        if self.backfilled_columns:
            out += f"; backfilled the whole history of {', '.join(self.backfilled_columns)}"
        return out


class FeatureTableChangeError(SkewlessError, ValueError):
    """The definitions drop or retype a column of a feature table (the message names the column and the path)."""


def schema_changes(table: FeatureTable, ft: "Table") -> tuple[list[str], list[str]]:
    """(declared columns the Iceberg table lacks, declared columns whose history was never computed).

    Raises :class:`FeatureTableChangeError` for a column the table has and the definition no longer declares, or
    declares with another type: older snapshots, the model versions pinned to them and the services that read it
    keep the column as it is (ADR 0019).
    """
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids

    from skewless.lake.columns import column_fill

    declared = {f.name: f.field_type for f in _pyarrow_to_schema_without_ids(table.arrow_schema).fields}
    stored = {f.name: f.field_type for f in ft.schema().fields}
    dropped = [c for c in stored if c not in declared]
    if dropped:
        raise FeatureTableChangeError(
            f"{table.identifier} has column(s) {', '.join(dropped)} that the definition of {table.name} no longer "
            "declares: a feature table never drops a column (older snapshots, model versions pinned to them and "
            "services read it). Keep its Feature(...) in skewless.features.definitions; to change a feature, add a "
            f"new one next to it (e.g. {dropped[0]}_v2) and move services to it (README 'Changing a feature used by "
            "a registered model').")
    for c, t in declared.items():
        if c in stored and stored[c] != t:
            raise FeatureTableChangeError(
                f"column {c} of {table.identifier} is {stored[c]} but the definition of {table.name} declares "
                f"{t}: a feature never changes type in place (older snapshots and model versions pinned to them "
                f"read {stored[c]}). Keep {c} as it is and declare the new type as a new feature, e.g. {c}_v2 "
                "(README 'Changing a feature used by a registered model').")
    added = [c for c in declared if c not in stored]
    present = [f.name for f in table.features if f.name in stored]
    uncomputed = [c for c, fill in column_fill(ft, present).items() if fill.uncomputed_rows]
    return added, uncomputed


def _new_commit_keys(commits_table, since_snapshot: int | None, con) -> pa.Table | None:
    """The commits that changed since ``since_snapshot`` (None: everything is new): added ones, retracted ones
    (a rewritten git history) and both versions of a corrected one, as (repo, author_id, committed_at) rows."""
    if since_snapshot is None:
        return None
    cols = ("repo", "sha", "author_id", "committed_at", "is_merge", "files_changed", "lines_added",
            "lines_deleted", "languages")
    con.register("now_rows", commits_table.scan(selected_fields=cols).to_arrow())
    con.register("before_rows", commits_table.scan(selected_fields=cols, snapshot_id=since_snapshot).to_arrow())
    row = "repo, sha, author_id, committed_at, is_merge, files_changed, lines_added, lines_deleted, languages"
    return con.sql(f"""
        WITH now_r AS (SELECT {row} FROM now_rows), before_r AS (SELECT {row} FROM before_rows),
        changed AS ((SELECT * FROM now_r EXCEPT SELECT * FROM before_r)
                    UNION ALL (SELECT * FROM before_r EXCEPT SELECT * FROM now_r))
        SELECT repo, author_id, committed_at::TIMESTAMP AS committed_at FROM changed""").to_arrow_table()


def _targets(table: FeatureTable, con, commits: pa.Table, new: pa.Table | None,
             built: date | None) -> tuple[pa.Table, list[str], datetime | None]:
    """Entities to compute with their first day, plus the restated entities and the day their rows restart.

    Restated entities (new commits on or before the last built day) are recomputed from the earliest such
    commit's day, all from the same day so that one Iceberg delete expression covers them.
    """
    key = table.entity_key
    con.register("c", commits)
    next_day = datetime.combine(built + timedelta(days=1), time(0)) if built else datetime(1970, 1, 1)
    if new is None or built is None:
        restated, restart = [], None
    else:
        con.register("new_commits", new)
        late = con.sql(f"SELECT DISTINCT {key}, date_trunc('day', committed_at) AS day FROM new_commits "
                       "WHERE committed_at < ?", params=[next_day]).to_arrow_table()
        restated = sorted(set(late[key].to_pylist()))
        restart = min(late["day"].to_pylist()) if restated else None
    con.register("restated", pa.table({key: pa.array(restated, pa.string())}))
    targets = con.sql(
        f"SELECT DISTINCT {key}, CASE WHEN {key} IN (SELECT {key} FROM restated) THEN ?::TIMESTAMP "
        "ELSE ?::TIMESTAMP END AS from_day FROM c", params=[restart or next_day, next_day]).to_arrow_table()
    return targets, restated, restart


#: Attempts of one table's build when concurrent writers (another build) commit first.
COMMIT_RETRIES = 5


def build_table(table: FeatureTable, until: date, p: Profile | None = None,
                progress: Callable[[str], None] | None = None) -> BuildResult:
    """Bring one feature table up to ``until`` (inclusive), restating entities that received late commits.

    A concurrent build that commits first makes this one re-read the table and recompute what is still missing
    (pyiceberg's own retry, which would re-apply the same rows, is off: ``ingest.SINGLE_ATTEMPT_COMMITS``).
    """
    import random
    import time as _time

    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(1, COMMIT_RETRIES + 1):
        try:
            return _build_table_once(table, until, p, progress)
        except CommitFailedException as e:
            log.warning("%s: commit conflict (attempt %d/%d): %s", table.identifier, attempt, COMMIT_RETRIES, e)
            _time.sleep(random.uniform(0.05, 0.2) * attempt)
    raise lake.LakeError(f"could not commit to {table.identifier} after {COMMIT_RETRIES} attempts (concurrent "
                         "builds)")


def _build_table_once(table: FeatureTable, until: date, p: Profile | None,
                      progress: Callable[[str], None] | None) -> BuildResult:
    import pyarrow.compute as pc
    from pyiceberg.expressions import And, GreaterThanOrEqual, In

    from skewless.lake.ingest import single_attempt_commits

    p = p or profile()
    commits_t = lake.commits_table(p)
    commits_snap = lake.snapshot_id(commits_t)
    ft = single_attempt_commits(lake.create_feature_table(table.name, table.arrow_schema, p))
    props = ft.properties
    built = date.fromisoformat(props[BUILT_THROUGH]) if BUILT_THROUGH in props else None
    last_commits_snap = int(props[COMMITS_SNAPSHOT]) if COMMITS_SNAPSHOT in props else None
    if commits_snap is None:
        raise lake.LakeError("abukix.commits holds no commits yet; run `skewless ingest` first")
    added, uncomputed = schema_changes(table, ft)
    # A new column, or one whose history was never computed: recompute every row (the whole history) and replace
    # the table's rows in the commit that adds the column. Older snapshots keep their schema and files.
    backfill = tuple(added + uncomputed) if ft.current_snapshot() is not None else ()
    if not backfill and not added and built is not None and until <= built and last_commits_snap == commits_snap:
        return BuildResult(table.identifier, built, 0, 0, lake.snapshot_id(ft))

    con = connect()
    keys = commits_t.scan(selected_fields=(table.entity_key,), snapshot_id=commits_snap).to_arrow()
    if backfill:
        targets, _, _ = _targets(table, con, keys, None, None)
        restated = sorted(set(keys[table.entity_key].to_pylist()))
        restart = None
    else:
        new = _new_commit_keys(commits_t, last_commits_snap, con)
        targets, restated, restart = _targets(table, con, keys, new, built)
    through = max(until, built) if built else until
    if progress:
        what = (f"backfilling the whole history of {', '.join(backfill)}" if backfill
                else f"{len(restated)} entities restated")
        progress(f"{table.name}: computing through {through} on {p.engine} ({what})")
    rows = engine_compute(p)(table, commits_t, commits_snap, targets, through, p)
    summary = {"skewless.operation": "features-build", COMMITS_SNAPSHOT: str(commits_snap)}
    if backfill:
        summary["skewless.backfilled-columns"] = ",".join(backfill)
    if rows.num_rows:
        summary[MIN_EVENT_DAY] = pc.min(rows["event_timestamp"]).as_py().date().isoformat()
    with ft.transaction() as tx:
        if added:
            from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids

            types = {f.name: f.field_type for f in _pyarrow_to_schema_without_ids(table.arrow_schema).fields}
            docs = {f.name: f.description for f in table.features}
            with tx.update_schema() as update:
                for c in added:
                    update.add_column(c, types[c], doc=docs.get(c))
        if backfill:
            tx.overwrite(rows, snapshot_properties=summary)
        elif restated:
            # The restated entities' rows from the restart day are replaced by the recomputed ones, atomically.
            tx.delete(And(In(table.entity_key, restated),
                          GreaterThanOrEqual("event_timestamp", restart.replace(tzinfo=timezone.utc).isoformat())),
                      snapshot_properties=summary)
        if rows.num_rows and not backfill:
            tx.append(rows, snapshot_properties=summary)
        tx.set_properties({BUILT_THROUGH: through.isoformat(), COMMITS_SNAPSHOT: str(commits_snap)})
    ft = ft.refresh()
    return BuildResult(table.identifier, through, rows.num_rows, len(restated), lake.snapshot_id(ft),
                       tuple(added), backfill)


def build(until: date, p: Profile | None = None, progress: Callable[[str], None] | None = None) -> list[BuildResult]:
    """Build every feature table through ``until`` (and create the stream's event table the live views read, empty
    until `skewless stream run` applies an event: Feast validates every source at apply)."""
    from skewless.lake.events import events_table

    p = p or profile()
    events_table(p)
    return [build_table(t, until, p, progress) for t in TABLES]


def built_through(p: Profile | None = None) -> dict[str, date | None]:
    """The last built day of every feature table (None: never built)."""
    from pyiceberg.exceptions import NoSuchTableError

    p = p or profile()
    cat = lake.catalog(p)
    out: dict[str, date | None] = {}
    for t in TABLES:
        try:
            props = cat.load_table(t.identifier).properties
        except NoSuchTableError:
            out[t.name] = None
            continue
        out[t.name] = date.fromisoformat(props[BUILT_THROUGH]) if BUILT_THROUGH in props else None
    return out


# --- drill-only variant (src/skewless/drills/leakage.py, the leakage drill) -------------------------------------------------
# Never registered in Feast, never materialized, never served. It exists to show what a wrong event time does to a
# model; the SQL is the feature table's own (defined once, above): only the commits handed to it differ.

#: Commit columns a drill variant may use as its event time instead of committed_at.
VARIANT_EVENT_TIMES = ("authored_at",)


def variant_identifier(table: FeatureTable, event_time: str) -> str:
    """Iceberg identifier of a drill variant of ``table``: ``features.<name>__by_<event_time>``."""
    return f"{table.identifier}__by_{event_time}"


def build_variant(table: FeatureTable, event_time: str, until: date, p: Profile | None = None) -> str:
    """DRILL ONLY: rebuild ``table`` in full with ``event_time`` standing in for committed_at; return its identifier.

    The same SQL runs over the commits with ``event_time`` read as committed_at (so with ``authored_at`` a
    rebased commit counts in windows before it reached the history: the leak the drill measures). The variant
    table is overwritten on every call, from the current snapshot of abukix.commits, through day ``until``.
    """
    if event_time not in VARIANT_EVENT_TIMES:
        raise ValueError(f"event_time={event_time!r} is not a drill variant; choose one of "
                         f"{', '.join(VARIANT_EVENT_TIMES)}")
    p = p or profile()
    commits_t = lake.commits_table(p)
    snap = lake.snapshot_id(commits_t)
    if snap is None:
        raise lake.LakeError("abukix.commits holds no commits yet; run `skewless ingest` first")
    con = connect()
    commits = commits_arrow(commits_t, snap, event_time=event_time)
    targets, _, _ = _targets(table, con, commits, None, None)
    rows = compute(table, commits, targets, until, con)
    ident = variant_identifier(table, event_time)
    vt = lake.create_feature_table(ident.split(".", 1)[1], table.arrow_schema, p)
    summary = {"skewless.operation": "features-build-variant", "skewless.event-time": event_time,
               COMMITS_SNAPSHOT: str(snap)}
    if vt.current_snapshot() is None:
        vt.append(rows, snapshot_properties=summary)
    else:
        vt.overwrite(rows, snapshot_properties=summary)
    return ident

