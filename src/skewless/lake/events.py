"""The lake side of the fresh path: ``abukix.commit_events``, every commit event the stream processor applied,
stamped with the instant it became known, and the landing of those events in ``abukix.commits`` (ADR 0016).

A *version* of a commit ``(repo, sha)`` is one row of ``abukix.commit_events``: ``kind`` ``add`` (with the commit's
values) or ``retract`` (the commit left its repository's history: force-push, amend, rebase), ``known_at`` (when
the processor applied it — online and here in the same batch), ``arrived_at`` (when the intake accepted it),
``seq`` (the event log's sequence number, stable across redeliveries) and ``event_id``.

Rules (README "Features", ADR 0016 and 0017). Versions are ordered by arrival (``arrived_at``, then log sequence),
whatever order they are landed in — several processors may land concurrently:

* an event whose previous version (in arrival order) is the same kind with the same values is a duplicate
  (webhook redelivery, a re-pushed branch, a retraction of a retracted commit): nothing is written; anything else
  (a new commit, a correction, a retraction, a re-push after a retraction) becomes a version;
* an event whose ``seq`` is already stored was applied before a crash: it is not written again, its stored version
  is handed back so the online store can be brought level (idempotent).

:func:`land` then makes ``abukix.commits`` agree with the last-arrived version of every commit the batch touched
(adds upserted, retractions deleted), so batch features, Airflow and training see streamed commits too. Both writes
are idempotent: a crash between them is repaired by the redelivery.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa

from skewless import lake
from skewless.core.config import COMMIT_EVENTS_TABLE, COMMITS_TABLE, Profile, profile
from skewless.core.days import epoch_us, from_epoch_us
from skewless.lake.ingest import VALUE_COLUMNS, _delete_filter, single_attempt_commits

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

_UTC_US = pa.timestamp("us", tz="UTC")

EVENTS_ARROW_SCHEMA = pa.schema(
    [pa.field("repo", pa.string(), nullable=False), pa.field("sha", pa.string(), nullable=False),
     pa.field("kind", pa.string(), nullable=False)]
    + [pa.field(f.name, f.type, nullable=True) for f in lake.COMMITS_ARROW_SCHEMA if f.name not in ("repo", "sha")]
    + [pa.field("arrived_at", _UTC_US, nullable=False), pa.field("known_at", _UTC_US, nullable=False),
       pa.field("seq", pa.int64(), nullable=False), pa.field("event_id", pa.string(), nullable=False),
       pa.field("source", pa.string(), nullable=False)]
)
COMMIT_RETRIES = 20  # several processors land concurrently: optimistic commits retry with jitter


@dataclass(frozen=True)
class Landed:
    """What one batch did: the versions written now, the versions re-handed for redelivered events (already
    stored), and how many events were duplicates."""

    written: pa.Table
    redelivered: pa.Table
    duplicates: int
    commits_snapshot: int | None

    @property
    def versions(self) -> pa.Table:
        """Every version the online store must hold after this batch (written + redelivered)."""
        return pa.concat_tables([self.written, self.redelivered])


def events_table(p: Profile | None = None, create: bool = True) -> "Table":
    """``abukix.commit_events``, partitioned by month of ``committed_at``."""
    from pyiceberg.transforms import MonthTransform

    p = p or profile()
    if not create:
        return lake.load_table(COMMIT_EVENTS_TABLE, p)
    return lake._create_table(COMMIT_EVENTS_TABLE, EVENTS_ARROW_SCHEMA, "committed_at", MonthTransform(),
                              "committed_month", p)


def _values(row: dict[str, Any]) -> tuple:
    out = []
    for c in VALUE_COLUMNS:
        v = row.get(c)
        if c == "languages" and v is not None:
            v = tuple(sorted(v))
        elif isinstance(v, datetime):
            v = int(v.timestamp() * 1_000_000)
        out.append(v)
    return tuple(out)


#: pyiceberg prunes data files by an IN predicate of at most this many values (its ``IN_PREDICATE_LIMIT``); a longer
#: one prunes nothing but is bound again for every data file, which cost seconds per batch at thousands of shas and
#: grew with the table (``skewless bench --only streaming``). Such a predicate is applied to the rows read instead.
PRUNING_IN_LIMIT = 200


def _stored(table: "Table", keys: set[tuple[str, str]], schema: pa.Schema) -> pa.Table:
    """The rows of ``table`` whose repo is one of the keys' repos and whose sha one of their shas."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, In

    if table.current_snapshot() is None or not keys:
        return schema.empty_table()
    row_filter: BooleanExpression = AlwaysTrue()
    in_arrow = []
    for column, values in (("repo", sorted({r for r, _ in keys})), ("sha", sorted({s for _, s in keys}))):
        if len(values) <= PRUNING_IN_LIMIT:
            row_filter = And(row_filter, In(column, values))
        else:
            in_arrow.append((column, pa.array(values, pa.string())))
    scan = table.scan(row_filter=row_filter)
    if not in_arrow:
        return scan.to_arrow().cast(schema)
    reader = scan.to_arrow_batch_reader()
    kept = []
    for batch in reader:
        mask = pc.is_in(batch.column(in_arrow[0][0]), value_set=in_arrow[0][1])
        for column, values in in_arrow[1:]:
            mask = pc.and_(mask, pc.is_in(batch.column(column), value_set=values))
        kept.append(batch.filter(mask))
    return pa.Table.from_batches(kept, schema=reader.schema).cast(schema)


def _order(row: dict[str, Any]) -> tuple[int, int]:
    """The arrival order of a version: (arrived_at, log sequence). The last-arrived version known at T decides."""
    arrived = row["arrived_at"]
    return (arrived if isinstance(arrived, int) else epoch_us(arrived)), int(row["seq"])


def arrival_order(row: dict[str, Any]) -> tuple[int, int]:
    """The arrival order of a version or an event (``arrived_at``, then log sequence; ADR 0017)."""
    return _order(row)


def is_duplicate(event: dict[str, Any], versions: Sequence[dict[str, Any]]) -> bool:
    """Whether landing ``event`` writes nothing: the version before it in arrival order, among ``versions`` (the
    stored versions of its commit), has the same kind and, for an add, the same values. The rule :func:`land`
    applies; the stream/lake reconciliation (``skewless.stream.reconcile``) applies it again."""
    before = [v for v in versions if _order(v) < _order(event)]
    if not before:
        return False
    prev = max(before, key=_order)
    return prev["kind"] == event["kind"] and (event["kind"] == "retract" or _values(prev) == _values(event))


def land(events: Sequence[dict[str, Any]], known_at: datetime, p: Profile | None = None) -> Landed:
    """Apply delivered events (dicts with ``seq`` added) to the lake; see the module docstring.

    ``known_at`` stamps every version written now (the batch's instant; the online store gets the same stamp).
    Several processors may land concurrently and in any order: what a version means depends on its arrival order
    only (:func:`_order`), not on when it was landed.
    """
    from pyiceberg.exceptions import CommitFailedException

    p = p or profile()
    keys = {(e["repo"], e["sha"]) for e in events}
    for attempt in range(1, COMMIT_RETRIES + 1):
        table = single_attempt_commits(events_table(p))
        stored = _stored(table, keys, EVENTS_ARROW_SCHEMA).to_pylist()
        versions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        by_seq: dict[int, dict[str, Any]] = {}
        for row in stored:
            versions.setdefault((row["repo"], row["sha"]), []).append(row)
            by_seq[row["seq"]] = row
        written: list[dict[str, Any]] = []
        redelivered: list[dict[str, Any]] = []
        duplicates = 0
        names = EVENTS_ARROW_SCHEMA.names  # a property that builds the list: once, not per event
        for e in sorted(events, key=_order):
            key = (e["repo"], e["sha"])
            if e["seq"] in by_seq:
                redelivered.append(by_seq[e["seq"]])
                continue
            if is_duplicate(e, versions.get(key, [])):
                duplicates += 1  # re-delivered by the sender, re-pushed, or a retraction of a retracted commit
                continue
            row = {c: e.get(c) for c in names}
            row["known_at"] = known_at
            versions.setdefault(key, []).append(row)
            by_seq[row["seq"]] = row
            written.append(row)
        new = _rows(written)
        if new.num_rows:
            try:
                table.append(new, snapshot_properties={"skewless.operation": "stream",
                                                       "skewless.events": str(new.num_rows)})
            except CommitFailedException as e:
                log.warning("commit_events conflict (attempt %d/%d): %s", attempt, COMMIT_RETRIES, e)
                time.sleep(random.uniform(0.02, 0.1) * attempt)
                continue
        snapshot = _level_commits(p, keys)
        return Landed(new, _rows(redelivered), duplicates, snapshot)
    raise lake.LakeError(f"could not commit to {COMMIT_EVENTS_TABLE} after {COMMIT_RETRIES} attempts")


def _rows(rows: list[dict[str, Any]]) -> pa.Table:
    if not rows:
        return EVENTS_ARROW_SCHEMA.empty_table()
    cols = {}
    for f in EVENTS_ARROW_SCHEMA:
        values = [r.get(f.name) for r in rows]
        if pa.types.is_timestamp(f.type):
            values = [v if v is None or isinstance(v, datetime) else
                      from_epoch_us(v) for v in values]
        cols[f.name] = pa.array(values, f.type)
    return pa.table(cols, schema=EVENTS_ARROW_SCHEMA)


def _level_commits(p: Profile, keys: set) -> int | None:
    """Make ``abukix.commits`` hold, for each touched commit, the values of its last-arrived version if that is an
    add and no row if it is a retraction (one Iceberg commit). Each attempt loads the table first and then reads
    the versions, so a concurrent processor's versions are never overwritten by an older view of them; a conflict
    re-reads both."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(1, COMMIT_RETRIES + 1):
        commits = single_attempt_commits(lake.commits_table(p, create=True))
        in_commits = {(r["repo"], r["sha"]): r for r in _stored(commits, keys, lake.COMMITS_ARROW_SCHEMA).to_pylist()}
        last: dict[tuple[str, str], dict[str, Any]] = {}
        for row in _stored(events_table(p), keys, EVENTS_ARROW_SCHEMA).to_pylist():
            key = (row["repo"], row["sha"])
            if key not in last or _order(row) > _order(last[key]):
                last[key] = row
        delete, append = [], []
        for key, row in last.items():
            stored = in_commits.get(key)
            if row["kind"] == "retract":
                if stored is not None:
                    delete.append(key)
            elif stored is None or _values(stored) != _values(row):
                if stored is not None:
                    delete.append(key)
                append.append({c: row[c] for c in lake.COMMITS_ARROW_SCHEMA.names})
        if not delete and not append:
            return lake.snapshot_id(commits)
        summary = {"skewless.operation": "stream", "skewless.added": str(len(append)),
                   "skewless.retracted": str(len(delete))}
        try:
            with commits.transaction() as tx:
                if delete:
                    by_repo: dict[str, list[str]] = {}
                    for r, sha in delete:
                        by_repo.setdefault(r, []).append(sha)
                    tx.delete(_delete_filter(by_repo), snapshot_properties=summary)
                if append:
                    tx.append(pa.Table.from_pylist(append, schema=lake.COMMITS_ARROW_SCHEMA),
                              snapshot_properties=summary)
            return lake.snapshot_id(commits.refresh())
        except CommitFailedException as e:  # a concurrent writer (ingest, another processor): re-read, recompute
            log.warning("%s conflict while landing streamed commits (attempt %d/%d): %s", COMMITS_TABLE, attempt,
                        COMMIT_RETRIES, e)
            time.sleep(random.uniform(0.02, 0.1) * attempt)
    raise lake.LakeError(f"could not land streamed commits in {COMMITS_TABLE} after {COMMIT_RETRIES} attempts")


def commits_disagreements(versions: pa.Table, keys: set[tuple[str, str]], p: Profile | None = None
                          ) -> list[tuple[str, str, str]]:
    """Where ``abukix.commits`` does not hold what the last-arrived of ``versions`` says, for each commit of ``keys``
    (the levelling rule of :func:`land`): ``(repo, sha, why)``, why one of ``missing`` (an add with no row),
    ``retracted`` (a row of a retracted commit) or ``values`` (a row with other values)."""
    p = p or profile()
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for row in versions.to_pylist():
        key = (row["repo"], row["sha"])
        if key in keys and (key not in last or _order(row) > _order(last[key])):
            last[key] = row
    if not last:
        return []
    commits = lake.commits_table(p, create=True)
    held = {(r["repo"], r["sha"]): r for r in _stored(commits, set(last), lake.COMMITS_ARROW_SCHEMA).to_pylist()}
    out = []
    for key, row in sorted(last.items()):
        stored = held.get(key)
        if row["kind"] == "retract":
            if stored is not None:
                out.append((*key, "retracted"))
        elif stored is None:
            out.append((*key, "missing"))
        elif _values(stored) != _values(row):
            out.append((*key, "values"))
    return out


def read_versions(p: Profile | None = None, repos: Sequence[str] | None = None) -> pa.Table:
    """Every stored version (all of them, or those of ``repos``), for rebuilding online state and for tests."""
    from pyiceberg.expressions import In

    p = p or profile()
    cat = lake.catalog(p)
    if not cat.table_exists(COMMIT_EVENTS_TABLE):
        return EVENTS_ARROW_SCHEMA.empty_table()
    table = events_table(p)
    if table.current_snapshot() is None:
        return EVENTS_ARROW_SCHEMA.empty_table()
    scan = table.scan(row_filter=In("repo", list(repos))) if repos else table.scan()
    return scan.to_arrow().cast(EVENTS_ARROW_SCHEMA)



BACKFILL_SOURCE = "backfill"


def backfill(p: Profile | None = None) -> int:
    """Give every commit of ``abukix.commits`` that has no version yet an ``add`` version, so the live views know
    the history that came in by batch ingest (``skewless stream backfill``). Returns the number of versions written.

    The lake does not record when a batch-ingested commit became known, so a backfilled version is stamped as known
    (and arrived) at its ``committed_at``: windows evaluated as of T then count every commit committed before T, the
    same rule the daily views apply at their day boundaries. Backfilled versions take negative sequence numbers
    (below any stored one), so they never collide with the event log's (which start at 1); ``source`` is
    ``backfill``. Running it again writes only the commits that still have no version (one Iceberg commit).
    """
    import pyarrow.compute as pc

    p = p or profile()
    commits = lake.commits_table(p, create=True)
    if commits.current_snapshot() is None:
        return 0
    events = events_table(p)
    have = events.scan(selected_fields=("repo", "sha", "seq")).to_arrow() if events.current_snapshot() else None
    rows = commits.scan().to_arrow().cast(lake.COMMITS_ARROW_SCHEMA)
    if have is not None and have.num_rows:
        known = pc.binary_join_element_wise(have["repo"], have["sha"], "\x00")
        mask = pc.invert(pc.is_in(pc.binary_join_element_wise(rows["repo"], rows["sha"], "\x00"), value_set=known))
        rows = rows.filter(mask)
        low = min(pc.min(have["seq"]).as_py(), 0)
    else:
        low = 0
    if not rows.num_rows:
        return 0
    rows = rows.sort_by([("committed_at", "ascending"), ("repo", "ascending"), ("sha", "ascending")])
    n = rows.num_rows
    stamp = rows["committed_at"].cast(_UTC_US)
    cols = {f.name: rows[f.name] for f in lake.COMMITS_ARROW_SCHEMA}
    cols.update({
        "kind": pa.array(["add"] * n, pa.string()),
        "arrived_at": stamp, "known_at": stamp,
        "seq": pa.array(range(low - 1, low - 1 - n, -1), pa.int64()),
        "event_id": pc.binary_join_element_wise(pa.array([BACKFILL_SOURCE] * n, pa.string()), rows["repo"],
                                                rows["sha"], ":"),
        "source": pa.array([BACKFILL_SOURCE] * n, pa.string()),
    })
    table = pa.table({f.name: cols[f.name] for f in EVENTS_ARROW_SCHEMA}, schema=EVENTS_ARROW_SCHEMA)
    from pyiceberg.exceptions import CommitFailedException

    try:
        events.append(table, snapshot_properties={"skewless.operation": BACKFILL_SOURCE,
                                                  "skewless.events": str(n)})
    except CommitFailedException as e:  # a processor landed meanwhile: nothing was written, a rerun completes
        raise lake.LakeError(f"backfill of {COMMIT_EVENTS_TABLE} met a concurrent commit ({e}); nothing was "
                             "written: run it again") from None
    return n
