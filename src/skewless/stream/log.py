"""The durable, replayable log of commit events between the intake and the stream processor (ADR 0015).

Two implementations of one interface, :class:`EventLog`:

* :class:`SqliteEventLog` (local profile): an append-only SQLite file inside ``SKEWLESS_HOME`` — no server.
* :class:`skewless.stream.nats_log.NatsEventLog` (production): a NATS JetStream stream with a durable pull consumer
  and explicit acknowledgements.

Both give the processor the same guarantees: an event published is durable when :meth:`EventLog.publish` returns;
:meth:`EventLog.fetch` hands out the events not yet acknowledged, each with a sequence number that stays the same
when the event is delivered again (after a crash, before its acknowledgement); an acknowledged event is never
delivered again; a publish retried with the same ``event_id`` is stored once.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from skewless.core.errors import SkewlessError


class EventLogBusy(SkewlessError, RuntimeError):
    """The local log already has its one consumer."""


#: How long one publish or fetch waits for a locked SQLite log before it fails.
SQLITE_BUSY_MS = 30_000


@dataclass(frozen=True)
class Delivered:
    """One event handed to the processor: the log's sequence number (stable across redeliveries) and the event."""

    seq: int
    event: dict[str, Any]


@dataclass(frozen=True)
class History:
    """What :meth:`EventLog.history` returns: the events (``Delivered``, oldest first) and the sequence numbers
    known to be acknowledged. ``first_seq``/``last_seq``: the range the log still holds (events before
    ``first_seq`` were removed by its retention)."""

    events: list[Delivered]
    settled: frozenset[int]
    first_seq: int
    last_seq: int


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def decode(body: bytes) -> dict[str, Any]:
    return json.loads(body)


def subject_token(repo: str) -> str:
    """A NATS subject token naming a repository (``owner/name`` → ``owner~name``; ``.`` and ``~`` are escaped as
    ``~2e`` and ``~7e``): each repository has its own subject, the unit of partitioning."""
    return repo.replace("~", "~7e").replace(".", "~2e").replace("/", "~")


class EventLog(ABC):
    """The interface of an event log (see the module docstring)."""

    #: What the log is, for messages ("SQLite log /path", "JetStream stream X on nats://...").
    where: str = ""

    @abstractmethod
    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Append events (each with a unique ``event_id`` and a ``repo``); durable when this returns."""

    @abstractmethod
    def fetch(self, max_events: int = 10_000, timeout: float = 0.5) -> list[Delivered]:
        """Up to ``max_events`` unacknowledged events, oldest first; ``[]`` when none came within ``timeout`` s."""

    @abstractmethod
    def ack(self, delivered: Sequence[Delivered]) -> None:
        """Acknowledge processed events: they are never delivered again."""

    @abstractmethod
    def pending(self) -> int:
        """Events published and not yet acknowledged."""

    @abstractmethod
    def history(self) -> "History":
        """Every event the log holds, oldest first, with which of them are settled (acknowledged), read without
        consuming anything (no delivery, no acknowledgement, no consumer lock): for the stream/lake
        reconciliation (:mod:`skewless.stream.reconcile`). The settled set is read first, then the events."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteEventLog(EventLog):
    """The local profile's log: an append-only SQLite table (WAL, synchronous=FULL) and a table of acknowledged
    sequence numbers. Any number of publishers, in any processes; ONE consumer: the first :meth:`fetch` takes an
    exclusive lock on ``<log>.consumer.lock`` (released when the process ends, however it ends), and a second
    processor on the same log is refused by name — the local log has no consumer groups (JetStream has)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.where = f"SQLite log {self.path}"
        self._con = sqlite3.connect(self.path, timeout=SQLITE_BUSY_MS / 1000, isolation_level=None,
                                    check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        self._con.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                          "event_id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL, body BLOB NOT NULL)")
        self._con.execute("CREATE TABLE IF NOT EXISTS acked (seq INTEGER PRIMARY KEY)")
        self._consumer_lock: Any = None

    def _take_consumer_lock(self) -> None:
        import fcntl

        if self._consumer_lock is not None:
            return
        handle = open(self.path.with_name(self.path.name + ".consumer.lock"), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise EventLogBusy(f"another stream processor is consuming {self.where}; the local log takes one "
                               "processor (run several on the production profile's JetStream stream)") from None
        self._consumer_lock = handle

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        rows = [(e["event_id"], subject_token(e["repo"]), encode(e)) for e in events]
        with self._tx():
            self._con.executemany("INSERT OR IGNORE INTO events (event_id, subject, body) VALUES (?, ?, ?)", rows)

    def fetch(self, max_events: int = 10_000, timeout: float = 0.5) -> list[Delivered]:
        self._take_consumer_lock()
        deadline = time.monotonic() + timeout
        while True:
            rows = self._con.execute(
                "SELECT seq, body FROM events WHERE seq NOT IN (SELECT seq FROM acked) ORDER BY seq LIMIT ?",
                (int(max_events),)).fetchall()
            if rows or time.monotonic() >= deadline:
                return [Delivered(seq, decode(body)) for seq, body in rows]
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def ack(self, delivered: Sequence[Delivered]) -> None:
        with self._tx():
            self._con.executemany("INSERT OR IGNORE INTO acked (seq) VALUES (?)", [(d.seq,) for d in delivered])

    def pending(self) -> int:
        return self._con.execute(
            "SELECT count(*) FROM events WHERE seq NOT IN (SELECT seq FROM acked)").fetchone()[0]

    def history(self) -> History:
        self._con.execute("BEGIN")  # one read snapshot (WAL): the acked set and the events of the same instant
        try:
            settled = frozenset(s for (s,) in self._con.execute("SELECT seq FROM acked"))
            rows = self._con.execute("SELECT seq, body FROM events ORDER BY seq").fetchall()
        finally:
            self._con.execute("COMMIT")
        events = [Delivered(seq, decode(body)) for seq, body in rows]
        return History(events, settled, events[0].seq if events else 0, events[-1].seq if events else 0)

    def close(self) -> None:
        self._con.close()
        if self._consumer_lock is not None:
            self._consumer_lock.close()  # releases the lock
            self._consumer_lock = None

    def _tx(self):
        con = self._con

        class _Tx:
            def __enter__(self):
                con.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *rest):
                con.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()
