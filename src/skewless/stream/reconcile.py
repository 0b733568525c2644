"""The stream and the lake agree (``skewless stream reconcile``; the ``stream_consistency_hourly`` DAG).

Every event the log accepted, once settled (acknowledged by a processor), must have landed exactly once in
``abukix.commit_events``, and ``abukix.commits`` must hold what the versions say. Over the events that arrived
before ``until`` (a DAG run's data interval end; never the clock), this counts:

* ``missing``: a settled event whose log sequence is in no version, although landing it would have written one
  (it is no duplicate under the rule of :func:`skewless.lake.events.is_duplicate`: the version before it in
  arrival order differs in kind or values). Lost between the log and the lake.
* ``duplicated``: versions beyond the first for one log sequence or one ``event_id`` (a redelivery written twice).
* ``orphaned``: versions whose log sequence lies in the range the log holds but names no event of it (written by
  something else than this log's processors, or a log that was replaced).
* ``commits_mismatched``: commits whose row in ``abukix.commits`` is not what their last-arrived version says
  (an add without its row or with other values, a retracted commit still there), counted only for commits whose
  every event is settled and arrived before ``until`` (a batch in flight is levelled a moment later).

Events that arrived before ``until`` but are not settled yet are counted as ``in_flight`` and not judged: the
processor still holds them (a stalled processor has its own alert). Reading order makes the check safe next to
running processors: the log's settled set first, then its events, then the lake (an event acknowledged after the
first read counts as in flight; one acknowledged before it was landed before it).

The whole log and the whole events table are read: linear in the stream's history, meant for an hourly check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from skewless.core.config import Profile, profile
from skewless.core.days import epoch_us
from skewless.core.errors import SkewlessError
from skewless.ops.consistency import RECONCILE_KINDS, ReconcileRecord
from skewless.stream.log import EventLog

EXAMPLES = 10


class ReconcileError(SkewlessError, ValueError):
    """The reconciliation was asked something it cannot answer (the message says what)."""


@dataclass
class Reconciliation:
    """What :func:`reconcile` found; :meth:`record` turns it into the recorded result."""

    until: datetime
    log: str
    events: int = 0
    in_flight: int = 0
    landed: int = 0
    skipped_duplicates: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in RECONCILE_KINDS})
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def note(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{kind}: {example}")

    def record(self, checked_at: datetime | None = None) -> ReconcileRecord:
        return ReconcileRecord(checked_at or datetime.now(timezone.utc), self.until, self.log, self.events,
                               self.in_flight, dict(self.counts))

    def __str__(self) -> str:
        lines = [f"{self.log}: {self.events} settled event(s) that arrived before {self.until.isoformat()} checked "
                 f"({self.landed} landed as versions, {self.skipped_duplicates} duplicate(s) rightly skipped), "
                 f"{self.in_flight} in flight (not judged)"]
        lines += [f"  {k}: {v}" for k, v in self.counts.items()]
        lines += [f"  {e}" for e in self.examples]
        lines.append("STREAM AND LAKE AGREE" if self.ok else "STREAM AND LAKE DISAGREE")
        return "\n".join(lines)


def reconcile(until: datetime, p: Profile | None = None, log_: EventLog | None = None) -> Reconciliation:
    """Compare the profile's event log (or ``log_``) with ``abukix.commit_events`` / ``abukix.commits`` for the
    events that arrived before ``until`` (an aware datetime); see the module docstring."""
    from skewless.lake.events import arrival_order, commits_disagreements, is_duplicate, read_versions
    from skewless.stream import open_log

    if until.tzinfo is None:
        raise ReconcileError(f"reconcile(until={until!r}): give a timezone-aware instant (UTC)")
    p = p or profile()
    owned = log_ is None
    log_ = log_ or open_log(p)
    try:
        held = log_.history()
        where = log_.where
    finally:
        if owned:
            log_.close()
    versions = read_versions(p)
    until_us = epoch_us(until)
    out = Reconciliation(until, where)

    rows = versions.to_pylist()
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_key.setdefault((r["repo"], r["sha"]), []).append(r)
    seqs = Counter(r["seq"] for r in rows)
    for seq, n in sorted(seqs.items()):
        for _ in range(n - 1):
            out.note("duplicated", f"log sequence {seq} landed {n} times")
    seqs_of_event: dict[str, set[int]] = {}
    for r in rows:
        seqs_of_event.setdefault(r["event_id"], set()).add(r["seq"])
    for eid, s in sorted(seqs_of_event.items()):
        # one event stored twice by the log (a publish retried after its dedupe window) and landed twice
        for _ in range(len(s) - 1):
            out.note("duplicated", f"event {eid} landed under {len(s)} log sequences {sorted(s)}")

    in_log = {d.seq for d in held.events}
    for r in rows:
        if held.first_seq <= r["seq"] <= held.last_seq and r["seq"] not in in_log:
            out.note("orphaned", f"{r['repo']}@{r['sha'][:12]} version of log sequence {r['seq']} "
                                 f"(event {r['event_id']}) is not in the log")

    unsettled_keys: set[tuple[str, str]] = set()
    for d in held.events:
        e = d.event
        key = (e["repo"], e["sha"])
        if e["arrived_at"] >= until_us:
            unsettled_keys.add(key)
            continue
        if d.seq not in held.settled:
            out.in_flight += 1
            unsettled_keys.add(key)
            continue
        out.events += 1
        if seqs[d.seq]:
            out.landed += 1
        elif is_duplicate({**e, "seq": d.seq}, by_key.get(key, [])):
            out.skipped_duplicates += 1
        else:
            out.note("missing", f"{e['repo']}@{e['sha'][:12]} {e['kind']} (log sequence {d.seq}, event "
                                f"{e['event_id']}) is acknowledged but not in the lake")
    judged = {k for k, vs in by_key.items()
              if k not in unsettled_keys and all(arrival_order(v)[0] < until_us for v in vs)}
    for repo, sha, why in commits_disagreements(versions, judged, p):
        out.note("commits_mismatched", f"{repo}@{sha[:12]}: abukix.commits disagrees with its last version "
                                       f"({why})")
    return out
