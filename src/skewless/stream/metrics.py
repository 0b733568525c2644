"""Prometheus metrics of the stream processor (``skewless stream run --metrics-port``), on their own registry.

The processor is a long-running process of its own, so it serves its own ``/metrics`` (default 127.0.0.1:9109)
instead of going through the batch path's exporter (``skewless monitor serve``, which reads the lake and the online
store afresh at every scrape). Everything here is updated by the processor's loop as it goes; a scrape reads
counters only and never touches the log, the lake or the online store.

Series (what ``monitoring/alerts.yaml`` reads; runbooks ``runbooks/stream-freshness-slo-violation.md`` and
``runbooks/stream-processor-stalled.md``):

* ``skewless_stream_events_total{outcome}``: delivered events by what landing did with them — ``applied`` (a new
  version written), ``duplicate`` (nothing to write: the lake already says so), ``redelivered`` (this log sequence
  was stored before a crash; its version is written online again). The three add up to the events delivered.
* ``skewless_stream_batches_total``: micro-batches landed, written online and acknowledged.
* ``skewless_stream_errors_total{stage}``: exceptions raised by ``fetch``, ``land``, ``online`` (the online
  store write, or its rebuild) or ``ack``. Counted, then raised again: the processor still crashes, and its
  restart gets the unacknowledged events again (crash safety, ADR 0015).
* ``skewless_stream_pending_events``: events published and not yet acknowledged (``EventLog.pending()``), after
  every batch and every ``PENDING_EVERY_S`` while idle. While a batch is being processed it is at least that batch's
  size, so a processor hung inside a batch shows pending events.
* ``skewless_stream_arrival_to_online_seconds``: histogram, per delivered event, from its arrival at the intake to
  the end of the batch's online write (the fresh view's freshness SLI; buckets around the 1 s objective).
* ``skewless_stream_last_applied_timestamp_seconds``: Unix time the last batch was acknowledged; the processor's
  start until its first batch (so a processor that never gets a batch through still looks stalled after 5 minutes).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: The processor's /metrics port when ``skewless stream run`` is not told otherwise (0: no metrics server).
DEFAULT_PORT = 9109
DEFAULT_HOST = "127.0.0.1"
#: Histogram buckets of arrival -> online (seconds): fine around the fresh view's 1 s objective, coarse after.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
OUTCOMES = ("applied", "duplicate", "redelivered")
STAGES = ("fetch", "land", "online", "ack")
#: While idle, pending events are read from the log at most this often (one count per interval).
PENDING_EVERY_S = 10.0

EVENTS = "skewless_stream_events_total"
BATCHES = "skewless_stream_batches_total"
ERRORS = "skewless_stream_errors_total"
PENDING = "skewless_stream_pending_events"
LAG = "skewless_stream_arrival_to_online_seconds"
LAST_APPLIED = "skewless_stream_last_applied_timestamp_seconds"
#: Series names as Prometheus stores them (what rules, runbooks and dashboards may read).
SERIES_NAMES: tuple[str, ...] = (EVENTS, BATCHES, ERRORS, PENDING, LAG + "_bucket", LAG + "_count", LAG + "_sum",
                                 LAST_APPLIED)


class StreamMetrics:
    """The processor's metrics on a registry of their own (never the process-global one)."""

    def __init__(self, registry: Optional[CollectorRegistry] = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus_client appends _total to counters; their names are given without it
        self.events = Counter(EVENTS.removesuffix("_total"), "Events delivered to the stream processor, by outcome "
                              "of landing", ["outcome"], registry=r)
        self.batches = Counter(BATCHES.removesuffix("_total"), "Micro-batches landed, written online and "
                               "acknowledged", registry=r)
        self.errors = Counter(ERRORS.removesuffix("_total"), "Exceptions of the stream processor by stage (the "
                              "processor stops after each)", ["stage"], registry=r)
        self.pending = Gauge(PENDING, "Events published and not yet acknowledged", registry=r)
        self.lag = Histogram(LAG, "Seconds from an event's arrival at the intake to its batch written online",
                             buckets=LAG_BUCKETS, registry=r)
        self.last_applied = Gauge(LAST_APPLIED, "Unix time of the last acknowledged batch (the processor's start "
                                  "before the first)", registry=r)
        for o in OUTCOMES:  # every series exists from the start, at 0: rate() and increase() see the first event
            self.events.labels(outcome=o)
        for s in STAGES:
            self.errors.labels(stage=s)
        self.last_applied.set(time.time())
        self._pending_read = 0.0
        self._pending_now = 0
        self.server = None

    def serve(self, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> int:
        """Serve ``/metrics`` from a daemon thread; returns the port (``port`` 0: a free one)."""
        self.server, _ = start_http_server(port, host, registry=self.registry)
        return self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count an exception of stage ``name`` and raise it again."""
        try:
            yield
        except Exception:  # not KeyboardInterrupt / SystemExit: stopping is no error
            self.errors.labels(stage=name).inc()
            raise

    def fetched(self, n: int) -> None:
        """A batch of ``n`` events is in hand: at least ``n`` are pending until it is acknowledged."""
        if n > self._pending_now:
            self.pending.set(n)
            self._pending_now = n

    def batch(self, applied: int, duplicates: int, redelivered: int, lags: Iterable[float], pending: int) -> None:
        """One batch acknowledged: its outcomes, each event's arrival -> online seconds, the log's pending count."""
        self.events.labels(outcome="applied").inc(applied)
        self.events.labels(outcome="duplicate").inc(duplicates)
        self.events.labels(outcome="redelivered").inc(redelivered)
        for s in lags:
            self.lag.observe(s)
        self.batches.inc()
        self.last_applied.set(time.time())
        self.set_pending(pending)

    def set_pending(self, n: int) -> None:
        self.pending.set(n)
        self._pending_now = n
        self._pending_read = time.monotonic()

    def pending_due(self) -> bool:
        """Time to read the log's pending count again while idle."""
        return time.monotonic() - self._pending_read >= PENDING_EVERY_S
