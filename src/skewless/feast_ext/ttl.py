"""Online stores whose reads honour a feature view's TTL exactly as the offline point-in-time join does.

Feast's offline retrieval returns null for a view when the newest row at or before the entity timestamp T is older
than ``T - ttl``; its online stores return whatever they hold, however old (feast-dev/feast issue 6821). A model
trained on the offline values therefore sees null for an expired entity while the serving path feeds it a stale
number: train/serve skew. The classes here close the gap through Feast's own extension point, the online store
class named in ``feature_store*.yaml``:

* :class:`TtlRedisOnlineStore` (production: ``type: skewless.feast_ext.ttl.TtlRedisOnlineStore``) and
  :class:`TtlSqliteOnlineStore`; the local profile's ``skewless.feast_ext.home.HomeSqliteOnlineStore`` inherits
  the same behaviour.
* Rule (Feast's offline rule, ``feast/infra/offline_stores/ibis.py``): a row with event time ``e`` is served at
  time ``now`` iff ``ttl`` is 0/None or ``e + ttl >= now``. An expired row is returned as "not found" (every
  feature null) but keeps its event timestamp, so ``to_dict(include_event_timestamps=True)`` still shows how old
  the held value is (what freshness monitoring reads).
* ``now`` is the serving time: the wall clock (UTC). :func:`serving_clock` pins it for a block of code, process
  wide — for tests (a frozen clock) and for replays of a past day (backtests, demos, the parity check as of the
  materialized day).

A row whose event time is after ``now`` (only possible when ``now`` is pinned before the materialized day) is
served as held: the online store keeps only the newest row, so it cannot answer for an earlier time.

The same classes answer ``get_online_features`` with a
:class:`~skewless.feast_ext.online_response.ColumnarOnlineResponse` (the same values, a cheaper ``to_dict``).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from typing import List, Literal, Optional, Sequence, Tuple, Union

from feast.feature_view import FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from skewless.feast_ext.clock import serving_clock, serving_now, wall_clock  # noqa: F401  (the serving clock's home before)
from skewless.feast_ext.live import LiveReadMixin
from skewless.feast_ext.online_response import ColumnarOnlineResponse

Row = Tuple[Optional[datetime], Optional[dict]]
_READS_LOCK = threading.Lock()



def is_expired(event_ts: Optional[datetime], ttl: Optional[timedelta], now: datetime) -> bool:
    """True when a row stamped ``event_ts`` is outside ``ttl`` at ``now`` (Feast's offline rule; ttl 0 = none)."""
    if event_ts is None or not ttl or ttl <= timedelta(0):
        return False
    if event_ts.tzinfo is None:  # Feast's stores hand back naive UTC in places
        event_ts = event_ts.replace(tzinfo=timezone.utc)
    return event_ts + ttl < now


def drop_expired(rows: Sequence[Row], table: FeatureView, now: Optional[datetime] = None) -> List[Row]:
    """The rows of one ``online_read``, with the values of expired rows removed (their event time kept)."""
    ttl = getattr(table, "ttl", None)
    if not ttl:
        return list(rows)
    now = now or serving_now()
    return [(ts, None) if values is not None and is_expired(ts, ttl, now) else (ts, values) for ts, values in rows]


class TtlOnlineReadMixin:
    """Mixin for a Feast online store: every read drops the values of rows older than the view's TTL.

    Put it before the store class in the bases. Reads are routed through ``online_read``/``online_read_async``
    (Feast's generic per-view path), so a store's batched fast path cannot bypass the rule.
    """

    def online_read(self, config: RepoConfig, table: FeatureView, entity_keys: List[EntityKeyProto],
                    requested_features: Optional[List[str]] = None) -> List[Tuple[Optional[datetime],
                                                                             Optional[dict[str, ValueProto]]]]:
        rows = super().online_read(config, table, entity_keys, requested_features)  # type: ignore[misc]
        return drop_expired(rows, table)

    async def online_read_async(self, config: RepoConfig, table: FeatureView, entity_keys: List[EntityKeyProto],
                                requested_features: Optional[List[str]] = None) -> List[
            Tuple[Optional[datetime], Optional[dict[str, ValueProto]]]]:
        rows = await super().online_read_async(config, table, entity_keys, requested_features)  # type: ignore[misc]
        return drop_expired(rows, table)

    def get_online_features(self, *args, **kwargs) -> ColumnarOnlineResponse:
        """Feast's read, answered as a :class:`ColumnarOnlineResponse` (same values, cheaper ``to_dict``)."""
        return ColumnarOnlineResponse.of(super().get_online_features(*args, **kwargs))  # type: ignore[misc]

    async def get_online_features_async(self, *args, **kwargs) -> ColumnarOnlineResponse:
        return ColumnarOnlineResponse.of(
            await super().get_online_features_async(*args, **kwargs))  # type: ignore[misc]

    def _read_features_per_fv(self, *args, **kwargs) -> None:
        OnlineStore._read_features_per_fv(self, *args, **kwargs)  # type: ignore[arg-type]

    async def _read_features_per_fv_async(self, *args, **kwargs) -> None:
        await OnlineStore._read_features_per_fv_async(self, *args, **kwargs)  # type: ignore[arg-type]


class TtlRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online store config, selecting :class:`TtlRedisOnlineStore`."""

    type: Literal["skewless.feast_ext.ttl.TtlRedisOnlineStore"] = "skewless.feast_ext.ttl.TtlRedisOnlineStore"


class TtlRedisOnlineStore(LiveReadMixin, TtlOnlineReadMixin, RedisOnlineStore):
    """Feast's Redis online store; reads honour the view's TTL (see the module docstring).

    Reads send their HMGETs as one pre-encoded pipeline whose replies hiredis parses off the socket
    (:func:`skewless.feast_ext.redis_write.pipeline`, the materialization engine's connection handling) instead of
    redis-py's per-command pipeline, on a connection each reading thread keeps; the replies are the same lists of
    bytes/None. In a Redis Cluster the HMGETs are grouped by master, one pipeline each
    (:mod:`skewless.feast_ext.redis_cluster`). Sentinel, the GLIDE client and RESP3 connections keep Feast's read.
    """

    def _read_hash_fields(self, config: RepoConfig, commands: List[Tuple[bytes, List[Union[str, bytes]]]]
                          ) -> List[List[Optional[bytes]]]:
        from feast.infra.online_stores.redis import RedisClient, RedisType

        store = config.online_store
        if store.redis_type == RedisType.redis_cluster:
            return self._read_cluster_hash_fields(config, commands)
        client = self._get_client(store)
        if (store.redis_type != RedisType.redis or store.client != RedisClient.redis
                or client.connection_pool.connection_kwargs.get("protocol") not in (None, 2, "2")):
            return super()._read_hash_fields(config, commands)
        if not commands:
            return []
        import redis

        from skewless.feast_ext.redis_write import pipeline
        from skewless.feast_ext.redis_format import hmget_commands

        payload, conn = hmget_commands(commands), self._read_connection(client)
        try:
            return pipeline(client, payload, len(commands), conn)
        except (redis.ConnectionError, ConnectionError):
            # The held connection went stale (Redis restarted or dropped it): reads are idempotent, so once more on a
            # fresh connection, as the pool's checkout check would have done. Timeouts (redis.TimeoutError, socket
            # timeouts) are not ConnectionErrors and are not retried.
            return pipeline(client, payload, len(commands), conn)

    def _read_cluster_hash_fields(self, config: RepoConfig, commands: List[Tuple[bytes, List[Union[str, bytes]]]]
                                  ) -> List[List[Optional[bytes]]]:
        """Redis Cluster: the same pre-encoded HMGETs, one pipeline per master
        (:func:`skewless.feast_ext.redis_cluster.read_hash_fields`); the GLIDE client and RESP3 keep Feast's read."""
        from feast.infra.online_stores.redis import RedisClient

        from skewless.feast_ext import redis_cluster

        store = config.online_store
        client = redis_cluster.cluster_client(self, store)
        if (store.client != RedisClient.redis
                or client.nodes_manager.connection_kwargs.get("protocol") not in (None, 2, "2")):
            return super()._read_hash_fields(config, commands)
        if not commands:
            return []
        return redis_cluster.read_hash_fields(self, client, commands)

    def _read_connection(self, client):
        """This thread's read connection: taken from the client's pool once per thread (and process) and kept, which
        spares every read the pool's checkout health check and release. A failed read disconnects it; the next read
        reconnects it."""
        local = self.__dict__.get("_reads")
        if local is None:
            with _READS_LOCK:
                local = self.__dict__.setdefault("_reads", threading.local())
        held = getattr(local, "held", None)
        if held is None or held[0] != os.getpid() or held[1] is not client:
            held = local.held = (os.getpid(), client, client.connection_pool.get_connection())
        return held[2]


class TtlSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite online store config, selecting :class:`TtlSqliteOnlineStore`."""

    type: Literal["skewless.feast_ext.ttl.TtlSqliteOnlineStore"] = "skewless.feast_ext.ttl.TtlSqliteOnlineStore"


class TtlSqliteOnlineStore(TtlOnlineReadMixin, SqliteOnlineStore):
    """Feast's SQLite online store; reads honour the view's TTL (see the module docstring)."""
