"""The Redis Cluster side of skewless's Redis paths: slot routing, one pipeline per master, errors naming the node.

Selected by Feast's own setting, ``redis_type: redis_cluster`` (``SKEWLESS_REDIS=redis_cluster://h1:p1,h2:p2``, see
:func:`skewless.core.config.parse_redis`). The keys are Feast's, byte for byte (no hash tag is added): a key lives in
slot ``CRC16(key) mod 16384`` (of its ``{...}`` part if it has one, Redis's rule, :func:`redis.crc.key_slot`), on the
master serving that slot. So Feast's stock ``RedisOnlineStore`` with ``redis_type: redis_cluster`` reads what
skewless writes and the other way round (``tests/test_redis_cluster.py`` checks both directions).

* Writes (:class:`ClusterHashWriter`): each batch's keys are encoded column-wise once, their slots computed, the rows
  grouped by master, and every group written by the single-Redis
  :class:`~skewless.feast_ext.redis_write.RedisHashWriter` on a connection of its own to that master: pre-encoded
  pipelines, sent to each master without waiting for the others' replies.
* Reads (:func:`read_hash_fields`): the HMGETs of one call grouped by master, every group sent as one pre-encoded
  pipeline before any reply is read, replies parsed by hiredis and put back in the caller's order; a read that meets
  moved slots reloads the slot map and is sent once more.

A master that fails (connection refused or cut, ``CLUSTERDOWN``) or slots that move (``MOVED``/``ASK`` during a
resharding or failover) end the call with :class:`ClusterNodeError`, which names the master and what to do. Writes
are idempotent: a rerun once the cluster is healthy completes the load (``skewless materialize`` also reloads a
view from the start when a master came back empty, :func:`skewless.ops.feast_ops._online_lost`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from skewless.feast_ext import redis_format
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from feast.feature_view import FeatureView
    from feast.repo_config import RepoConfig
    from feast.value_type import ValueType

SLOTS = 16384
_LOCK = threading.Lock()


class ClusterNodeError(SkewlessError, RuntimeError):
    """A Redis Cluster master failed or the cluster changed under a write or read; the message says what to do."""


def _what_to_do(host: str, port: int | str) -> str:
    return (f"bring that master back (restart it, or promote its replica with CLUSTER FAILOVER) and wait until "
            f"`redis-cli -h {host} -p {port} cluster info` shows cluster_state:ok")


def node_error(node: str, doing: str, cause: BaseException) -> ClusterNodeError:
    """The :class:`ClusterNodeError` for ``cause`` (a redis-py or socket error) on master ``node`` (``host:port``)."""
    host, _, port = node.rpartition(":")
    text = (str(cause) or type(cause).__name__).rstrip(".")
    writing = doing.startswith("materializing")
    then = ("then rerun `skewless materialize`: rows already written are rewritten identically, and a view whose rows "
            "a restarted master lost is reloaded from the start") if writing else "then retry"
    if _moved(text):
        return ClusterNodeError(
            f"Redis Cluster slots moved while {doing} (master {node} answered {text!r}: a resharding or failover is "
            f"under way); wait until `redis-cli -h {host} -p {port} cluster info` shows cluster_state:ok, {then}.")
    if "CLUSTERDOWN" in text:
        return ClusterNodeError(
            f"Redis Cluster is down while {doing} (master {node} answered {text!r}): a master is failing; "
            f"`redis-cli -h {host} -p {port} cluster nodes` lists it (flag fail). Bring it back (restart it, or "
            f"promote its replica with CLUSTER FAILOVER) and wait until `redis-cli -h {host} -p {port} cluster info` "
            f"shows cluster_state:ok, {then}.")
    todo = _what_to_do(host, port)
    return ClusterNodeError(f"Redis Cluster master {node} failed while {doing}: {type(cause).__name__}: {text}. "
                            f"{todo[0].upper()}{todo[1:]}, {then}.")


def _moved(text: str) -> bool:
    """A MOVED/ASK redirection (also inside skewless's "Redis refused a pipelined command: ..." message)."""
    return any(w in ("MOVED", "ASK") for w in text.replace(":", " ").split()[:8])


def _is_redis_error(e: BaseException) -> bool:
    import redis

    return isinstance(e, (redis.RedisError, OSError))


@contextlib.contextmanager
def on_node(node: str, doing: str) -> Iterator[None]:
    """Turn a redis-py or socket error raised inside the block into a :class:`ClusterNodeError` naming ``node``."""
    try:
        yield
    except ClusterNodeError:
        raise
    except Exception as e:
        if _is_redis_error(e):
            raise node_error(node, doing, e) from e
        raise


def cluster_client(store: Any, cfg: Any) -> Any:
    """Feast's ``RedisCluster`` client of the store (built from the connection string on first use)."""
    try:
        return store._get_client(cfg)
    except Exception as e:
        if _is_redis_error(e):
            raise ClusterNodeError(
                f"no Redis Cluster node of {cfg.connection_string!r} answers ({type(e).__name__}: {e}); start the "
                "cluster's masters, or fix SKEWLESS_REDIS (redis_cluster://host1:port1,host2:port2)") from e
        raise


def key_slots(keys: Union[pa.BinaryArray, Sequence[bytes]]) -> np.ndarray:
    """The hash slot of every key (Redis's rule; :func:`redis.crc.key_slot`)."""
    from binascii import crc_hqx

    from redis.crc import key_slot

    values = keys.to_pylist() if isinstance(keys, pa.Array) else keys
    if any(b"{" in k for k in values):  # a hash tag may apply: Redis's full rule, key by key
        return np.fromiter((key_slot(k) for k in values), dtype=np.int64, count=len(values))
    return np.fromiter((crc_hqx(k, 0) for k in values), dtype=np.int64, count=len(values)) & (SLOTS - 1)


class SlotRouter:
    """The masters of a cluster and the master of every slot, as the client saw them when this was built."""

    def __init__(self, client: Any):
        manager = client.nodes_manager
        self.nodes = list(client.get_primaries())
        index = {n.name: i for i, n in enumerate(self.nodes)}
        self.slot_node = np.full(SLOTS, -1, dtype=np.int64)
        for slot, holders in manager.slots_cache.items():
            if holders and holders[0].name in index:
                self.slot_node[slot] = index[holders[0].name]
        uncovered = np.flatnonzero(self.slot_node < 0)
        if len(uncovered):
            raise ClusterNodeError(
                f"{len(uncovered)} of {SLOTS} Redis Cluster slots (first: {uncovered[0]}) have no master; the "
                "cluster is incomplete. Check `redis-cli --cluster check HOST:PORT` and assign or recover them.")

    def node_of(self, keys: Union[pa.BinaryArray, Sequence[bytes]]) -> np.ndarray:
        """Index into :attr:`nodes` of the master of every key."""
        return self.slot_node[key_slots(keys)]


class ClusterHashWriter:
    """:class:`~skewless.feast_ext.redis_write.RedisHashWriter` for a Redis Cluster: rows grouped by master, one
    writer (connection, overlapped pipelines, Feast's write rule) per master; errors name the master."""

    def __init__(self, client: Any, config: "RepoConfig", fv: "FeatureView", join_key_types: dict[str, "ValueType"],
                 ts_column: str) -> None:
        self.router = SlotRouter(client)
        self.args = (config, fv, join_key_types, ts_column)
        self.project = config.project
        self.join_key_types = join_key_types
        self.view = fv.name
        self.writers: list[Optional[Any]] = [None] * len(self.router.nodes)

    def _doing(self) -> str:
        return f"materializing {self.view}"

    def _writer(self, i: int):
        from skewless.feast_ext.redis_write import RedisHashWriter

        w = self.writers[i]
        if w is None:
            with on_node(self.router.nodes[i].name, self._doing()):
                w = self.writers[i] = RedisHashWriter(self.router.nodes[i].redis_connection, *self.args)
        return w

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._writer_any().check_columns(batch)
        keys = redis_format.entity_keys(batch, self.join_key_types, self.project)
        node = self.router.node_of(keys)
        counts = np.bincount(node, minlength=len(self.router.nodes))
        order = pa.array(np.argsort(node, kind="stable"))
        batch, keys = batch.take(order), keys.take(order)
        start = 0
        for i, n in enumerate(counts):
            if n:
                w = self._writer(i)
                with on_node(self.router.nodes[i].name, self._doing()):
                    w.write(batch.slice(start, n), keys.slice(start, n))
                start += n

    def _writer_any(self):
        return next((w for w in self.writers if w is not None), None) or self._writer(0)

    @property
    def written(self) -> int:
        return sum(w.written for w in self.writers if w is not None)

    def close(self) -> None:
        """Finish every master's writes; the first failure aborts the others and is raised."""
        for i, w in enumerate(self.writers):
            if w is None:
                continue
            try:
                with on_node(self.router.nodes[i].name, self._doing()):
                    w.close()
            except BaseException:
                self.abort()
                raise
            self.writers[i] = None

    def abort(self) -> None:
        for w in self.writers:
            if w is not None:
                w.abort()


# --- reads -------------------------------------------------------------------------------------------------------
def _node_connection(owner: Any, node_client: Any):
    """This thread's kept connection to one master (per reading thread and process, like the single-Redis read)."""
    local = owner.__dict__.get("_cluster_reads")
    if local is None:
        with _LOCK:
            local = owner.__dict__.setdefault("_cluster_reads", threading.local())
    held = getattr(local, "held", None)
    if held is None or held[0] != os.getpid():
        held = local.held = (os.getpid(), {})
    conns = held[1]
    entry = conns.get(id(node_client))
    if entry is None or entry[0] is not node_client:
        entry = conns[id(node_client)] = (node_client, node_client.connection_pool.get_connection())
    return entry[1]


class _NodeFailure(Exception):
    def __init__(self, node: str, cause: BaseException):
        super().__init__(node)
        self.node, self.cause = node, cause


def read_hash_fields(owner: Any, client: Any, commands: List[Tuple[bytes, List[Union[str, bytes]]]]
                     ) -> List[List[Optional[bytes]]]:
    """One HMGET reply per ``(key, fields)``, in order: one pre-encoded pipeline per master, all sent before any
    reply is read. Reads are idempotent, so a stale kept connection is retried once on a fresh one, and slots that
    moved (``MOVED``/``ASK``: a resharding or failover) once after reloading the slot map; then a failing master
    raises :class:`ClusterNodeError` naming it."""
    import redis

    for attempt in (1, 2):
        try:
            return _read(owner, client, commands)
        except _NodeFailure as f:
            moved = isinstance(f.cause, redis.ResponseError) and _moved(str(f.cause))
            if moved:
                client.nodes_manager.initialize()  # route by the cluster's new slot map
            if attempt == 1 and (moved or isinstance(f.cause, (redis.ConnectionError, ConnectionError))):
                continue
            raise node_error(f.node, "reading online features", f.cause) from f.cause
    raise AssertionError("unreachable")


def _read(owner: Any, client: Any, commands: List[Tuple[bytes, List[Union[str, bytes]]]]
          ) -> List[List[Optional[bytes]]]:
    from skewless.feast_ext.redis_write import RedisPipe
    from skewless.feast_ext.redis_format import hmget_commands

    manager = client.nodes_manager
    groups: dict[str, tuple[Any, list[int]]] = {}
    for i, slot in enumerate(key_slots([k for k, _ in commands]).tolist()):
        node = manager.get_node_from_slot(slot)
        groups.setdefault(node.name, (node, []))[1].append(i)
    pipes: list[tuple[str, Any, list[int]]] = []
    out: List[Any] = [None] * len(commands)
    name = "?"
    try:
        for name, (node, idx) in groups.items():
            pipe = RedisPipe(node.redis_connection, _node_connection(owner, node.redis_connection))
            pipes.append((name, pipe, idx))
            pipe.send(hmget_commands([commands[i] for i in idx]), len(idx))
        for name, pipe, idx in pipes:
            for i, r in zip(idx, pipe.read(len(idx))):
                out[i] = r
    except Exception as e:
        for _, pipe, _ in pipes:
            pipe.abort()
        if _is_redis_error(e):
            raise _NodeFailure(name, e) from e
        raise
    return out
