"""Results of the fresh path's two consistency checks, recorded where the exporter reads them (issue 16, "Operate it").

* the stream/lake reconciliation (:mod:`skewless.stream.reconcile`): every event the log accepted and settled
  landed once in ``abukix.commit_events``, and ``abukix.commits`` holds what the last-arrived versions say;
* the fetch-replay check (:mod:`serving.replay`, as Chronon runs it): the logged online fetches of a feature service
  replayed as the entity rows of a point-in-time ``get_historical_features``; mismatches per feature.

Like the parity check of the batch views (:mod:`skewless.ops.freshness`), each result is recorded as a property of
an Iceberg table, here ``abukix.commit_events`` (the fresh views' table), suffixed with the profile: the catalog is
shared by every process of a deployment, so the exporter (``monitoring/exporter.py``) on any host serves the last
result between two checks, and the checks' Airflow DAG publishes it to the textfile.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from skewless import lake
from skewless.core.config import Profile, profile

log = logging.getLogger(__name__)

#: Iceberg table properties of ``abukix.commit_events`` (suffixed ``.<profile>``; the replay's also by service).
RECONCILE = "skewless.monitor.stream-reconcile"
REPLAY = "skewless.monitor.fetch-replay"
#: What the reconciliation counts, in this order (the metric's ``kind`` label).
RECONCILE_KINDS = ("missing", "duplicated", "orphaned", "commits_mismatched")
COMMIT_RETRIES = 5


@dataclass(frozen=True)
class ReconcileRecord:
    """One stream/lake reconciliation: over the events that arrived before ``until`` and were settled
    (acknowledged) when it ran, how many were checked and, per kind of :data:`RECONCILE_KINDS`, how many disagreed."""

    checked_at: datetime
    until: datetime
    log: str
    events: int
    in_flight: int
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.counts.get(k, 0) for k in RECONCILE_KINDS)

    def to_json(self) -> str:
        return json.dumps({"checked_at": self.checked_at.isoformat(), "until": self.until.isoformat(),
                           "log": self.log, "events": self.events, "in_flight": self.in_flight,
                           "counts": {k: int(self.counts.get(k, 0)) for k in RECONCILE_KINDS}})

    @classmethod
    def from_json(cls, raw: str) -> "ReconcileRecord":
        d = json.loads(raw)
        return cls(datetime.fromisoformat(d["checked_at"]), datetime.fromisoformat(d["until"]), d["log"],
                   int(d["events"]), int(d["in_flight"]), {k: int(v) for k, v in d["counts"].items()})


@dataclass(frozen=True)
class ReplayRecord:
    """One fetch-replay check of ``feature_service`` (of Feast project ``project``): ``rows`` logged fetches with request time in
    ``[since, until)`` replayed offline; ``mismatches`` per feature."""

    checked_at: datetime
    since: datetime
    until: datetime
    project: str
    feature_service: str
    rows: int
    mismatches: Mapping[str, int] = field(default_factory=dict)

    def ratio(self, feature: str) -> float:
        """Share of the replayed fetches whose online value of ``feature`` differs from the offline one."""
        return self.mismatches.get(feature, 0) / self.rows if self.rows else 0.0

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values())

    def to_json(self) -> str:
        return json.dumps({"checked_at": self.checked_at.isoformat(), "since": self.since.isoformat(),
                           "until": self.until.isoformat(), "project": self.project,
                           "feature_service": self.feature_service,
                           "rows": self.rows, "mismatches": dict(sorted(self.mismatches.items()))})

    @classmethod
    def from_json(cls, raw: str) -> "ReplayRecord":
        d = json.loads(raw)
        return cls(datetime.fromisoformat(d["checked_at"]), datetime.fromisoformat(d["since"]),
                   datetime.fromisoformat(d["until"]), d["project"], d["feature_service"], int(d["rows"]),
                   {k: int(v) for k, v in d["mismatches"].items()})


def _set_property(key: str, value: str, p: Profile) -> None:
    """Set one property of ``abukix.commit_events``, re-reading and retrying when a processor committed first."""
    from pyiceberg.exceptions import CommitFailedException

    from skewless.lake.events import events_table

    for attempt in range(1, COMMIT_RETRIES + 1):
        table = events_table(p)
        try:
            with table.transaction() as tx:
                tx.set_properties({key: value})
            return
        except CommitFailedException as e:
            log.warning("property commit conflict on the events table (attempt %d/%d): %s", attempt,
                        COMMIT_RETRIES, e)
            time.sleep(0.05 * attempt)
    raise lake.LakeError(f"could not record a consistency check on the events table after {COMMIT_RETRIES} attempts")


def record_reconciliation(rec: ReconcileRecord, p: Profile | None = None) -> ReconcileRecord:
    p = p or profile()
    _set_property(f"{RECONCILE}.{p.name}", rec.to_json(), p)
    return rec


def record_replay(rec: ReplayRecord, p: Profile | None = None) -> ReplayRecord:
    p = p or profile()
    _set_property(f"{REPLAY}.{rec.feature_service}.{p.name}", rec.to_json(), p)
    return rec


def read(p: Profile | None = None) -> tuple[ReconcileRecord | None, list[ReplayRecord]]:
    """The last recorded reconciliation (None: never) and the last fetch-replay check of every service."""
    from skewless.core.config import COMMIT_EVENTS_TABLE

    p = p or profile()
    cat = lake.catalog(p)
    if not cat.table_exists(COMMIT_EVENTS_TABLE):
        return None, []
    props = cat.load_table(COMMIT_EVENTS_TABLE).properties
    raw = props.get(f"{RECONCILE}.{p.name}")
    replays = [ReplayRecord.from_json(v) for k, v in sorted(props.items())
               if k.startswith(REPLAY + ".") and k.endswith("." + p.name)]
    return (ReconcileRecord.from_json(raw) if raw else None), replays
