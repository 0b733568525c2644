"""The production profile on a Redis Cluster: ``SKEWLESS_REDIS=redis_cluster://h1:p1,h2:p2,h3:p3``.

A real three-master cluster on free loopback ports (``redis-server --cluster-enabled yes`` x3 and
``redis-cli --cluster create``, :class:`skewless.bench.cluster.LocalCluster`), a PostgreSQL database of its own
(dropped afterwards) and a home in tmp. On the shipped sample: materialize, read every entity back through
``get_online_features`` against the Iceberg tables, parity, one predictor request; the keys must be spread over all
masters and be Feast's own (stock Feast's Redis store reads what skewless wrote, and skewless reads what stock Feast
wrote). Then a master is SIGKILLed in the middle of a ``skewless materialize`` (a fault hook in the child process
holds its next write to that master until the test has killed it): the command must fail with one clear line naming
the master and what to do, no traceback; once the master is back (empty, as a restart without persistence leaves
it), a rerun must leave exactly the state of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import date
from types import SimpleNamespace

import pytest

from skewless.core import config

# --- SKEWLESS_REDIS: the forms and the errors (no server needed) --------------------------------------------------


def test_skewless_redis_accepts_one_redis_and_a_cluster():
    one = config.profile({"SKEWLESS_ENV": "production", "SKEWLESS_REDIS": "10.0.0.5:6380,db=3,password=s"})
    assert one.redis_target.redis_type == "redis" and one.redis_target.nodes == (("10.0.0.5", 6380),)
    env = one.feast_env()
    assert (env["SKEWLESS_REDIS_TYPE"], env["SKEWLESS_REDIS_CONNECTION"]) == ("redis", "10.0.0.5:6380,db=3,password=s")

    c = config.profile({"SKEWLESS_ENV": "production",
                        "SKEWLESS_REDIS": "redis_cluster://r1:7000, r2:7001,r3:7002,socket_timeout=2"})
    assert c.redis_target.cluster and c.redis_target.nodes == (("r1", 7000), ("r2", 7001), ("r3", 7002))
    env = c.feast_env()
    assert env["SKEWLESS_REDIS_TYPE"] == "redis_cluster"
    assert env["SKEWLESS_REDIS_CONNECTION"] == "r1:7000,r2:7001,r3:7002,socket_timeout=2"
    # what the profile exported decides again, identically (a child process, `eval "$(skewless env)"`)
    assert config.profile(env).feast_env() == env
    assert config.profile({"SKEWLESS_ENV": "production"}).redis_target.connection_string == "127.0.0.1:6379,db=0"


@pytest.mark.parametrize("value, problem", [
    ("redis://127.0.0.1:6379/0", "'redis://' is not understood"),
    ("127.0.0.1:7000,127.0.0.1:7001", "names 2 servers; one Redis takes one host:port (for a Redis Cluster write "
                                      "redis_cluster://127.0.0.1:7000,127.0.0.1:7001)"),
    ("redis_cluster://", "names no host:port"),
    ("redis_cluster://127.0.0.1:7000,db=2", "a Redis Cluster has only database 0, not db=2"),
    ("redis_cluster://127.0.0.1:7000,,127.0.0.1:7001", "has an empty item"),
    ("localhost", "'localhost' is not host:port"),
    ("redis_cluster://h:0", "'h:0' is not host:port"),
    ("redis_cluster://h:7000,=1", "option '=1' has no name"),
])
def test_malformed_skewless_redis_is_refused_by_name(value, problem):
    with pytest.raises(config.ProfileError, match="SKEWLESS_REDIS=") as e:
        config.profile({"SKEWLESS_ENV": "production", "SKEWLESS_REDIS": value})
    assert problem in str(e.value)


def test_malformed_skewless_redis_is_one_line_on_the_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_"))}
    env.update(SKEWLESS_ENV="production", SKEWLESS_HOME=str(tmp_path), SKEWLESS_REDIS="redis_cluster://r1:x")
    out = subprocess.run([sys.executable, "-m", "skewless.cli", "env"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1
    assert "error: SKEWLESS_REDIS='redis_cluster://r1:x': 'r1:x' is not host:port" in out.stderr
    assert "Traceback" not in out.stderr


# --- a real cluster ---------------------------------------------------------------------------------------------

from reliability.servers import PgDatabase, postgres_available  # noqa: E402
from skewless.bench import cluster as local_cluster  # noqa: E402

needs_servers = [
    pytest.mark.production,
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not running on 127.0.0.1:5432"),
    pytest.mark.skipif(local_cluster.available() is not None, reason=str(local_cluster.available())),
]

FIRST_DAY = date(2026, 8, 15)  # materialized first; the faulted run goes on to the sample's last day


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A three-master cluster, a PostgreSQL database and a home; the sample ingested, built and applied."""
    from test_serving import LAST_DAY, _prepare_lake

    root = tmp_path_factory.mktemp("redis_cluster")
    cl = local_cluster.LocalCluster(root / "cluster").start()
    pg = PgDatabase()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_"))}
    env.update(SKEWLESS_ENV="production", SKEWLESS_HOME=str(root / "home"), SKEWLESS_PG_URL=pg.url,
               SKEWLESS_REDIS=cl.url)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k in list(os.environ):
                if k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_")):
                    mp.delenv(k)
            for k, v in env.items():
                mp.setenv(k, v)
            p = config.profile()
            for k, v in p.feast_env().items():
                mp.setenv(k, v)
            assert p.redis_target.cluster and len(p.redis_target.nodes) == 3
            _prepare_lake(p)
            assert LAST_DAY > FIRST_DAY
            yield SimpleNamespace(cluster=cl, p=p, env=dict(os.environ), root=root)
    finally:
        cl.stop()
        pg.drop()


def _check_online(p, day) -> int:
    """Every entity of both views read back through get_online_features equals the Iceberg rows through ``day``;
    returns the number of rows online."""
    from reliability import deployment

    got = deployment.online_state(p, day, deployment.all_entities(p))
    want = deployment.expected_state(p, day)
    diffs = deployment.differences(got, want)
    assert not diffs, "online store differs from an uninterrupted materialization:\n" + "\n".join(diffs)
    assert deployment.future_rows(got, day) == 0
    return sum(len(s.rows) for s in want.values())


def _check_spread(cl, rows: int) -> dict[int, int]:
    per_node = cl.keys_per_node()
    assert all(n > 0 for n in per_node.values()), f"keys not on every master: {per_node}"
    # one hash per entity per view here (repo and author keys differ); no stray keys anywhere
    assert sum(per_node.values()) == rows, (per_node, rows)
    # the keys are where the cluster's own slot map puts them (no hash tag, Feast's bytes)
    c = cl.client()
    for port in cl.ports:
        for key in cl.node(port).scan_iter(count=1000):
            assert c.get_node_from_key(key).port == port
            break
    return per_node


def _stock_feast_reads_and_writes_the_same_keys(p, cl) -> None:
    """Feast's own RedisOnlineStore (redis_type: redis_cluster) reads what skewless wrote, and skewless reads what
    it writes: the keys and fields are Feast's."""
    from datetime import datetime, timezone

    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.types import Float64, Int64
    from test_serving import KNOWN

    from skewless.ops import feast_ops
    from skewless.feast_ext.ttl import serving_clock

    store = feast_ops.feature_store(p)
    fv = store.get_feature_view("repo_activity")
    names = [f.name for f in fv.features]
    refs = [f"repo_activity:{n}" for n in names]
    stock_cfg = SimpleNamespace(
        project=store.config.project, entity_key_serialization_version=3, registry=store.config.registry,
        online_store=RedisOnlineStoreConfig(redis_type="redis_cluster",
                                            connection_string=p.redis_target.connection_string))
    stock = RedisOnlineStore()

    def key(repo: str) -> EntityKey:
        return EntityKey(join_keys=["repo"], entity_values=[Value(string_val=repo)])

    far = datetime(2100, 1, 1, tzinfo=timezone.utc)  # no TTL on the view; a clock after every row
    with serving_clock(far):
        ours = store.get_online_features(features=refs, entity_rows=[{"repo": r} for r in KNOWN]).to_dict()
    theirs = stock.online_read(stock_cfg, fv, [key(r) for r in KNOWN])
    for i, (ts, values) in enumerate(theirs):
        assert ts is not None and values is not None, f"stock Feast finds no row for {KNOWN[i]}"
        for n in names:
            v = values[n]
            got = getattr(v, v.WhichOneof("val")) if v.WhichOneof("val") else None
            assert got == ours[n][i], (KNOWN[i], n, got, ours[n][i])

    written = f"stock-feast/{uuid.uuid4().hex[:8]}"
    row = {f.name: Value(int64_val=i + 1) if f.dtype == Int64 else Value(double_val=i + 0.5)
           for i, f in enumerate(fv.features)}
    assert {f.dtype for f in fv.features} <= {Int64, Float64}
    stock.online_write_batch(stock_cfg, fv, [(key(written), row, datetime(2026, 8, 1, tzinfo=timezone.utc), None)],
                             None)
    try:
        with serving_clock(far):
            back = feast_ops.feature_store(p).get_online_features(features=refs,
                                                                  entity_rows=[{"repo": written}]).to_dict()
        assert [back[n][0] for n in names] == [i + 1 if f.dtype == Int64 else i + 0.5
                                               for i, f in enumerate(fv.features)]
    finally:
        redis_key = serialize_entity_key(key(written), entity_key_serialization_version=3) + b"skewless"
        assert cl.client().delete(redis_key) == 1


def _one_predictor_request(p) -> None:
    """A v1 request through the predictor's request path (preprocess, predict, postprocess) on the cluster."""
    from serving.predictor import NextWeekCommitsPredictor
    from test_serving import KNOWN, MODEL, SERVING_TIME, UNKNOWN, expected_predictions, register_tiny_model

    from skewless.feast_ext.ttl import serving_clock

    register_tiny_model(p)
    pred = NextWeekCommitsPredictor(MODEL, p=p, feature_log=False)
    assert pred.load(), pred.not_ready_reason

    async def request():
        batch = await pred.preprocess({"instances": [KNOWN[0], UNKNOWN]})
        return await pred.postprocess(await pred.predict(batch))

    with serving_clock(SERVING_TIME):
        body = asyncio.run(request())
    assert body["predictions"][0] == pytest.approx(expected_predictions(p, KNOWN[:1])[0], rel=1e-9)
    assert body["predictions"][1] == {"error": f"no online features for repo '{UNKNOWN}'"}


def _servers(fn):
    for mark in reversed(needs_servers):
        fn = mark(fn)
    return fn


@_servers
def test_cluster_end_to_end(deployed):
    """Materialize, every entity through get_online_features, parity, stock Feast both ways, a predictor request."""
    from skewless.ops import feast_ops, parity
    from skewless.feast_ext import redis_cluster

    p, cl = deployed.p, deployed.cluster
    store = feast_ops.feature_store(p)
    engine = store._get_provider().batch_engine
    writer = engine._writer(store.get_feature_view("repo_activity"), "event_timestamp")
    assert isinstance(writer, redis_cluster.ClusterHashWriter), writer  # the fast path, not Feast's per-row write
    assert len(writer.router.nodes) == 3
    writer.abort()

    results = feast_ops.materialize(FIRST_DAY, p)
    assert {r.feature_view for r in results} == {"repo_activity", "author_activity"}
    reads = []
    with pytest.MonkeyPatch.context() as mp:  # every online read goes through the per-master pipelines
        real = redis_cluster.read_hash_fields
        mp.setattr(redis_cluster, "read_hash_fields", lambda *a: reads.append(len(a[2])) or real(*a))
        rows = _check_online(p, FIRST_DAY)
    assert sum(reads) >= rows > 0
    per_node = _check_spread(cl, rows)
    print("REDIS CLUSTER keys per master:", per_node)

    checked = parity.check(sample=None, p=p)
    assert all(r.ok for r in checked), parity.report(checked)
    assert all(r.entities > 0 for r in checked)

    _stock_feast_reads_and_writes_the_same_keys(p, cl)
    _one_predictor_request(p)


#: The child of the fault test: ``skewless <args>`` whose first HSET packet to the master on FAULT_PORT is held
#: (FAULT_MARKER created, then waited on) until the test has SIGKILLed that master; then the write goes on.
FAULT_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from redis.connection import AbstractConnection

    victim, marker = int(os.environ["FAULT_PORT"]), Path(os.environ["FAULT_MARKER"])
    original, held = AbstractConnection.send_packed_command, []

    def send(self, command, check_health=True):
        data = command if isinstance(command, (bytes, bytearray)) else b"".join(bytes(c) for c in command)
        if int(self.port) == victim and b"HSET" in data and not held:
            held.append(True)
            marker.touch()
            deadline = time.monotonic() + 300
            while marker.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return original(self, command, check_health)

    AbstractConnection.send_packed_command = send
    from skewless.cli import app
    app(sys.argv[1:], prog_name="skewless")
""")


@_servers
def test_master_killed_mid_materialization_then_rerun(deployed):
    from reliability import deployment
    from test_serving import LAST_DAY

    from skewless.ops import feast_ops, parity
    from skewless.feast_ext.redis_cluster import ClusterNodeError

    p, cl = deployed.p, deployed.cluster
    victim = cl.ports[1]
    marker = deployed.root / f"hold-{uuid.uuid4().hex[:6]}"
    env = {**deployed.env, "FAULT_PORT": str(victim), "FAULT_MARKER": str(marker)}
    child = subprocess.Popen([sys.executable, "-c", FAULT_CHILD, "materialize", "--until", LAST_DAY.isoformat()],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert child.poll() is None, f"materialize ended before writing to {victim}: {child.communicate()}"
            assert time.monotonic() < deadline, "materialize never wrote to the victim master"
            time.sleep(0.05)
        cl.kill(victim)
        marker.unlink()
        out, err = child.communicate(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 1, (out, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: Redis Cluster master 127.0.0.1:{victim} failed while materializing "), err
    assert f"redis-cli -h 127.0.0.1 -p {victim} cluster info" in lines[0] and "then rerun" in lines[0], err

    print("REDIS CLUSTER materialize with a killed master:", lines[0])

    # reads name the failing master too (directly, or as the one that left the cluster down)
    repos = deployment.all_entities(p)["repo_activity"]
    with pytest.raises(ClusterNodeError, match=r"Redis Cluster (master 127\.0\.0\.1:\d+ failed|is down)") as e:
        feast_ops.feature_store(p).get_online_features(features=["repo_activity:commits_last_7d"],
                                                       entity_rows=[{"repo": r} for r in repos])
    print("REDIS CLUSTER read with a killed master:", e.value)

    cl.start_node(victim)  # back, EMPTY (no persistence), with its slots
    assert cl.keys_per_node()[victim] == 0
    feast_ops.materialize(LAST_DAY, p)
    rows = _check_online(p, LAST_DAY)
    _check_spread(cl, rows)
    checked = parity.check(sample=None, p=p)
    assert all(r.ok for r in checked), parity.report(checked)


# --- the benchmark's cluster section -------------------------------------------------------------------------------

@pytest.mark.production
@pytest.mark.slow
@pytest.mark.skipif(local_cluster.available() is not None, reason=str(local_cluster.available()))
def test_bench_cluster_section_compares_with_the_same_clusters_ceiling(tmp_path):
    """``skewless bench``'s Redis Cluster section at the quick size: it starts its own cluster, the ceiling and the
    streaming engine leave the same hashes spread over every master, and the report states the ratio. Equality only,
    never timing (the ratio is reported, not asserted)."""
    from dataclasses import asdict

    from skewless.bench import QUICK, report
    from skewless.bench.runner import Bench

    lines: list[str] = []
    # No single-Redis section here: the Redis arguments are not used by the cluster section.
    b = Bench(QUICK, tmp_path / "work", "127.0.0.1", 1, 0, 2, 12_000, 900, lines.append)
    b.results["run"] = {"sizes": asdict(QUICK)}
    b.prepare()
    b.cluster_materialization()
    c = b.results["cluster"]
    entities = b.results["data"]["mat"]["entities"]
    assert c["masters"] == 3 and c["entities"] == entities
    for key in ("ceiling", "skewless"):
        assert [r["outcome"]["ok"] for r in c[key]["runs"]] == [True, True], c[key]
        for r in c[key]["runs"]:
            spread = r["digest"]["keys_per_master"]
            assert sum(spread) == r["digest"]["keys"] == entities and all(n > 0 for n in spread), spread
    assert c["identical"] is True and c["same_as_single_redis"] is None
    s = report.summary(b.results)
    goal = s["goals"]["cluster_materialization"]
    assert goal["share_of_ceiling"] > 0 and goal["masters"] == 3
    text = "\n".join(report.cluster_section(b.results, s))
    assert "## Materialization into a Redis Cluster" in text and "| skewless: StreamingComputeEngine" in text
    assert "Every run left the same cluster state: yes" in text

    skipped = Bench(QUICK, tmp_path / "work", "127.0.0.1", 1, 0, 1, 12_000, 900, lines.append, cluster=False)
    skipped.results["data"] = b.results["data"]
    skipped.cluster_materialization()
    assert skipped.results["cluster"] == {"skipped": "not asked for (--no-cluster)"}


# --- the cluster writer byte for byte against Feast's own, with Feast's write rule ----------------------------------

def _view():
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64, Int64, String
    from feast.value_type import ValueType

    repo = Entity(name="repo", join_keys=["repo"], value_type=ValueType.STRING)
    return FeatureView(name="cluster_check", entities=[repo], ttl=None,
                       schema=[Field(name="repo", dtype=String), Field(name="n", dtype=Int64),
                               Field(name="x", dtype=Float64)],
                       source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"))


def _batch(names: list[str], day: int, seed: int):
    from datetime import datetime, timezone

    import pyarrow as pa

    return pa.RecordBatch.from_pydict({
        "repo": names,
        "n": pa.array([None if i % 17 == 0 else i * seed for i in range(len(names))], pa.int64()),
        "x": pa.array([None if i % 13 == 0 else i / seed for i in range(len(names))], pa.float64()),
        "event_timestamp": pa.array([datetime(2026, 8, day, tzinfo=timezone.utc)] * len(names),
                                    pa.timestamp("us", tz="UTC")),
    })


@pytest.mark.production
@pytest.mark.skipif(local_cluster.available() is not None, reason=str(local_cluster.available()))
@pytest.mark.parametrize("skip_dedup, ttl", [(True, None), (False, None), (False, 3600)],
                         ids=["skip_dedup", "feast_write_rule", "key_ttl"])
def test_cluster_writer_writes_what_feast_writes(tmp_path, skip_dedup, ttl):
    """ClusterHashWriter (batches split by master) against Feast's RedisOnlineStore.online_write_batch on the same
    cluster, under two project names: every hash equal field for field, after a first load, an older batch (Feast's
    rule skips it unless skip_dedup) and a newer one."""
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.utils import _convert_arrow_to_proto

    from skewless.feast_ext import redis_cluster, redis_format

    fv = _view()
    types = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
    names = [f"owner{i}/repo-{i}" for i in range(600)] + ["{tagged}/repo", "a{b}c/x"]  # hash-tag syntax too
    with local_cluster.LocalCluster(tmp_path / "c") as cl:
        store_cfg = RedisOnlineStoreConfig(redis_type="redis_cluster",
                                           connection_string=config.parse_redis(cl.url).connection_string,
                                           skip_dedup=skip_dedup, key_ttl_seconds=ttl)

        def cfg(project: str):
            return SimpleNamespace(project=project, entity_key_serialization_version=3, online_store=store_cfg,
                                   registry=SimpleNamespace(enable_online_feature_view_versioning=False))

        client, stock = cl.client(), RedisOnlineStore()
        for day, seed in ((10, 3), (9, 5), (11, 7)):  # a load, an older batch, a newer one
            batch = _batch(names, day, seed)
            writer = redis_cluster.ClusterHashWriter(client, cfg("ours"), fv, types, "event_timestamp")
            for part in (batch.slice(0, 250), batch.slice(250)):
                writer.write(part)
            writer.close()
            stock.online_write_batch(cfg("theirs"), fv, _convert_arrow_to_proto(batch, fv, types), None)
            ours = redis_format.entity_keys(batch, types, "ours").to_pylist()
            theirs = redis_format.entity_keys(batch, types, "theirs").to_pylist()
            for a, b in zip(ours, theirs):
                assert client.hgetall(a) == client.hgetall(b), (a, b)
                if ttl:
                    assert 0 < client.ttl(a) <= ttl
            spread = cl.keys_per_node()
            assert sum(spread.values()) == 2 * len(names) and all(n > 0 for n in spread.values()), spread
        stored = redis_format.timestamp_nanos(client.hget(ours[0], b"_ts:cluster_check"))
        newest_us = _batch(names, 11, 1).column("event_timestamp")[0].value
        assert stored // 86_400_000_000_000 == newest_us // 86_400_000_000


@pytest.mark.production
@pytest.mark.skipif(local_cluster.available() is not None, reason=str(local_cluster.available()))
def test_reads_follow_a_slot_that_moved_and_name_a_master_that_is_gone(tmp_path):
    """Online reads route by the slot map the client loaded. A slot migrated to another master afterwards (MOVED) is
    followed: the map is reloaded and the read sent once more, with the right values. A master that is gone ends the
    read with ClusterNodeError naming it."""
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    from skewless.feast_ext import redis_cluster, redis_format

    fv = _view()
    types = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
    names = [f"owner{i}/repo-{i}" for i in range(300)]
    with local_cluster.LocalCluster(tmp_path / "c") as cl:
        store_cfg = RedisOnlineStoreConfig(redis_type="redis_cluster",
                                           connection_string=config.parse_redis(cl.url).connection_string,
                                           skip_dedup=True)
        cfg = SimpleNamespace(project="p", entity_key_serialization_version=3, online_store=store_cfg,
                              registry=SimpleNamespace(enable_online_feature_view_versioning=False))
        client = cl.client()
        batch = _batch(names, 10, 3)
        writer = redis_cluster.ClusterHashWriter(client, cfg, fv, types, "event_timestamp")
        writer.write(batch)
        writer.close()
        keys = redis_format.entity_keys(batch, types, "p").to_pylist()
        fields = [b"_ts:cluster_check"]
        commands = [(k, fields) for k in keys]
        owner = SimpleNamespace()
        want = [[client.hget(k, fields[0])] for k in keys]
        assert redis_cluster.read_hash_fields(owner, client, commands) == want

        # migrate the slot of keys[0] (and every key of that slot) to another master, behind the client's back
        slot = int(redis_cluster.key_slots([keys[0]])[0])
        src = client.get_node_from_key(keys[0])
        dst = next(p for p in cl.ports if p != src.port)
        ids = {p: cl.node(p).execute_command("CLUSTER", "MYID").decode() for p in cl.ports}
        a, b = cl.node(src.port), cl.node(dst)
        b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src.port])
        a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
        moving = [k for k in keys if int(redis_cluster.key_slots([k])[0]) == slot]
        a.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *moving)
        for p in cl.ports:
            cl.node(p).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
        assert a.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert client.nodes_manager.get_node_from_slot(slot).port == src.port  # the client's map is stale
        assert redis_cluster.read_hash_fields(owner, client, commands) == want
        assert client.nodes_manager.get_node_from_slot(slot).port == dst

        gone = cl.ports[2]
        cl.kill(gone)
        if any(client.nodes_manager.get_node_from_slot(int(s)).port == gone for s in redis_cluster.key_slots(keys)):
            with pytest.raises(redis_cluster.ClusterNodeError, match=f"master 127.0.0.1:{gone} failed while reading"):
                redis_cluster.read_hash_fields(owner, client, commands)
        else:  # pragma: no cover - 300 keys always reach every master
            pytest.fail("no key on the killed master")
