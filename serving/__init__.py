"""skewless serving: the next-week-commits model behind KServe's REST protocol, fed by the Feast online store.

- :mod:`serving.predictor` — the ``kserve.Model`` (MLflow model + ONE FeatureStore, feature list from the model
  version's ``feature_service`` tag; per-instance errors; readiness with reasons).
- :mod:`serving.server` — KServe's v1/v2 data plane on uvicorn, loopback by default (``skewless serve``).
- :mod:`serving.metrics` — Prometheus histograms ``skewless_predictor_request_seconds``,
  ``skewless_feature_fetch_seconds`` (labels ``model``, ``feature_service``).
- :mod:`serving.feature_log` — the serving log: what was served, one JSON line per instance.
- :mod:`serving.fetch` — logged online fetches of a feature service (the fresh one has no model yet), with their
  request time; :mod:`serving.replay` replays them point-in-time (the fetch-replay consistency check).
- :mod:`serving.bench` — p50/p99 of one-entity predictions over HTTP (``python -m serving.bench``).

Nothing here computes a feature: values come only from ``get_online_features``. No module imports Airflow.
"""
