"""One measured step of the benchmark, in its own process: ``python -m skewless.bench.worker SPEC.json``.

The runner (:mod:`skewless.bench.runner`) starts one worker per path so that each path's peak RSS is its own. A
worker reads its spec (JSON), runs one task, and writes a JSON result next to it (``<spec>.result.json``): the
timed section's wall and CPU seconds, the process's RSS before the timed section and its peak, and task numbers.
Results of retrievals go to Parquet files so the runner can check that every path returned the same rows.

The raw paths import neither Feast nor skewless's Feast extensions: they are what DuckDB and Redis do alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from skewless.bench import streaming

from skewless.bench.measure import _rss_mb, measured  # noqa: F401 (measured: the paths' timed section)


# --- data preparation -----------------------------------------------------------------------------------------------
def prepare_seed(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the real repo_activity rows (ingest → features.build) in this process's SKEWLESS_HOME."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from skewless import features, lake
    from skewless.lake import ingest
    from skewless.bench import data

    sources = [Path(s) for s in spec["sources"]]
    ingest.ingest(sources)
    committed = pc.max(pq.read_table(sources[0], columns=["committed_at"])["committed_at"]).as_py()
    for s in sources[1:]:
        committed = max(committed, pc.max(pq.read_table(s, columns=["committed_at"])["committed_at"]).as_py())
    features.build(until=committed.date())
    seed = data.seed_rows(lake.load_table(features.REPO_ACTIVITY.identifier).scan().to_arrow())
    data.write(seed, Path(spec["seed_path"]))
    return {"rows": seed.num_rows, "repos": len(pc.unique(seed["repo"])), "sources": [str(s) for s in sources]}


def prepare_home(spec: dict[str, Any]) -> dict[str, Any]:
    """Write a scaled repo_activity table into this SKEWLESS_HOME and register the Feast repository there."""
    from datetime import timedelta

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from skewless import features, lake
    from skewless.ops import feast_ops
    from skewless.bench import data

    seed = pq.read_table(spec["seed_path"])
    if spec["kind"] == "hist":
        table = data.history_table(seed, spec["feature_rows"])
    else:
        table = data.materialization_table(seed, spec["mat_entities"], spec["mat_days"])
    for t in features.TABLES:
        lake.create_feature_table(t.name, t.arrow_schema)
    lake.load_table(features.REPO_ACTIVITY.identifier).append(table)
    feast_ops.apply()
    store = feast_ops.feature_store()
    views = [store.get_feature_view(features.REPO_ACTIVITY.name)]
    if spec["kind"] == "mat":
        views = [_wide_view(store, table, spec["wide_view"])]
    if spec["kind"] == "hist":
        from feast import FeatureView

        fv = views[0]
        # The two cases of the reference figures: a 1-day TTL and none (the shipped view has none, ADR 0009).
        copies = [FeatureView(
            name=name, entities=[store.get_entity(e) for e in fv.entities], ttl=ttl,
            schema=list(fv.entity_columns) + list(fv.features), source=fv.batch_source, online=False,
            description=f"Benchmark copy of {fv.name} with {what}.", owner=fv.owner, tags={"bench": "true"},
        ) for name, ttl, what in ((spec["ttl_view"], timedelta(days=1), "a 1-day TTL"),
                                  (spec["nottl_view"], timedelta(0), "no TTL"))]
        store.apply(copies)
        views = copies
        entities = data.entity_rows(table, spec["entity_rows"])
        data.write(entities, Path(spec["entity_path"]))
    out: dict[str, Any] = {
        "rows": table.num_rows,
        "entities": len(pc.unique(table["repo"])),
        "first": pc.min(table["event_timestamp"]).as_py().isoformat(),
        "last": pc.max(table["event_timestamp"]).as_py().isoformat(),
        "views": {v.name: {"ttl_us": v.ttl // timedelta(microseconds=1) if v.ttl else 0,
                           "features": [f.name for f in v.features], "entity": v.entity_columns[0].name}
                  for v in views},
        "data_files": len(lake.load_table(features.REPO_ACTIVITY.identifier).scan().plan_files()),
    }
    return out


def _wide_view(store, table, name: str):
    """The benchmark-only 10-feature view over ``features.<name>`` (repo_activity + :data:`data.WIDE_FEATURES`)."""
    from feast import FeatureView, Field
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
    from feast.types import Float64

    from skewless import features, lake
    from skewless.bench import data
    from skewless.core.config import FEATURES_NAMESPACE

    lake.create_feature_table(name, data.WIDE_SCHEMA)
    lake.load_table(f"{FEATURES_NAMESPACE}.{name}").append(data.wide_table(table))
    fv = store.get_feature_view(features.REPO_ACTIVITY.name)
    src = fv.batch_source
    source = IcebergSource(
        name=f"{name}_source", catalog_type=src.catalog_type, catalog_name=src.catalog_name,
        warehouse=src.warehouse, namespace=src.namespace, table=name, catalog_properties=src.catalog_properties,
        timestamp_field=src.timestamp_field, description=f"Benchmark table: {fv.name} and four derived ratios.",
        owner=src.owner)
    wide = FeatureView(
        name=name, entities=[store.get_entity(e) for e in fv.entities], ttl=fv.ttl, source=source, online=True,
        schema=list(fv.entity_columns) + list(fv.features) + [Field(name=n, dtype=Float64) for n in data.WIDE_FEATURES],
        description=f"Benchmark view: the {len(fv.features)} features of {fv.name} and {len(data.WIDE_FEATURES)} "
                    "ratios of them.", owner=fv.owner, tags={"bench": "true"})
    store.apply([source, wide])
    return wide


# --- historical retrieval -------------------------------------------------------------------------------------------
def _entities(spec: dict[str, Any]):
    import pyarrow.parquet as pq

    return pq.read_table(spec["entity_path"]).slice(0, spec["n"]).to_pandas()


def _feature_store(spec: dict[str, Any]):
    from feast import FeatureStore

    from skewless.core.config import FEATURE_REPO

    return FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=Path(spec["yaml"]))


def historical(spec: dict[str, Any]) -> dict[str, Any]:
    """get_historical_features through Feast (``skewless`` or ``stock`` offline store), or the raw ASOF JOIN."""
    result: dict[str, Any] = {}
    entity_df = _entities(spec)
    if spec["engine"] == "raw":
        run = _raw_asof(spec)
    else:
        store = _feature_store(spec)
        refs = [f"{spec['view']}:{f}" for f in spec["features"]]

        def run(df):
            return store.get_historical_features(entity_df=df, features=refs).to_df()

    run(entity_df.head(10))  # warm-up: lazy imports and catalog connections are not what is measured
    with measured(result):
        out = run(entity_df)
    result["rows"] = len(out)
    out.to_parquet(spec["out_parquet"])
    return result


def _raw_asof(spec: dict[str, Any]) -> Callable[[Any], Any]:
    """The limit: DuckDB alone, one ASOF JOIN over the table's Parquet files (listed by pyiceberg), TTL as a CASE."""
    from skewless import lake
    from skewless.core.days import utc_duckdb
    from skewless.feast_ext.iceberg_scan import quote

    table = lake.load_table(spec["table"])
    files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    key, ttl_us = spec["entity"], spec["ttl_us"]
    cols = []
    for f in spec["features"]:
        value = f"f.{quote(f)}"
        if ttl_us:
            value = (f"CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL ({ttl_us}) MICROSECOND "
                     f"THEN {value} END")
        cols.append(f"{value} AS {quote(f)}")
    sql = (f"SELECT e.*, {', '.join(cols)} FROM entity_df e ASOF LEFT JOIN read_parquet({files!r}) f "
           f"ON e.{quote(key)} = f.{quote(key)} AND e.event_timestamp >= f.event_timestamp")

    def run(df):
        con = utc_duckdb()
        con.register("entity_df", df)
        try:
            return con.sql(sql).df()
        finally:
            con.close()

    return run


# --- materialization ------------------------------------------------------------------------------------------------
def materialize(spec: dict[str, Any]) -> dict[str, Any]:
    """FeatureStore.materialize of one view into Redis (``skewless`` engine+store, or ``stock``)."""
    from datetime import datetime, timedelta

    store = _feature_store(spec)
    start, end = datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"])
    # Warm-up on an interval without rows: imports, catalog and Redis connections are not what is measured.
    store.materialize(start_date=start - timedelta(days=30), end_date=start - timedelta(days=29),
                      feature_views=[spec["view"]])
    result: dict[str, Any] = {}
    with measured(result):
        store.materialize(start_date=start, end_date=end, feature_views=[spec["view"]])
    result["rows"] = spec["entities"]
    return result


def _redis(spec: dict[str, Any]):
    import redis

    return redis.Redis(host=spec["redis_host"], port=spec["redis_port"], db=spec["redis_db"])


def ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    """The Redis write ceiling: the same hashes as Feast writes, pre-encoded, sent as pipelined HSETs.

    ``variant`` ``resp``: the whole pipeline's protocol bytes are built before timing, then sent and its replies
    read with the streaming engine's reader (what Redis and one client connection can take). ``redis-py``: the same commands through redis-py's
    pipeline (``execute_command``), 10k per round trip.
    """
    from skewless import lake
    from skewless.core.days import utc_duckdb
    from skewless.feast_ext import redis_format
    from skewless.feast_ext.iceberg_scan import quote

    store = _feature_store(spec)
    fv = store.get_feature_view(spec["view"])
    table = lake.load_table(spec["table"])
    files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    key = spec["entity"]
    con = utc_duckdb()
    latest = con.sql(f"SELECT * FROM read_parquet({files!r}) QUALIFY row_number() OVER "
                     f"(PARTITION BY {quote(key)} ORDER BY event_timestamp DESC) = 1").to_arrow_table()
    from feast.infra.online_stores.helpers import _mmh3

    fields = [f"_ts:{fv.name}".encode()] + [_mmh3(f"{fv.name}:{f.name}") for f in fv.features]
    types = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
    batches = []
    for batch in latest.to_batches(max_chunksize=50_000):
        keys = redis_format.entity_keys(batch, types, store.config.project)
        values = [redis_format.timestamp_protos(batch.column("event_timestamp"))]
        values += [redis_format.value_protos(batch.column(f.name), f.dtype.to_value_type()) for f in fv.features]
        batches.append((keys, values, batch.num_rows))
    result: dict[str, Any] = {"rows": latest.num_rows}
    if spec["variant"] == "cluster":
        return _cluster_ceiling(spec, fields, batches, result)
    client = _redis(spec)
    if spec["variant"] == "resp":
        from skewless.feast_ext.redis_write import RedisPipe

        payloads = [(redis_format.hset_commands(k, fields, v), n) for k, v, n in batches]
        pipe = RedisPipe(client)
        with measured(result):
            for payload, n in payloads:  # one pipeline in flight while the next is sent, as the engine does
                pipe.send(payload, n)
                pipe.read(pipe.pending - n, keep=False)
            pipe.close()
    else:
        commands = []
        for k, v, n in batches:
            cols = [vals.to_pylist() for vals in v]
            for i, kk in enumerate(k.to_pylist()):
                args: list[bytes] = []
                for f, col in zip(fields, cols):
                    args += [f, col[i]]
                commands.append((kk, args))
        del batches, latest
        with measured(result):
            for s in range(0, len(commands), 10_000):
                pipe = client.pipeline(transaction=False)
                for kk, args in commands[s:s + 10_000]:
                    pipe.execute_command("HSET", kk, *args)
                pipe.execute()
    return result


def _cluster_ceiling(spec: dict[str, Any], fields: list[bytes], batches: list, result: dict[str, Any]
                     ) -> dict[str, Any]:
    """The write ceiling of a Redis Cluster: every batch's rows grouped by master (slot map read once) and encoded
    before timing; timed: each master's pipelines sent on a connection of its own, one pipeline in flight per master
    while the next is sent (as the engine does), all masters working at once."""
    import numpy as np
    import pyarrow as pa
    from redis.cluster import ClusterNode, RedisCluster

    from skewless.core.config import parse_redis
    from skewless.feast_ext import redis_format
    from skewless.feast_ext.redis_write import RedisPipe
    from skewless.feast_ext.redis_cluster import SlotRouter

    target = parse_redis(spec["cluster"])
    router = SlotRouter(RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes]))
    payloads = []
    for keys, values, _ in batches:
        node = router.node_of(keys)
        order = pa.array(np.argsort(node, kind="stable"))
        keys, values = keys.take(order), [v.take(order) for v in values]
        start = 0
        for i, n in enumerate(np.bincount(node, minlength=len(router.nodes))):
            if n:
                payloads.append((i, redis_format.hset_commands(
                    keys.slice(start, n), fields, [v.slice(start, n) for v in values]), int(n)))
                start += n
    pipes = [RedisPipe(n.redis_connection) for n in router.nodes]
    with measured(result):
        for i, payload, n in payloads:
            pipes[i].send(payload, n)
            pipes[i].read(pipes[i].pending - n, keep=False)
        for pipe in pipes:
            pipe.close()
    return result


# --- online reads ---------------------------------------------------------------------------------------------------
def _percentiles(samples: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(samples)}


def online(spec: dict[str, Any]) -> dict[str, Any]:
    """Latency of get_online_features (the feature service) against raw HMGETs of the same hashes."""
    import random

    from feast.infra.online_stores.helpers import _mmh3

    from skewless.feast_ext import redis_format

    store = _feature_store(spec)
    service = store.get_feature_service(spec["service"])
    entity = spec["entity"]
    names = spec["entity_names"]
    rng = random.Random(7)
    fv = store.get_feature_view(service.feature_view_projections[0].name)
    fields = [_mmh3(f"{fv.name}:{f.name}") for f in fv.features] + [f"_ts:{fv.name}".encode()]
    import pyarrow as pa

    types = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
    client = _redis(spec)
    out: dict[str, Any] = {}
    for batch in (1, 100):
        feast_t, raw_t = [], []
        for i in range(spec["requests"] + 50):
            rows = [{entity: rng.choice(names)} for _ in range(batch)]
            keys = redis_format.entity_keys(pa.RecordBatch.from_pylist(rows), types, store.config.project).to_pylist()
            t0 = time.perf_counter()
            store.get_online_features(features=service, entity_rows=rows).to_dict()
            t1 = time.perf_counter()
            if batch == 1:
                client.hmget(keys[0], fields)
            else:
                pipe = client.pipeline(transaction=False)
                for k in keys:
                    pipe.hmget(k, fields)
                pipe.execute()
            t2 = time.perf_counter()
            if i >= 50:  # warm-up excluded
                feast_t.append(t1 - t0)
                raw_t.append(t2 - t1)
        out[f"feast_{batch}"] = _percentiles(feast_t)
        out[f"raw_{batch}"] = _percentiles(raw_t)
    return out


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "prepare_seed": prepare_seed,
    "prepare_home": prepare_home,
    "historical": historical,
    "materialize": materialize,
    "ceiling": ceiling,
    "online": online,
    **streaming.TASKS,
}


def main(argv: list[str] | None = None) -> int:
    """Run the task of a spec file and write its result file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m skewless.bench.worker SPEC.json", file=sys.stderr)
        return 2
    spec_path = Path(args[0])
    spec = json.loads(spec_path.read_text())
    task = TASKS.get(spec.get("task", ""))
    if task is None:
        print(f"unknown task {spec.get('task')!r}; one of {', '.join(TASKS)}", file=sys.stderr)
        return 2
    result = task(spec)
    result["task"] = spec["task"]
    result["process_peak_rss_mb"] = _rss_mb()
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
