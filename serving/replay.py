"""Fetch-replay consistency, as Chronon runs it: the logged online fetches of a feature service
(:mod:`serving.fetch`) replayed as the entity rows ``(entity, event_timestamp = request time)`` of ONE point-in-time
``get_historical_features`` of the same service; the share of fetches whose online value differs from the offline
one, per feature, is the consistency metric (``skewless_fetch_replay_mismatch_ratio``, alert
``FetchReplayConsistencyFailed``).

For the fresh service the two sides follow one rule (ADR 0016/0017): a training row at T sees what the online store
held at T. A mismatch is therefore train/serve skew of the fresh features: online state that drifted from
``abukix.commit_events`` (lost or foreign versions), a read or write path computing something else, or a fetch
served while a batch was between its ``known_at`` stamp and its online write (a small, transient share; see the
runbook). Values are compared as parity compares them (:func:`skewless.ops.parity.same`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from serving import feature_log
from serving.fetch import service_of
from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE, Profile, profile
from skewless.core.errors import SkewlessError
from skewless.ops.consistency import ReplayRecord
from skewless.ops.parity import same

EXAMPLES = 10
_ROW = "__fetch_row"


class ReplayError(SkewlessError, ValueError):
    """The replay check was given an interval or a service it cannot check (the message says which)."""


@dataclass
class Replay:
    """What :func:`check` found."""

    feature_service: str
    since: datetime
    until: datetime
    project: str = ""
    rows: int = 0
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def ratio(self, feature: str) -> float:
        return self.mismatches.get(feature, 0) / self.rows if self.rows else 0.0

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values())

    def record(self, checked_at: datetime | None = None) -> ReplayRecord:
        return ReplayRecord(checked_at or datetime.now(timezone.utc), self.since, self.until, self.project,
                            self.feature_service, self.rows, dict(self.mismatches))

    def __str__(self) -> str:
        head = (f"{self.feature_service}: {self.rows} logged fetch(es) with request time in "
                f"[{self.since.isoformat()}, {self.until.isoformat()}) replayed point-in-time")
        if not self.rows:
            return head + "\nNOTHING TO CHECK (no fetch logged in the interval)"
        lines = [head, "feature                           mismatch_ratio"]
        lines += [f"{n:<33} {self.ratio(n):.4f}" for n in self.mismatches]
        lines += [f"  mismatch: {ex}" for ex in self.examples]
        lines.append("FETCH REPLAY CONSISTENT" if self.ok else "FETCH REPLAY INCONSISTENT")
        return "\n".join(lines)


def _aware(name: str, ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ReplayError(f"{name}={ts!r}: give a timezone-aware instant (UTC)")
    return ts.astimezone(timezone.utc)


def check(since: datetime, until: datetime, service: str = NEXT_WEEK_COMMITS_LIVE_SERVICE,
          p: Profile | None = None, store=None) -> Replay:
    """Replay the fetches of ``service`` logged with request time in ``[since, until)``; see the module docstring."""
    since, until = _aware("since", since), _aware("until", until)
    if since >= until:
        raise ReplayError(f"empty interval: since {since.isoformat()} is not before until {until.isoformat()}")
    p = p or profile()
    if store is None:
        from skewless.ops.feast_ops import feature_store

        store = feature_store(p)
    fs, key, names = service_of(store, service)
    out = Replay(service, since, until, store.project, mismatches={n: 0 for n in names})
    logged = feature_log.read(service, p, since=since.date(), until=until.date())
    if logged.empty:
        return out
    if "kind" in logged:
        logged = logged[logged["kind"] == "fetch"]
    logged = logged[(logged["ts"] >= since) & (logged["ts"] < until)].reset_index(drop=True)
    missing = [c for c in [key, *names] if c not in logged]
    if missing and not logged.empty:
        raise ReplayError(f"the serving log of {service} has no column(s) {missing}: it was written for another "
                          f"definition of the service; replay an interval logged with the current one")
    out.rows = len(logged)
    if logged.empty:
        return out
    entity_df = pd.DataFrame({key: logged[key], "event_timestamp": logged["ts"], _ROW: range(len(logged))})
    offline = store.get_historical_features(entity_df=entity_df, features=fs).to_df().set_index(_ROW).sort_index()
    if len(offline) != len(logged):
        raise ReplayError(f"get_historical_features returned {len(offline)} rows for {len(logged)} entity rows")
    for i, row in logged.iterrows():
        for n in names:
            online_value, offline_value = row[n], offline.at[i, n]
            if not same(online_value, offline_value):
                out.mismatches[n] += 1
                if len(out.examples) < EXAMPLES:
                    out.examples.append({key: row[key], "request_ts": row["ts"].isoformat(), "feature": n,
                                         "online": online_value, "offline": offline_value})
    return out
