"""Writing to Redis the way Feast's ``RedisOnlineStore`` does, fast: one connection kept per pipeline user, whole
pre-encoded pipelines (:mod:`skewless.feast_ext.redis_format`) sent at once, Feast's write rule applied (a row is
skipped when the stored ``_ts`` of its entity is newer or equal). Used by the materialization engine
(:mod:`skewless.feast_ext.materialize`), the Redis Cluster writer (:mod:`skewless.feast_ext.redis_cluster`) and the
online reads of :mod:`skewless.feast_ext.ttl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pyarrow as pa
from feast.feature_view import FeatureView
from feast.value_type import ValueType

from skewless.feast_ext import redis_format

try:  # hiredis comes with feast[redis]; without it replies go through redis-py
    import hiredis as _hiredis
except ImportError:  # pragma: no cover
    _hiredis = None

if TYPE_CHECKING:
    from feast.repo_config import RepoConfig


class RedisPipe:
    """One Redis connection carrying back-to-back pipelines: send now, read the replies later, in order.

    Keeping one pipeline in flight lets Redis execute batch ``k`` while the client encodes batch ``k + 1``. Replies
    are parsed by hiredis straight off the socket (one C call per reply, not redis-py's per-reply Python stack,
    which costs more than Redis itself at a million replies); without hiredis, redis-py reads them. Error replies
    are raised once the replies asked for are read; any exception closes the connection (unread replies would
    corrupt its next user).
    """

    def __init__(self, client: Any, connection: Any = None) -> None:
        self.pool = client.connection_pool
        # A connection given by the caller stays the caller's: never released to the pool, only disconnected on error.
        self.owned = connection is None
        self.conn = self.pool.get_connection() if connection is None else connection
        self.sock = getattr(self.conn, "_sock", None)
        self.reader = _hiredis.Reader() if _hiredis is not None else None
        self.pending = 0  # replies sent for and not read yet

    def send(self, payload: bytes, replies: int) -> None:
        """Send protocol bytes holding ``replies`` commands."""
        try:
            self.conn.send_packed_command([payload])
            self.sock = getattr(self.conn, "_sock", None)
        except BaseException:
            self.abort()
            raise
        self.pending += replies

    def read(self, n: int, keep: bool = True) -> list[Any]:
        """The next ``n`` replies (the oldest pending ones); ``keep=False`` only checks them for errors."""
        if n > self.pending:
            raise ValueError(f"{n} replies asked, {self.pending} pending")
        try:
            out = self._read(n, keep)
        except BaseException:
            self.abort()
            raise
        self.pending -= n
        return out

    def _read(self, n: int, keep: bool) -> list[Any]:
        from redis.exceptions import ResponseError

        out: list[Any] = []
        error: Optional[str] = None
        if self.reader is None or self.sock is None:
            for _ in range(n):
                try:
                    reply = self.conn.read_response()
                except ResponseError as e:
                    error = error or str(e)
                    reply = None
                if keep:
                    out.append(reply)
        else:
            gets, feed, recv, got = self.reader.gets, self.reader.feed, self.sock.recv, 0
            while got < n:
                reply = gets()
                if reply is False:
                    # Small reads: hiredis compacts its buffer (a memmove of everything unread) every 1 KB it
                    # consumes, so a big buffer makes reading quadratic.
                    data = recv(16_384)
                    if not data:
                        raise ConnectionError("Redis closed the connection in the middle of a pipeline")
                    feed(data)
                    continue
                got += 1
                if isinstance(reply, _hiredis.ReplyError):  # type: ignore[union-attr]
                    error = error or str(reply)
                if keep:
                    out.append(reply)
        if error is not None:
            raise ResponseError(f"Redis refused a pipelined command: {error}")
        return out

    def close(self) -> None:
        """Read the remaining replies and give the connection back."""
        if self.conn is None:
            return
        self.read(self.pending, keep=False)
        if self.owned:
            self.pool.release(self.conn)
        self.conn = None

    def abort(self) -> None:
        """Drop the connection (after an error)."""
        if self.conn is not None:
            self.conn.disconnect()
            if self.owned:
                self.pool.release(self.conn)
            self.conn = None


def pipeline(client: Any, payload: bytes, replies: int, connection: Any = None) -> list[Any]:
    """Send one pipeline and read all its replies (a :class:`RedisPipe` used once; on ``connection`` if given)."""
    pipe = RedisPipe(client, connection)
    pipe.send(payload, replies)
    out = pipe.read(replies)
    pipe.close()
    return out


class RedisHashWriter:
    """Writes Arrow batches into Redis exactly as Feast's ``RedisOnlineStore.online_write_batch`` would.

    Per batch: ``HGET key _ts:<view>`` for every row (skipped with ``skip_dedup``), then ``HSET`` (and ``EXPIRE``
    with ``key_ttl_seconds``) for the rows whose stored timestamp is missing or older — Feast's rule. Batches are
    overlapped on one connection (:class:`RedisPipe`): a batch's HGETs are sent when it arrives, its timestamps
    are read and its HSETs sent when the next batch arrives (or at :meth:`close`), so replies are read once Redis
    has produced them rather than while it is still working. Keys are unique across batches (``pull_latest``), so
    a batch's reads never depend on the writes still in flight.
    """

    def __init__(self, client: Any, config: "RepoConfig", fv: FeatureView, join_key_types: dict[str, ValueType],
                 ts_column: str) -> None:
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name

        self.pipe = RedisPipe(client)
        self.project = config.project
        self.skip_dedup = bool(config.online_store.skip_dedup)
        self.expire = config.online_store.key_ttl_seconds
        self.join_key_types = join_key_types
        self.ts_column = ts_column
        name = _versioned_fv_name(fv, config)
        self.ts_field = f"_ts:{name}".encode()
        self.features = [(f.name, f.dtype.to_value_type()) for f in fv.features]
        self.fields = [self.ts_field] + [_mmh3(f"{name}:{f}") for f, _ in self.features]
        self.replies_per_row = 2 if self.expire else 1
        self._waiting: Optional[tuple[pa.RecordBatch, pa.BinaryArray, int]] = None  # batch, keys, reply offset
        self._sent = 0  # replies sent so far (offsets into the reply stream)
        self._read = 0  # replies read so far
        self.written = 0
        self.skipped = 0

    def write(self, batch: pa.RecordBatch, keys: Optional[pa.BinaryArray] = None) -> None:
        """Queue one batch (rows with unique entity keys, as ``pull_latest`` returns them); ``keys``: the batch's
        Redis keys when the caller computed them already
        (:class:`~skewless.feast_ext.redis_cluster.ClusterHashWriter`)."""
        if batch.num_rows == 0:
            return
        if keys is None:
            self.check_columns(batch)
            keys = redis_format.entity_keys(batch, self.join_key_types, self.project)
        if self.skip_dedup:
            self._hset(batch, keys)
            self._skip_to(self._sent - 2 * batch.num_rows * self.replies_per_row)  # keep about one batch in flight
            return
        offset = self._send(redis_format.hget_commands(keys, self.ts_field), len(keys))
        if self._waiting is not None:
            self._finish(*self._waiting)
        self._waiting = (batch, keys, offset)

    def check_columns(self, batch: pa.RecordBatch) -> None:
        missing = [c for c in list(self.join_key_types) + [self.ts_column] + [f for f, _ in self.features]
                   if c not in batch.schema.names]
        if missing:
            raise ValueError(f"materialization batch lacks column(s) {missing}; it has {batch.schema.names}")

    def close(self) -> None:
        """Write the last batch, read every reply (raising if Redis refused a write), release the connection."""
        if self._waiting is not None:
            self._finish(*self._waiting)
            self._waiting = None
        self.pipe.close()

    def abort(self) -> None:
        """Drop the connection after an error (written batches stay; a re-run rewrites them identically)."""
        self.pipe.abort()

    # --- internals ------------------------------------------------------------------------------------------------
    def _send(self, payload: bytes, replies: int) -> int:
        offset = self._sent
        self.pipe.send(payload, replies)
        self._sent += replies
        return offset

    def _skip_to(self, offset: int) -> None:
        """Read (and check) the replies before ``offset``."""
        if offset > self._read:
            self.pipe.read(offset - self._read, keep=False)
            self._read = offset

    def _finish(self, batch: pa.RecordBatch, keys: pa.BinaryArray, offset: int) -> None:
        """Read a batch's stored timestamps, keep the newer rows (Feast's rule), send their HSETs."""
        n = len(keys)
        self._skip_to(offset)
        stored = self.pipe.read(n)
        self._read += n
        ts = batch.column(self.ts_column)
        keep = self._newer(stored, ts, redis_format.timestamp_protos(ts))
        if not keep.all():
            self.skipped += int((~keep).sum())
            mask = pa.array(keep)
            batch, keys = batch.filter(mask), keys.filter(mask)
        if batch.num_rows:
            self._hset(batch, keys)

    def _hset(self, batch: pa.RecordBatch, keys: pa.BinaryArray) -> None:
        values = [redis_format.timestamp_protos(batch.column(self.ts_column))]
        values += [redis_format.value_protos(batch.column(f), t) for f, t in self.features]
        self._send(redis_format.hset_commands(keys, self.fields, values, self.expire),
                   batch.num_rows * self.replies_per_row)
        self.written += batch.num_rows

    @staticmethod
    def _newer(stored: list[Any], ts: pa.Array, ts_protos: pa.BinaryArray) -> np.ndarray:
        """Feast's rule: write unless the stored ``_ts`` is non-zero and at or after the row's event time."""
        new_nanos = ts.cast(pa.timestamp("us", tz=ts.type.tz)).cast(pa.int64()).to_numpy() * 1000
        new_bytes = ts_protos.to_pylist()
        keep = np.ones(len(stored), dtype=bool)
        for i, prev in enumerate(stored):
            if prev is None:
                continue
            if prev == new_bytes[i]:
                keep[i] = False  # the same instant is stored already
                continue
            prev_nanos = redis_format.timestamp_nanos(prev)
            if prev_nanos and new_nanos[i] <= prev_nanos:
                keep[i] = False
        return keep
