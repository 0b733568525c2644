"""Prometheus metrics of the predictor, registered on first use (never at import).

They land in prometheus_client's default registry, which KServe's ``GET /metrics`` exposes next to its own
``request_predict_seconds`` family. Labels: ``model`` (registered model name) and ``feature_service``.

``skewless_predictor_request_seconds``   whole inference call (parse, feature fetch, predict, encode)
``skewless_feature_fetch_seconds``       the online read of the feature service (one per request)
``skewless_predictor_instances_total``   instances answered, by ``outcome`` (``prediction`` | ``error``)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

LABELS = ("model", "feature_service")
# Online reads are sub-millisecond on SQLite and ~1 ms on local Redis: the buckets resolve that range.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class PredictorMetrics:
    request_seconds: object
    feature_fetch_seconds: object
    instances_total: object


_lock = threading.Lock()
_metrics: PredictorMetrics | None = None


def metrics() -> PredictorMetrics:
    """The predictor's metric families (created and registered once per process)."""
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Histogram

            _metrics = PredictorMetrics(
                request_seconds=Histogram(
                    "skewless_predictor_request_seconds",
                    "Latency of one inference request to the predictor (parse, feature fetch, predict, encode).",
                    LABELS, buckets=LATENCY_BUCKETS),
                feature_fetch_seconds=Histogram(
                    "skewless_feature_fetch_seconds",
                    "Latency of the online feature read of one request (get_online_features of the service).",
                    LABELS, buckets=LATENCY_BUCKETS),
                instances_total=Counter(
                    "skewless_predictor_instances_total",
                    "Instances answered by the predictor, by outcome (prediction | error).",
                    (*LABELS, "outcome")),
            )
        return _metrics
