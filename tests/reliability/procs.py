"""Child processes that run the real ``skewless`` CLI and can be SIGKILLed at any moment.

Importing Feast costs several CPU seconds, so a fresh interpreter per kill would dominate the test time. The
children are forked from a multiprocessing *forkserver* that imported the heavy modules once and holds no
connection, thread or open table: each child starts in milliseconds, sets its own environment, and runs
``skewless <args>`` through the same typer app as the installed command.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Callable

PRELOAD = ["feast", "feast.feature_store", "feast.infra.online_stores.redis", "feast.infra.online_stores.sqlite",
           "feast.infra.registry.sql", "feast.repo_operations", "pyiceberg.catalog.sql", "pyiceberg.table", "duckdb",
           "pandas", "pyarrow.parquet", "redis", "sqlalchemy", "psycopg", "skewless.cli", "skewless.ops.feast_ops",
           "skewless.features", "skewless.lake.ingest", "skewless.feast_ext.ttl", "skewless.feast_ext.home"]

_ctx = None


def context():
    """The forkserver context (started on first use, with :data:`PRELOAD` imported once)."""
    global _ctx
    if _ctx is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _ctx = ctx
    return _ctx


def _cli(args: list[str], env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)
    from skewless.cli import app

    try:
        app(args, standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        os._exit(code)
    os._exit(0)


def _call(fn: Callable, env: dict[str, str], args: tuple) -> None:
    os.environ.clear()
    os.environ.update(env)
    fn(*args)
    os._exit(0)


def start_cli(args: list[str], env: dict[str, str]):
    """Start ``skewless <args>`` in a child process; returns the started ``multiprocessing.Process``."""
    p = context().Process(target=_cli, args=(list(args), dict(env)), daemon=True)
    p.start()
    return p


def start_call(fn: Callable, env: dict[str, str], *args):
    """Start ``fn(*args)`` (a module-level function) in a child process with ``env`` as its environment."""
    p = context().Process(target=_call, args=(fn, dict(env), args), daemon=True)
    p.start()
    return p


def cli(args: list[str], env: dict[str, str], timeout: float = 600) -> int:
    """Run ``skewless <args>`` to completion in a child process; its exit code."""
    p = start_cli(args, env)
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise TimeoutError(f"skewless {' '.join(args)} did not finish in {timeout} s")
    return p.exitcode


def cli_killed(args: list[str], env: dict[str, str], delay: float) -> tuple[bool, float]:
    """Run ``skewless <args>`` and SIGKILL it ``delay`` seconds after start.

    Returns ``(killed, elapsed)``: killed is False when the command had already finished (its exit code must then
    be 0, checked here).
    """
    t0 = time.monotonic()
    p = start_cli(args, env)
    p.join(delay)
    if p.exitcode is None:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert p.exitcode == -signal.SIGKILL
        return True, time.monotonic() - t0
    assert p.exitcode == 0, f"skewless {' '.join(args)} failed with exit code {p.exitcode} before the kill"
    return False, time.monotonic() - t0


def timed_cli(args: list[str], env: dict[str, str]) -> float:
    """Run ``skewless <args>`` to successful completion; the seconds it took."""
    t0 = time.monotonic()
    code = cli(args, env)
    assert code == 0, f"skewless {' '.join(args)} exited {code}"
    return time.monotonic() - t0
