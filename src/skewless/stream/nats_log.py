"""The production event log: a NATS JetStream stream with one durable pull consumer (ADR 0015).

Design choices, briefly:

* **A sync facade over asyncio.** nats-py is asyncio-only; the intake, the processor and the CLI are synchronous. One
  event loop runs on a private daemon thread and every call submits one coroutine to it
  (:func:`asyncio.run_coroutine_threadsafe`) and waits for it with a deadline. :meth:`NatsEventLog.close` drains
  the connection and stops the loop.
* **One stream, one subject per repository.** The stream ``S`` holds ``skewless.S.commits.>``; an event of repository
  ``owner/name`` goes to ``skewless.S.commits.<subject_token(repo)>`` (the unit of partitioning). File storage,
  limits retention (acknowledging does not delete: the log stays replayable), a 2-minute duplicate window.
* **Exactly-once storage of retried publishes.** Every message carries ``Nats-Msg-Id: <event_id>``: JetStream stores
  a message id once within the duplicate window, so a publish retried after an error or a timeout is not doubled.
* **Throughput.** A publish fires all messages of a chunk and then gathers their PubAcks together
  (``publish_async``): awaiting each ack in turn caps a Python client at a few hundred messages per second.
  Acknowledgements are sent the same way (all ``+ACK`` then one round trip that waits for the server to have
  processed them), so :meth:`NatsEventLog.ack` returns when the acks are applied.
* **Stable sequence numbers.** :class:`~skewless.stream.log.Delivered.seq` is the message's *stream* sequence, the
  same on every redelivery (after ``ack_wait`` without an ack, or to a new processor after a crash).
* **Outages never hang a call.** nats-py reconnects by itself (forever, every ``reconnect_time_wait``). A call waits
  at most ``op_timeout`` seconds for the connection to come back, then raises :class:`EventLogError` naming the
  server; a publish whose PubAcks do not all arrive in time raises too (retrying it is safe: see the message id).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import wait as futures_wait
from typing import Any, Awaitable, Sequence, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType,
                         StreamConfig)

from skewless.core.errors import SkewlessError
from skewless.stream.log import Delivered, EventLog, History, decode, encode, subject_token

T = TypeVar("T")

#: Messages whose PubAcks are awaited together (and the ceiling of nats-py's own in-flight publish_async window).
PUBLISH_CHUNK = 4_000
#: Messages asked for in one pull request.
FETCH_CHUNK = 5_000
#: JetStream's deduplication window on ``Nats-Msg-Id`` (seconds).
DUPLICATE_WINDOW = 120.0
#: Unacknowledged messages the consumer may have out at once (beyond it the server stops delivering).
MAX_ACK_PENDING = 100_000


class EventLogError(SkewlessError, RuntimeError):
    """The event log's server cannot be reached or did not confirm an operation."""


def commits_subject(stream: str, repo: str) -> str:
    """The subject of repository ``repo``'s commit events in stream ``stream``."""
    return f"skewless.{stream}.commits.{subject_token(repo)}"


class NatsEventLog(EventLog):
    """:class:`~skewless.stream.log.EventLog` on a JetStream stream with a durable pull consumer (explicit acks).

    Connects, and creates the stream and the consumer (idempotently), on first use. Thread-safe: calls are
    serialised on the private event loop."""

    def __init__(self, url: str, stream: str, durable: str = "skewless-processor", ack_wait: float = 30.0,
                 connect_timeout: float = 5.0, *, op_timeout: float = 15.0, reconnect_time_wait: float = 0.5):
        self.url = url
        self.stream = stream
        self.durable = durable
        self.ack_wait = float(ack_wait)
        self.connect_timeout = float(connect_timeout)
        #: The longest any one call waits (for a reconnect, for PubAcks, for the server to confirm acks).
        self.op_timeout = float(op_timeout)
        self.reconnect_time_wait = float(reconnect_time_wait)
        self.where = f"JetStream stream {stream} on {url}"
        self.filter = f"skewless.{stream}.commits.>"
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._last_error: BaseException | None = None
        #: Delivered, not yet acknowledged messages by stream sequence (a redelivery replaces the older Msg).
        self._unacked: dict[int, Msg] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"nats-log-{stream}", daemon=True)
        self._thread.start()

    # --- the sync API ------------------------------------------------------------------------------------------
    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        if events:
            self._call(self._publish(list(events)), self.op_timeout * (1 + len(events) // PUBLISH_CHUNK), "publish")

    def fetch(self, max_events: int = 10_000, timeout: float = 0.5) -> list[Delivered]:
        if max_events < 1:
            return []
        return self._call(self._fetch(int(max_events), float(timeout)), timeout + self.op_timeout + 5, "fetch")

    def ack(self, delivered: Sequence[Delivered]) -> None:
        if delivered:
            self._call(self._ack([d.seq for d in delivered], final=True), self.op_timeout + 5, "ack")

    def in_progress(self, delivered: Sequence[Delivered]) -> None:
        """Tell the server these events are still being worked on: their ``ack_wait`` starts again."""
        if delivered:
            self._call(self._ack([d.seq for d in delivered], final=False), self.op_timeout + 5, "in-progress")

    def pending(self) -> int:
        return self._call(self._pending(), self.op_timeout + 5, "pending")

    def history(self) -> History:
        """The durable consumer's ack floor (every sequence up to it is acknowledged; above it JetStream does not
        say which are, so they count as unsettled), then every message of the stream through an ephemeral consumer
        without acknowledgements, deleted afterwards."""
        return self._call(self._history(), self.op_timeout * 4 + 60, "history")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._nc is not None and not self._nc.is_closed:
                fut = asyncio.run_coroutine_threadsafe(self._drain(), self._loop)
                try:
                    fut.result(timeout=self.op_timeout)
                except Exception:  # a dead server: nothing left to drain
                    fut.cancel()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _call(self, coro: Awaitable[T], timeout: float, what: str) -> T:
        with self._lock:
            if self._closed:
                coro.close()  # type: ignore[attr-defined]
                raise EventLogError(f"{what} on {self.where}: the log is closed")
            fut = asyncio.run_coroutine_threadsafe(self._ready_then(coro), self._loop)
            # Wait, then look: since 3.11 concurrent.futures.TimeoutError IS the builtin TimeoutError, which nats-py
            # and asyncio raise inside the coroutine too; `except TimeoutError` around result() would mix the two.
            done, _ = futures_wait([fut], timeout=timeout)
            if not done:
                fut.cancel()
                raise EventLogError(f"{what} on {self.where} did not complete in {timeout:.0f} s: is the NATS "
                                    f"server up and JetStream enabled (nats-server -js)?")
            try:
                return fut.result()
            except EventLogError:
                raise
            except (nats.errors.Error, nats.js.errors.Error, OSError, asyncio.TimeoutError) as e:
                raise EventLogError(f"{what} on {self.where} failed: {type(e).__name__}: {e}. "
                                    f"Check that the NATS server is up with JetStream (nats-server -js); a "
                                    f"publish may be retried: an event_id is stored once") from e

    async def _ready_then(self, coro: Awaitable[T]) -> T:
        try:
            await self._ensure_ready()
        except BaseException:
            coro.close()  # type: ignore[attr-defined]
            raise
        return await coro

    async def _ensure_ready(self) -> None:
        if self._nc is None:
            await self._connect()
        await self._wait_connected()
        if self._sub is None:
            await self._declare()

    async def _connect(self) -> None:
        async def on_error(e: Exception) -> None:
            self._last_error = e

        async def quiet(*_: Any) -> None:
            pass

        try:
            # allow_reconnect makes nats-py retry the first connect forever too: the deadline bounds it.
            nc = await asyncio.wait_for(
                nats.connect(self.url, connect_timeout=self.connect_timeout, allow_reconnect=True,
                             max_reconnect_attempts=-1, reconnect_time_wait=self.reconnect_time_wait,
                             error_cb=on_error, disconnected_cb=quiet, reconnected_cb=quiet, closed_cb=quiet,
                             name=f"skewless {self.durable}"),
                timeout=self.connect_timeout)
        except (asyncio.TimeoutError, OSError, nats.errors.Error) as e:
            cause = self._last_error or e
            raise EventLogError(f"cannot connect to the NATS server of {self.where} within {self.connect_timeout:g} s"
                                f" ({type(cause).__name__}: {cause}): start it with JetStream "
                                f"(nats-server -js) or set SKEWLESS_NATS") from None
        self._nc = nc
        self._js = nc.jetstream(timeout=self.op_timeout, publish_async_max_pending=2 * PUBLISH_CHUNK)

    async def _wait_connected(self) -> None:
        nc = self._nc
        if nc.is_closed:
            raise EventLogError(f"the connection to {self.where} is closed")
        deadline = time.monotonic() + self.op_timeout
        while not nc.is_connected:
            if time.monotonic() >= deadline:
                cause = f" (last error: {self._last_error})" if self._last_error else ""
                raise EventLogError(f"the NATS server of {self.where} is unreachable: no reconnect within "
                                    f"{self.op_timeout:g} s{cause}. Start it again (same -sd store dir: nothing "
                                    f"acknowledged is lost) and retry")
            await asyncio.sleep(0.05)

    async def _declare(self) -> None:
        """Create or update the stream and the durable consumer, then bind the pull subscription."""
        js = self._js
        want = StreamConfig(name=self.stream, subjects=[self.filter], storage=StorageType.FILE,
                            retention=RetentionPolicy.LIMITS, duplicate_window=DUPLICATE_WINDOW)
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(want)
            except nats.js.errors.BadRequestError:  # created meanwhile by another client
                info = await js.stream_info(self.stream)
                await self._update_stream(info, want)
        else:
            await self._update_stream(info, want)
        consumer = ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
                                  deliver_policy=DeliverPolicy.ALL, max_ack_pending=MAX_ACK_PENDING,
                                  max_deliver=-1, filter_subject=self.filter)
        try:
            # Creates the consumer, or updates an existing one's editable fields (ack_wait, max_ack_pending).
            await js.add_consumer(self.stream, consumer)
        except nats.js.errors.BadRequestError as e:
            raise EventLogError(f"the consumer {self.durable} of {self.where} exists with a configuration that "
                                f"cannot be changed in place ({e}): delete it (nats consumer rm) or use another "
                                f"durable name") from None
        self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    async def _update_stream(self, info: Any, want: StreamConfig) -> None:
        have = info.config
        if have.storage not in (None, want.storage):
            raise EventLogError(f"stream {self.stream} on {self.url} uses {have.storage} storage, not file storage: "
                                f"it cannot be changed in place (back it up and recreate it)")
        if (sorted(have.subjects or []) != [self.filter] or have.retention != want.retention
                or abs((have.duplicate_window or 0) - DUPLICATE_WINDOW) > 1e-6):
            have.subjects = [self.filter]
            have.retention = want.retention
            have.duplicate_window = DUPLICATE_WINDOW
            await self._js.update_stream(have)

    async def _publish(self, events: list[dict[str, Any]]) -> None:
        js = self._js
        for start in range(0, len(events), PUBLISH_CHUNK):
            chunk = events[start:start + PUBLISH_CHUNK]
            futures = []
            # No wait_stall: with one, nats-py wraps each publish in a task, the loop turns between messages and
            # the flusher sends them one syscall each (~2,000/s). Without it nothing yields until the gather, and
            # the chunk leaves in a few large writes. The window (2 chunks) never stalls: a chunk is gathered first.
            for e in chunk:
                futures.append(await js.publish_async(
                    commits_subject(self.stream, e["repo"]), encode(e),
                    headers={"Nats-Msg-Id": str(e["event_id"])}))
            try:
                await asyncio.wait_for(asyncio.gather(*futures), timeout=self.op_timeout)
            except asyncio.TimeoutError:
                for f in futures:
                    f.cancel()
                raise EventLogError(f"publish to {self.where}: the server did not acknowledge "
                                    f"{sum(not f.done() or f.cancelled() for f in futures)} of {len(chunk)} events "
                                    f"within {self.op_timeout:g} s (connected: {self._nc.is_connected}). Retry "
                                    f"the publish: events already stored are not stored twice") from None
            except nats.js.errors.NoStreamResponseError:
                raise EventLogError(f"publish to {self.where}: no stream takes subject {self.filter} (deleted while "
                                    f"in use?); reopen the log to recreate it") from None

    async def _fetch(self, max_events: int, timeout: float) -> list[Delivered]:
        got: dict[int, Msg] = {}
        deadline = time.monotonic() + timeout
        first = True
        while len(got) < max_events:
            want = min(FETCH_CHUNK, max_events - len(got))
            # The first pull waits up to `timeout` for anything; later pulls only take what is there already.
            wait = max(0.05, deadline - time.monotonic()) if first else 0.05
            try:
                msgs = await self._sub.fetch(want, timeout=wait)
            except asyncio.TimeoutError:  # nats-py raises both its own and asyncio's: nothing came
                msgs = []
            first = False
            for m in msgs:
                got[m.metadata.sequence.stream] = m
            if len(msgs) < want:
                break
        self._unacked.update(got)
        return [Delivered(seq, decode(got[seq].data)) for seq in sorted(got)]

    async def _ack(self, seqs: list[int], final: bool) -> None:
        msgs = [m for m in (self._unacked.get(s) for s in seqs) if m is not None]
        # Sequence numbers this instance did not deliver (or already acknowledged) are skipped: the worst outcome is
        # a redelivery, never a loss.
        if not msgs:
            return
        for m in msgs[:-1] if final else msgs:
            await (m.ack() if final else m.in_progress())
        if final:
            # A request for the last one: the server answers once it has applied it, and so all the earlier ones.
            try:
                await msgs[-1].ack_sync(timeout=self.op_timeout)
            except asyncio.TimeoutError:
                raise EventLogError(f"ack on {self.where}: the server did not confirm {len(msgs)} acks within "
                                    f"{self.op_timeout:g} s; unconfirmed events will be delivered again") from None
            for s in seqs:
                self._unacked.pop(s, None)
        else:
            await self._nc.flush(timeout=self.op_timeout)

    async def _pending(self) -> int:
        info = await self._js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def _history(self) -> History:
        info = await self._js.consumer_info(self.stream, self.durable)
        floor = int(info.ack_floor.stream_seq) if info.ack_floor else 0
        state = (await self._js.stream_info(self.stream)).state
        first, last = int(state.first_seq or 0), int(state.last_seq or 0)
        events: list[Delivered] = []
        if state.messages:
            config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                    inactive_threshold=60.0)
            sub = await self._js.pull_subscribe(self.filter, stream=self.stream, config=config)
            name = config.name
            try:
                seen = 0
                while seen < last:
                    try:
                        msgs = await sub.fetch(FETCH_CHUNK, timeout=self.op_timeout)
                    except asyncio.TimeoutError:
                        break  # nothing more within the deadline: what was there has been read
                    for m in msgs:
                        seq = m.metadata.sequence.stream
                        if seq <= last:
                            events.append(Delivered(seq, decode(m.data)))
                        seen = max(seen, seq)
            finally:
                await sub.unsubscribe()
                try:
                    await self._js.delete_consumer(self.stream, name)
                except nats.js.errors.NotFoundError:
                    pass
        settled = frozenset(e.seq for e in events if e.seq <= floor)
        return History(sorted(events, key=lambda d: d.seq), settled, first, last)

    async def _drain(self) -> None:
        # close(), not drain(): drain waits for the pull subscription's queue to empty, and the status messages
        # (404/408) of finished pulls stay in it for ever. Nothing is in flight here: every publish and ack
        # was confirmed before its call returned; close() still flushes what is buffered.
        await self._nc.close()
