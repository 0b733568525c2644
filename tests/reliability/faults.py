"""Fault injection inside a child process running a real ``skewless`` command (see :mod:`procs`).

The hooks sit below Feast, at the redis-py connection (every byte Feast's Redis online store sends goes through
``AbstractConnection.send_packed_command``) and at the Feast registry, so they do not depend on how an online
store lays out its writes. Each function here is the *target* of a child process: it installs one fault, then runs
the command exactly as ``skewless`` does.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_write_fault(kind: str, nth_write: int, fraction: float, marker: str | None, port: int | None) -> None:
    """On the ``nth_write``-th packet that carries HSET commands, inject ``kind``:

    ``sigkill``        send the first ``fraction`` of the packet's bytes (a pipeline cut mid-command), then SIGKILL
                       this process;
    ``client_kill``    from a second connection, CLIENT KILL every other client of the server (our own pipeline's
                       connection included), then let the write go on (redis-py retries or the command fails);
    ``server_restart`` send ``fraction`` of the packet, create ``marker`` and wait until the test removes it (the
                       test kills and restarts the redis-server meanwhile: it comes back empty), then go on.
    """
    import redis
    from redis.connection import AbstractConnection

    original = AbstractConnection.send_packed_command
    state = {"writes": 0}

    def send(self, command, check_health=True):
        data = command if isinstance(command, (bytes, bytearray)) else b"".join(bytes(c) for c in command)
        if b"HSET" not in data:
            return original(self, command, check_health)
        state["writes"] += 1
        if state["writes"] != nth_write:
            return original(self, command, check_health)
        cut = data[: max(1, int(len(data) * fraction))]
        if kind == "sigkill":
            original(self, [cut], check_health)
            _die()
        if kind == "client_kill":
            redis.Redis(host="127.0.0.1", port=port).client_kill_filter(_type="normal", skipme=True)
            return original(self, command, check_health)
        if kind == "server_restart":
            original(self, [cut], check_health)
            Path(marker).touch()
            deadline = time.monotonic() + 120
            while Path(marker).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return original(self, command, check_health)
        raise ValueError(f"unknown write fault {kind!r}")

    AbstractConnection.send_packed_command = send


def _install_record_fault(after: bool, nth: int) -> None:
    """SIGKILL this process at the ``nth`` registry record of a materialization, before (``after=False``: the
    online store holds the rows, the registry does not know) or right after it is recorded."""
    from feast.infra.registry.registry import Registry
    from feast.infra.registry.sql import SqlRegistry

    state = {"n": 0}
    for cls in (Registry, SqlRegistry):
        original = cls.apply_materialization

        def record(self, *args, _original=original, **kwargs):
            state["n"] += 1
            if state["n"] == nth and not after:
                _die()
            out = _original(self, *args, **kwargs)
            if state["n"] == nth and after:
                _die()
            return out

        cls.apply_materialization = record


def materialize_with_fault(until: str, fault: dict) -> None:
    """Child target: install ``fault`` and run ``skewless materialize --until <until>``."""
    kind = fault["kind"]
    if kind in ("sigkill", "client_kill", "server_restart"):
        _install_write_fault(kind, fault["nth_write"], fault.get("fraction", 0.5), fault.get("marker"),
                             fault.get("port"))
    elif kind in ("record_before", "record_after"):
        _install_record_fault(kind == "record_after", fault.get("nth", 1))
    else:
        raise ValueError(f"unknown fault {kind!r}")
    from skewless.cli import app

    app(["materialize", "--until", until], standalone_mode=True)


# --- Iceberg commits (ingest, features build) ---------------------------------------------------------------------

COMMIT_POINTS = ("commit_before", "commit_mid", "commit_after")


def _install_commit_fault(point: str, nth: int) -> None:
    """SIGKILL this process at the ``nth`` Iceberg catalog commit (pyiceberg ``SqlCatalog.commit_table``):

    ``commit_before``  on entering the commit (data files written, no metadata yet);
    ``commit_mid``     after the new metadata file is written, before the catalog row points at it;
    ``commit_after``   right after the catalog committed (the caller never learns it succeeded).
    """
    from pyiceberg.catalog.sql import SqlCatalog

    original_commit = SqlCatalog.commit_table
    original_write = SqlCatalog._write_metadata
    state = {"n": 0, "inside": False}

    def write_metadata(metadata, io, metadata_path):
        original_write(metadata, io, metadata_path)
        if state["inside"] and state["n"] == nth and point == "commit_mid":
            _die()

    def commit_table(self, table, requirements, updates):
        state["n"] += 1
        if state["n"] == nth and point == "commit_before":
            _die()
        state["inside"] = True
        try:
            out = original_commit(self, table, requirements, updates)
        finally:
            state["inside"] = False
        if state["n"] == nth and point == "commit_after":
            _die()
        return out

    SqlCatalog._write_metadata = staticmethod(write_metadata)
    SqlCatalog.commit_table = commit_table


def _install_barrier(directory: str, name: str, parties: int, timeout: float = 120) -> None:
    """Hold this process's first Iceberg commit until ``parties`` processes reached theirs (forces a conflict)."""
    from pyiceberg.catalog.sql import SqlCatalog

    original_commit = SqlCatalog.commit_table
    state = {"waited": False}

    def commit_table(self, table, requirements, updates):
        if not state["waited"]:
            state["waited"] = True
            Path(directory, f"{name}.ready").touch()
            deadline = time.monotonic() + timeout
            while len(list(Path(directory).glob("*.ready"))) < parties and time.monotonic() < deadline:
                time.sleep(0.01)
        return original_commit(self, table, requirements, updates)

    SqlCatalog.commit_table = commit_table


def cli_with_fault(args: list[str], commit_fault: dict | None = None, barrier: dict | None = None) -> None:
    """Child target: install the faults, then run ``skewless <args>`` as the installed command does."""
    if commit_fault:
        _install_commit_fault(commit_fault["point"], commit_fault.get("nth", 1))
    if barrier:
        _install_barrier(barrier["dir"], barrier["name"], barrier["parties"])
    from skewless.cli import app

    app(list(args), standalone_mode=True)
