"""Throwaway servers and deployments for fault tests: a private redis-server, a private PostgreSQL database.

Every server or database here is created by the test that uses it and removed afterwards; the machine's shared
Redis (6379) and PostgreSQL cluster are never stopped or flushed (PostgreSQL only gets CREATE/DROP DATABASE of a
uniquely named database).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnServer(ABC):
    """A server process this test started (only ever that process is killed)."""

    proc: subprocess.Popen | None = None

    @abstractmethod
    def start(self) -> "OwnServer":
        """Start the server process on its own port and wait until it answers."""

    def kill(self) -> None:
        """SIGKILL our own server (only the process we started)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()


class RedisServer(OwnServer):
    """A redis-server of our own on a free port: no persistence, so a restart comes back EMPTY."""

    def __init__(self, workdir: Path):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port},db=0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=5)

    def start(self) -> "RedisServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return self
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited with {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)



@dataclass
class PgDatabase:
    """A uniquely named database on the shared PostgreSQL server, dropped by :meth:`drop`."""

    name: str = field(default_factory=lambda: f"skewless_rel_{uuid.uuid4().hex[:10]}")

    @property
    def url(self) -> str:
        return self.url_via(5432)

    def url_via(self, port: int) -> str:
        """The database's URL through another port (a :class:`TcpProxy` in front of PostgreSQL)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{self.name}"

    def drop(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        engine.dispose()


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def base_env() -> dict[str, str]:
    """The current environment without any SKEWLESS_/FEAST_ variable (each test sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_"))}


def local_env(home: Path) -> dict[str, str]:
    env = base_env()
    env.update(SKEWLESS_ENV="local", SKEWLESS_HOME=str(home),
               SKEWLESS_PG_URL="postgresql+psycopg://nobody@127.0.0.1:1/none", SKEWLESS_REDIS="127.0.0.1:1")
    return env


def production_env(home: Path, pg: PgDatabase, redis: RedisServer) -> dict[str, str]:
    env = base_env()
    env.update(SKEWLESS_ENV="production", SKEWLESS_HOME=str(home), SKEWLESS_PG_URL=pg.url,
               SKEWLESS_REDIS=redis.connection_string)
    return env


class TcpProxy:
    """A TCP forwarder of our own in front of a server (PostgreSQL here): stopping it is an outage of that server
    for every client connected through it, without touching the server itself."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the other thread
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


NATS_SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists()
                                               else None)


class NatsServer(OwnServer):
    """A nats-server of our own with JetStream on a free port and its own store directory: a restart keeps the
    streams (file storage), as a production broker's restart does."""

    def __init__(self, workdir: Path):
        if NATS_SERVER is None:
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        assert NATS_SERVER is not None
        self.proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                      "-sd", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server on port {self.port} did not start") from None
                time.sleep(0.05)
