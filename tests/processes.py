"""Processes a test starts: a free loopback port for a server, and stopping the server's whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``); SIGKILL it if it is still
    running after ``grace_seconds``."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
