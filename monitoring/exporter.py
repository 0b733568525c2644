"""Prometheus exporter of feature freshness, materialization and parity, per feature view.

Every scrape reads the state afresh through :class:`skewless.ops.freshness.FreshnessReader`: the event time of the
newest value in the ONLINE store (not when a job ran: Feast's own gauge measures that), the offline build and
online materialization marks, the last recorded materialization and parity check, and the freshness SLO each view
declares in its tags (exported too, so alert rules read objectives from the same source as the code).

Two ways out:

* ``skewless monitor serve [--port 9798]``: an HTTP endpoint ``/metrics`` on 127.0.0.1 for Prometheus.
* :func:`write_textfile` (``skewless monitor export``; the daily DAG's publish step): the same metrics written once,
  atomically, in the text format of node_exporter's textfile collector.

Alert rules use the ``*_timestamp_seconds`` series (``time() - ts``), which stay right in a textfile written hours
ago; ``skewless_online_event_age_seconds`` is the age at the moment of the read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from skewless.core.config import Profile, profile
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from skewless.ops.freshness import FreshnessReader, ViewStatus

log = logging.getLogger(__name__)

DEFAULT_PORT = 9798
DEFAULT_HOST = "127.0.0.1"
VIEW_LABELS = ("project", "feature_view")


class ExporterError(SkewlessError, ValueError):
    """The exporter was asked for something it cannot do (the message says what)."""

Samples = Callable[["ViewStatus"], list[tuple[tuple[str, ...], float]]]


def _one(fn: Callable[["ViewStatus"], float | None]) -> Samples:
    def samples(s: "ViewStatus") -> list[tuple[tuple[str, ...], float]]:
        v = fn(s)
        return [] if v is None else [((), float(v))]

    return samples


def _ts(dt) -> float | None:
    return None if dt is None else dt.timestamp()


def _day_ts(d) -> float | None:
    from skewless.features import day_start

    return None if d is None else day_start(d).timestamp()


@dataclass(frozen=True)
class ViewMetric:
    """One exported gauge per feature view (plus ``extra_labels`` when it has several samples per view)."""

    name: str
    help: str
    samples: Samples
    extra_labels: tuple[str, ...] = ()


METRICS: tuple[ViewMetric, ...] = (
    ViewMetric("skewless_online_newest_event_timestamp_seconds",
               "Event time of the newest value the online store serves for the feature view (Unix seconds).",
               _one(lambda s: _ts(s.online_newest_event))),
    ViewMetric("skewless_online_event_age_seconds",
               "Event-time age of the newest online value when the exporter read it.",
               _one(lambda s: s.online_age_seconds)),
    ViewMetric("skewless_online_store_up",
               "1 if the exporter could read the feature view from the online store, else 0.",
               _one(lambda s: 0.0 if s.online_error else 1.0)),
    ViewMetric("skewless_online_entities",
               "Entities of the feature view that have a value in the online store.",
               _one(lambda s: None if s.online_error else s.online_entities)),
    ViewMetric("skewless_offline_entities",
               "Entities of the feature view in its offline (Iceberg) feature table.",
               _one(lambda s: None if s.online_error else s.entities)),
    ViewMetric("skewless_built_through_timestamp_seconds",
               "Start (00:00 UTC) of the last day whose rows are built in the offline feature table.",
               _one(lambda s: _day_ts(s.built_through))),
    ViewMetric("skewless_materialized_through_timestamp_seconds",
               "Start (00:00 UTC) of the last day whose rows are materialized into the online store.",
               _one(lambda s: _day_ts(s.materialized_through))),
    ViewMetric("skewless_materialization_lag_seconds",
               "Built-through minus materialized-through: how far the online store trails the offline tables.",
               _one(lambda s: s.materialization_lag_seconds)),
    ViewMetric("skewless_materialization_last_success_timestamp_seconds",
               "Wall-clock time the last successful materialization of the feature view finished (Unix seconds).",
               _one(lambda s: _ts(s.last_materialization))),
    ViewMetric("skewless_parity_mismatch_ratio",
               "Share of checked entities whose online value differs from the point-in-time offline value.",
               lambda s: [] if s.parity is None else
               [((f,), s.parity.ratio(f)) for f in sorted(set(s.features) | set(s.parity.mismatches))],
               extra_labels=("feature",)),
    ViewMetric("skewless_parity_checked_entities",
               "Entities compared by the last online/offline parity check.",
               _one(lambda s: None if s.parity is None else s.parity.entities)),
    ViewMetric("skewless_parity_last_check_timestamp_seconds",
               "Wall-clock time of the last online/offline parity check (Unix seconds).",
               _one(lambda s: None if s.parity is None else _ts(s.parity.checked_at))),
    ViewMetric("skewless_freshness_slo_seconds",
               "Freshness SLO: the largest event-time age of served values that counts as fresh (view tag).",
               _one(lambda s: s.slo.max_age_seconds)),
    ViewMetric("skewless_freshness_objective_ratio",
               "Freshness SLO objective: the share of time the view must be fresh (view tag).",
               _one(lambda s: s.slo.objective)),
    ViewMetric("skewless_freshness_window_seconds",
               "Freshness SLO window over which the objective is measured (view tag, in seconds).",
               _one(lambda s: s.slo.window_seconds)),
    ViewMetric("skewless_schedule_interval_seconds",
               "Interval of the pipeline that refreshes the feature view (view tag 'schedule').",
               _one(lambda s: s.slo.schedule_seconds)),
)
COLLECT_SECONDS = "skewless_exporter_collect_seconds"

#: Every metric name this exporter exports per feature view.
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS) + (COLLECT_SECONDS,)

#: The fresh path's consistency checks (skewless.ops.consistency), exported when they have been recorded.
RECONCILE_MISMATCHES = "skewless_stream_reconcile_mismatches"
RECONCILE_EVENTS = "skewless_stream_reconcile_checked_events"
RECONCILE_IN_FLIGHT = "skewless_stream_reconcile_in_flight_events"
RECONCILE_LAST = "skewless_stream_reconcile_last_check_timestamp_seconds"
REPLAY_RATIO = "skewless_fetch_replay_mismatch_ratio"
REPLAY_ROWS = "skewless_fetch_replay_checked_rows"
REPLAY_LAST = "skewless_fetch_replay_last_check_timestamp_seconds"
CONSISTENCY_METRIC_NAMES: tuple[str, ...] = (RECONCILE_MISMATCHES, RECONCILE_EVENTS, RECONCILE_IN_FLIGHT,
                                             RECONCILE_LAST, REPLAY_RATIO, REPLAY_ROWS, REPLAY_LAST)


class SkewlessCollector:
    """A prometheus_client collector: one read of every view's status per collection (serialized by a lock)."""

    def __init__(self, reader: "FreshnessReader | None" = None, p: Profile | None = None):
        self._reader = reader
        self._profile = p
        self._lock = threading.Lock()

    @property
    def reader(self) -> "FreshnessReader":
        if self._reader is None:
            from skewless.ops.freshness import FreshnessReader

            self._reader = FreshnessReader(self._profile or profile())
        return self._reader

    @staticmethod
    def _families() -> dict[str, "Metric"]:
        from prometheus_client.core import GaugeMetricFamily

        fams = {m.name: GaugeMetricFamily(m.name, m.help, labels=VIEW_LABELS + m.extra_labels) for m in METRICS}
        fams[COLLECT_SECONDS] = GaugeMetricFamily(COLLECT_SECONDS, "Time the exporter took to read every view.")
        return fams

    def describe(self) -> Iterator["Metric"]:
        """The metric families without samples (prometheus_client checks names with it at registration)."""
        yield from self._families().values()

    def collect(self) -> Iterator["Metric"]:
        with self._lock:
            t0 = time.perf_counter()
            statuses = self.reader.status()
            fams = self._families()
            for s in statuses:
                for m in METRICS:
                    for extra, value in m.samples(s):
                        fams[m.name].add_metric((s.project, s.feature_view) + extra, value)
            fams[COLLECT_SECONDS].add_metric((), time.perf_counter() - t0)
        yield from fams.values()


class ConsistencyCollector:
    """The last recorded stream/lake reconciliation and fetch-replay checks (one catalog read per collection).

    Series (``monitoring/alerts.yaml``: ``StreamLakeReconciliationFailed``, ``FetchReplayConsistencyFailed``):
    ``skewless_stream_reconcile_mismatches{kind}`` (missing, duplicated, orphaned, commits_mismatched),
    ``..._checked_events``, ``..._in_flight_events``, ``..._last_check_timestamp_seconds``;
    ``skewless_fetch_replay_mismatch_ratio{project,feature_service,feature}``, ``..._checked_rows``,
    ``..._last_check_timestamp_seconds``. No check recorded yet: the families carry no sample.
    """

    def __init__(self, p: Profile | None = None):
        self._profile = p

    @staticmethod
    def _families() -> dict[str, "Metric"]:
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily
        replay = ["project", "feature_service"]
        return {
            RECONCILE_MISMATCHES: g(RECONCILE_MISMATCHES, "Events or commits the last stream/lake reconciliation "
                                    "found in disagreement, by kind.", labels=["kind"]),
            RECONCILE_EVENTS: g(RECONCILE_EVENTS, "Settled events the last stream/lake reconciliation checked."),
            RECONCILE_IN_FLIGHT: g(RECONCILE_IN_FLIGHT, "Events not yet acknowledged when the last reconciliation "
                                   "ran (not judged)."),
            RECONCILE_LAST: g(RECONCILE_LAST, "Wall-clock time of the last stream/lake reconciliation (Unix s)."),
            REPLAY_RATIO: g(REPLAY_RATIO, "Share of the logged online fetches whose value differs from the "
                            "point-in-time offline value at their request time (last fetch-replay check).",
                            labels=replay + ["feature"]),
            REPLAY_ROWS: g(REPLAY_ROWS, "Logged fetches the last fetch-replay check replayed.", labels=replay),
            REPLAY_LAST: g(REPLAY_LAST, "Wall-clock time of the last fetch-replay check (Unix s).", labels=replay),
        }

    def describe(self) -> Iterator["Metric"]:
        yield from self._families().values()

    def collect(self) -> Iterator["Metric"]:
        from skewless.ops import consistency

        p = self._profile or profile()
        reconciled, replays = consistency.read(p)
        fams = self._families()
        if reconciled is not None:
            for kind in consistency.RECONCILE_KINDS:
                fams[RECONCILE_MISMATCHES].add_metric([kind], reconciled.counts.get(kind, 0))
            fams[RECONCILE_EVENTS].add_metric([], reconciled.events)
            fams[RECONCILE_IN_FLIGHT].add_metric([], reconciled.in_flight)
            fams[RECONCILE_LAST].add_metric([], reconciled.checked_at.timestamp())
        for r in replays:
            labels = [r.project, r.feature_service]
            for feature in sorted(r.mismatches):
                fams[REPLAY_RATIO].add_metric(labels + [feature], r.ratio(feature))
            fams[REPLAY_ROWS].add_metric(labels, r.rows)
            fams[REPLAY_LAST].add_metric(labels, r.checked_at.timestamp())
        yield from fams.values()


def registry(p: Profile | None = None, reader: "FreshnessReader | None" = None):
    """A CollectorRegistry holding the skewless collectors (per feature view; the fresh path's consistency)."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=True)
    reg.register(SkewlessCollector(reader, p))
    reg.register(ConsistencyCollector(p))
    return reg


def render(p: Profile | None = None, reader: "FreshnessReader | None" = None) -> str:
    """The metrics in Prometheus text format, read now."""
    from prometheus_client import generate_latest

    return generate_latest(registry(p, reader)).decode()


def default_textfile(p: Profile | None = None) -> Path:
    """Where :func:`write_textfile` writes by default: ``$SKEWLESS_HOME/monitoring/skewless.prom``."""
    return (p or profile()).home / "monitoring" / "skewless.prom"


def write_textfile(path: Path | str | None = None, p: Profile | None = None,
                   reader: "FreshnessReader | None" = None) -> tuple[Path, str]:
    """Read the metrics once and write them atomically to ``path`` (a node_exporter textfile ``*.prom``).

    Returns the path and the text written (the DAG logs it).
    """
    p = p or profile()
    path = Path(path) if path is not None else default_textfile(p)
    if path.suffix != ".prom":
        raise ExporterError(f"{path}: a textfile collector only reads files ending in .prom")
    text = render(p, reader)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path, text


def start(port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, p: Profile | None = None,
          reader: "FreshnessReader | None" = None):
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns (server, thread). Port 0 picks a free one."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry(p, reader))
    log.info("serving skewless metrics on http://%s:%d/metrics", host, server.server_port)
    return server, thread


def serve(port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, p: Profile | None = None,
          echo: Callable[[str], None] | None = None) -> None:
    """Serve ``/metrics`` until interrupted; ``echo`` receives the URL once listening."""
    server, thread = start(port, host, p)
    if echo:
        echo(f"serving http://{host}:{server.server_port}/metrics (Ctrl-C stops)")
    try:
        while thread.is_alive():
            thread.join(timeout=1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
