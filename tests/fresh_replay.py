"""A replay of real commit events with arrival times, for the fresh path's tests (tests/test_fresh.py).

:func:`replay_events` turns commits of the shipped sample into a push schedule: most commits arrive minutes after
they were made, some hours or days late (a laptop that pushed later), some twice (webhook redelivery, a re-pushed
branch), a few are retracted later (force-push) and one of those comes back; arrivals are quantized into ticks and
the events of a tick are pushed in shuffled order. :func:`reference` computes the live features independently of
skewless from that schedule: plain Python over the raw events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless.data import SAMPLE_COMMITS

REPLAY_REPOS = ("apache/iceberg-python", "duckdb/duckdb-python")
REPLAY_FROM = datetime(2026, 8, 1, tzinfo=timezone.utc)
TICK = timedelta(minutes=20)


@dataclass
class Push:
    at: datetime  # arrival instant (the clock when it is pushed)
    row: dict[str, Any]  # commit columns (+ kind)


def _iso(v: datetime) -> str:
    return v.astimezone(timezone.utc).isoformat()


def replay_events(seed: int = 7, limit: int | None = None) -> list[Push]:
    """The push schedule, in arrival order (see the module docstring)."""
    rng = random.Random(seed)
    t = pq.read_table(SAMPLE_COMMITS)
    t = t.filter(pc.and_(pc.is_in(t["repo"], value_set=pa.array(REPLAY_REPOS)),
                         pc.greater_equal(t["committed_at"], REPLAY_FROM)))
    rows = sorted(t.to_pylist(), key=lambda r: r["committed_at"])
    if limit:
        rows = rows[:limit]
    pushes: list[Push] = []
    for r in rows:
        row = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in r.items()}
        u = rng.random()
        if u < 0.70:
            delay = timedelta(minutes=rng.uniform(0, 15))
        elif u < 0.88:
            delay = timedelta(hours=rng.uniform(1, 12))
        else:
            delay = timedelta(days=rng.uniform(1, 4))
        at = r["committed_at"] + delay
        pushes.append(Push(at, row))
        if rng.random() < 0.08:  # delivered again later
            pushes.append(Push(at + timedelta(minutes=rng.uniform(1, 600)), dict(row)))
    retracted = rng.sample(rows, 4)
    for i, r in enumerate(retracted):
        at = r["committed_at"] + timedelta(days=rng.uniform(0.5, 2))
        pushes.append(Push(at, {"repo": r["repo"], "sha": r["sha"], "kind": "retract"}))
        if i == 0:  # force-pushed back
            row = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in r.items()}
            pushes.append(Push(at + timedelta(hours=3), row))
    # quantize arrivals into ticks; inside a tick the order is shuffled (the rule orders by arrival, then log order)
    for p in pushes:
        p.at = REPLAY_FROM + TICK * -(-((p.at - REPLAY_FROM) // timedelta(microseconds=1)) //
                                      (TICK // timedelta(microseconds=1)))
    rng.shuffle(pushes)
    pushes.sort(key=lambda p: p.at)  # stable: shuffled within a tick
    return pushes


def ticks(pushes: list[Push]) -> list[tuple[datetime, list[dict[str, Any]]]]:
    out: list[tuple[datetime, list[dict[str, Any]]]] = []
    for p in pushes:
        if not out or out[-1][0] != p.at:
            out.append((p.at, []))
        out[-1][1].append(p.row)
    return out


def _us(v: str | datetime) -> int:
    d = datetime.fromisoformat(v) if isinstance(v, str) else v
    return (d - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def reference(pushes: list[Push], repo: str, at: datetime) -> dict[str, Any]:
    """The five live features of ``repo`` at ``at`` from the raw schedule: events that arrived by ``at`` in arrival
    order (a re-sent commit counts once, a retraction removes, a re-add restores), then the windows."""
    t = _us(at)
    state: dict[str, tuple[int, str]] = {}
    for p in pushes:
        if p.at > at:
            break
        if p.row["repo"] != repo:
            continue
        if p.row.get("kind") == "retract":
            state.pop(p.row["sha"], None)
        else:
            state[p.row["sha"]] = (_us(p.row["committed_at"]), p.row["author_id"])
    present = [(c, a) for c, a in state.values() if c < t]

    def inside(hours: float) -> list[tuple[int, str]]:
        return [(c, a) for c, a in present if c >= t - int(hours * 3600 * 1_000_000)]

    return {
        "commits_last_1h": len(inside(1)),
        "commits_last_24h": len(inside(24)),
        "commits_last_7d_live": len(inside(24 * 7)),
        "active_authors_last_24h": len({a for _, a in inside(24)}),
        "seconds_since_last_commit": (t - max(c for c, _ in present)) / 1_000_000 if present else None,
    }


def sample_instants(pushes: list[Push], n: int, seed: int = 11) -> list[datetime]:
    """``n`` instants over the replay: random ones, tick instants themselves and one microsecond before/after."""
    rng = random.Random(seed)
    first, last = pushes[0].at, pushes[-1].at + timedelta(days=2)
    span = (last - first) // timedelta(microseconds=1)
    out = {first + timedelta(microseconds=rng.randrange(span)) for _ in range(n // 2)}
    arrivals = sorted({p.at for p in pushes})
    for a in rng.sample(arrivals, min(len(arrivals), n // 4)):
        out |= {a, a - timedelta(microseconds=1), a + timedelta(microseconds=1)}
    return sorted(out)
