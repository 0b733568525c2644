"""``skewless bench``: the project's Feast extensions against stock Feast and against the raw limit.

One run, one process tree, one worker process per measured path (see :mod:`skewless.bench.runner`):

* ``get_historical_features`` over the Iceberg feature table, with and without TTL, for a curve of entity-row
  counts: :class:`~skewless.feast_ext.offline.IcebergOfflineStore` vs Feast's DuckDB store vs one raw DuckDB
  ASOF JOIN — times, peak RSS, ratios, and a check that every path returned identical rows;
* materialization into Redis: :class:`~skewless.feast_ext.materialize.StreamingComputeEngine` vs Feast's local
  engine vs the Redis write ceiling, plus a killed-and-re-run materialization, all compared by Redis state;
* ``get_online_features`` against raw HMGETs;
* materialization into a Redis Cluster of three masters the benchmark starts on loopback (when ``redis-server`` and
  ``redis-cli`` are installed): the streaming engine against the same cluster's raw write ceiling;
* the fresh path (:mod:`skewless.bench.streaming`): one stream processor's throughput and arrival -> online latency
  against JetStream's own publish -> consume figures, live vs daily online reads and training retrieval.

Full size: 10M feature rows, 1M entity rows, 1M entities materialized (minutes; stock Feast capped). ``--quick``:
small sizes, used by ``tests/test_bench.py`` to check that the benchmark works and that all paths agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from skewless.bench.data import FULL, QUICK, Sizes


def run(quick: bool, workdir: Path, out_dir: Path, redis_host: str = "127.0.0.1", redis_port: int = 6379,
        redis_db: int = 4, repeats: int | None = None, cap_gb: float = 12.0, timeout_s: float = 900.0,
        echo: Callable[[str], None] = print, command: str = "skewless bench",
        sizes: Sizes | None = None, sections: tuple[str, ...] | None = None, cluster: bool = True,
        pg: str | None = None, nats: str | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run the benchmark (every section, or only ``sections``; ``cluster``: the Redis Cluster part of the
    materialization section too); returns the results and the report files written into ``out_dir``."""
    from skewless.bench import report
    from skewless.bench.runner import DEFAULT_NATS, DEFAULT_PG, SECTIONS, Bench

    chosen = sizes or (QUICK if quick else FULL)
    bench = Bench(chosen, workdir, redis_host, redis_port, redis_db, repeats or (1 if quick else 3),
                  cap_gb * 1000, timeout_s, echo, cluster=cluster, pg=pg or DEFAULT_PG, nats=nats or DEFAULT_NATS)
    results = bench.run(sections or SECTIONS)
    files = report.write(results, out_dir, command)
    return results, files


__all__ = ["FULL", "QUICK", "Sizes", "run"]
