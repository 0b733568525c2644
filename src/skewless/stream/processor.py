"""The stream processor (``skewless stream run``): commit events from the log to the lake and the online store.

One loop, micro-batched (ADR 0015): fetch up to ``max_batch`` unacknowledged events; sort them by arrival; stamp
the batch's ``known_at`` from the serving clock; land them (:func:`skewless.lake.events.land`: new versions
appended to ``abukix.commit_events`` in one Iceberg commit, ``abukix.commits`` levelled in one more); write the
versions to the online store (every live view, one pipeline / one SQLite transaction); acknowledge the batch.

Crash safety: every step is idempotent and the acknowledgement comes last. Killed anywhere, the next run gets the
unacknowledged events again with the same log sequence numbers; :func:`land` recognises a sequence it already
stored and hands back that version with its original ``known_at``, which is written online again (a set insert).
Nothing is lost (no ack before both writes) and nothing is counted twice (versions are keyed by sha, instant and
sequence; duplicates of a present commit write no version).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from skewless.core.config import COMMIT_EVENTS_TABLE, Profile, profile
from skewless.core.days import epoch_us
from skewless.core.errors import SkewlessError
from skewless.feast_ext.clock import serving_now
from skewless.feast_ext.live import still_needed, versions_of
from skewless.features.definitions import LIVE_TABLES
from skewless.lake.events import land
from skewless.stream import open_log
from skewless.stream.log import EventLog
from skewless.stream.metrics import StreamMetrics

log = logging.getLogger(__name__)

#: The live views fed by this processor (those computed from abukix.commit_events).
STREAM_VIEWS = tuple(t.name for t in LIVE_TABLES if t.events == COMMIT_EVENTS_TABLE)

#: Events per micro-batch: one fetch, two Iceberg commits, one online write and one round of acks.
MAX_BATCH = 5_000


@dataclass
class RunStats:
    batches: int = 0
    events: int = 0
    versions: int = 0
    duplicates: int = 0
    redelivered: int = 0
    seconds: float = 0.0
    lags: list[float] = field(default_factory=list)  # arrival -> online, seconds, one per delivered event
    #: wall seconds spent per stage (fetch, land, online, ack): where a batch's time goes (``skewless bench``)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def _spent(self, stage: str, since: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - since

    def __str__(self) -> str:
        lag = ""
        if self.lags:
            ordered = sorted(self.lags)
            lag = (f"; arrival -> online p50 {ordered[len(ordered) // 2]:.3f} s, "
                   f"max {ordered[-1]:.3f} s")
        return (f"processed {self.events} event(s) in {self.batches} batch(es): {self.versions} version(s) applied, "
                f"{self.duplicates} duplicate(s) skipped, {self.redelivered} redelivered{lag}")


def _online(p: Profile):
    """The Feast store of the profile and its online store (where live versions are written)."""
    from skewless.ops.feast_ops import feature_store

    store = feature_store(p)
    return store, store._get_provider().online_store


class Processor:
    """The processor of one profile's log (see the module docstring); :meth:`drain` / :meth:`run` consume it."""

    def __init__(self, log_: Optional[EventLog] = None, p: Optional[Profile] = None, max_batch: int = MAX_BATCH,
                 metrics: Optional[StreamMetrics] = None):
        self.p = p or profile()
        #: Prometheus metrics (skewless.stream.metrics); served only when someone calls ``metrics.serve``
        self.metrics = metrics or StreamMetrics()
        self.store, self.online = _online(self.p)
        self._owned = log_ is None
        self.log = log_ or open_log(self.p)
        self.max_batch = max_batch
        self.stats = RunStats()
        self.rebuilt = 0
        self.ensure_online()

    def ensure_online(self) -> None:
        """Rebuild the live views' versions from ``abukix.commit_events`` when the online store lost them (its mark
        is gone: a new online store, a flushed Redis, a Redis restarted without persistence)."""
        lost = [v for v in STREAM_VIEWS if self.online.live_state_mark(self.store.config, v) is None]
        if lost:
            with self.metrics.stage("online"):
                self.rebuilt += rebuild_online(self.p, self.store, self.online, lost)

    def process(self, delivered: list) -> None:
        """Land, write online, acknowledge one fetched batch."""
        events = [{**d.event, "seq": d.seq} for d in delivered]  # land() orders them by arrival
        known_at = serving_now()
        m = self.metrics
        m.fetched(len(delivered))
        st = self.stats
        t = time.perf_counter()
        with m.stage("land"):
            landed = land(events, known_at, self.p)
        st._spent("land", t)
        self.ensure_online()
        t = time.perf_counter()
        with m.stage("online"):
            versions = versions_of(landed.versions)
            for view in STREAM_VIEWS:
                self.online.write_live_versions(self.store.config, view, versions)
        online_at = serving_now().timestamp()
        st._spent("online", t)
        t = time.perf_counter()
        with m.stage("ack"):
            self.log.ack(delivered)
        st._spent("ack", t)
        lags = [online_at - e["arrived_at"] / 1_000_000 for e in events]
        m.batch(landed.written.num_rows, landed.duplicates, landed.redelivered.num_rows, lags, self.log.pending())
        st.batches += 1
        st.events += len(delivered)
        st.versions += landed.written.num_rows
        st.duplicates += landed.duplicates
        st.redelivered += landed.redelivered.num_rows
        if len(st.lags) < 100_000:
            st.lags += lags

    def run(self, once: bool = False, idle_timeout: float = 0.5, stop: Callable[[], bool] = lambda: False,
            on_batch: Callable[[RunStats], None] | None = None) -> RunStats:
        """Consume the log. ``once``: drain what is there and return; else run until ``stop()``."""
        started = time.monotonic()
        try:
            while not stop():
                t = time.perf_counter()
                with self.metrics.stage("fetch"):
                    delivered = self.log.fetch(self.max_batch, idle_timeout)
                if delivered:  # an idle wait is no fetch cost
                    self.stats._spent("fetch", t)
                if not delivered:
                    # --once drains: it returns when nothing is unacknowledged (events a killed processor held come
                    # back after the broker's ack wait), not at the first empty fetch
                    if once or self.metrics.pending_due():
                        pending = self.log.pending()
                        self.metrics.set_pending(pending)
                        if once and pending == 0:
                            break
                    continue
                self.process(delivered)
                if on_batch:
                    on_batch(self.stats)
        finally:
            self.stats.seconds += time.monotonic() - started
        return self.stats

    def drain(self) -> RunStats:
        return self.run(once=True, idle_timeout=0.2)

    def close(self) -> None:
        if self._owned:
            self.log.close()

    def __enter__(self) -> "Processor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(once: bool = False, max_batch: int = MAX_BATCH, idle_timeout: float = 0.5,
        stop: Callable[[], bool] = lambda: False, on_batch: Callable[[RunStats], None] | None = None,
        metrics_port: int = 0, metrics_host: str = "127.0.0.1",
        on_metrics: Callable[[str], None] | None = None) -> RunStats:
    """``skewless stream run``: a :class:`Processor` on the profile's log; with ``metrics_port`` (not 0) its
    Prometheus metrics on ``http://metrics_host:metrics_port/metrics`` while it runs (``on_metrics`` gets the URL)."""
    metrics = StreamMetrics()
    if metrics_port:
        try:
            port = metrics.serve(metrics_port, metrics_host)
        except OSError as e:  # another processor on this host holds the port: say so, do not run unwatched
            raise SkewlessError(f"cannot serve the processor's metrics on {metrics_host}:{metrics_port} ({e}); "
                                "give each processor its own --metrics-port, or --metrics-port 0 for none") from None
        log.info("stream processor metrics on http://%s:%d/metrics", metrics_host, port)
        if on_metrics:
            on_metrics(f"http://{metrics_host}:{port}/metrics")
    try:
        with Processor(max_batch=max_batch, metrics=metrics) as proc:
            return proc.run(once, idle_timeout, stop, on_batch)
    finally:
        metrics.close()


def rebuild_online(p: Profile | None = None, store=None, online=None, views: Optional[list[str]] = None) -> int:
    """Rewrite live views' online versions from ``abukix.commit_events`` (``skewless stream rebuild-online``; the
    processor does it by itself when the online store lost them) and mark them held: only the versions a read from
    now on can need (:func:`skewless.feast_ext.live.still_needed`). Returns the versions written."""
    import uuid

    from skewless.lake.events import read_versions

    p = p or profile()
    if store is None:
        store, online = _online(p)
    now_us = epoch_us(serving_now())
    needed = {entity: still_needed(vs, now_us) for entity, vs in versions_of(read_versions(p)).items()}
    for name in views or STREAM_VIEWS:
        online.clear_live_versions(store.config, name)
        online.write_live_versions(store.config, name, needed)
        online.set_live_state_mark(store.config, name, uuid.uuid4().hex)
    return sum(map(len, needed.values()))
