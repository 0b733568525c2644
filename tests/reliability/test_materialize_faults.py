"""Materialization killed or cut off at random points, then rerun: the online store ends as an uninterrupted run.

Production profile on a deployment of its own: a private ``redis-server`` (no persistence: a restart comes back
empty), a PostgreSQL database created and dropped here, and a home in tmp. The sample is ingested and built once;
each trial then materializes one day further (the first trial from scratch) with one fault:

``sigkill``          the ``skewless materialize`` process SIGKILLed in the middle of an HSET pipeline (the packet cut
                     at a random byte);
``client_kill``      its Redis connection dropped mid-pipeline (``CLIENT KILL`` from another connection);
``server_restart``   the redis-server killed and restarted (empty) mid-pipeline;
``record_before``    SIGKILL after the rows are written, before Feast records the materialization in the registry;
``record_after``     SIGKILL right after the first view's materialization is recorded;
``sigkill_timed``    SIGKILL after a random delay within the duration of a clean run;
``restart_between``  the redis-server restarted (empty) after a successful run, before the next one.

Before trial ``LATE_TRIAL`` a batch of late commits (held back from the sample: two days shortly before the first
trial day) is ingested and the tables rebuilt, which restates rows already online: the faulted materialization
and its rerun must replace them (a row of the same event time with new values).

After the fault, ``skewless materialize --until DAY`` is rerun once; then every entity of both views is read
through ``get_online_features`` and compared with the newest row at or before DAY of the Iceberg tables (what an
uninterrupted run loads): no row lost, no value changed, none from DAY + 1 or later.

``SKEWLESS_FAULT_TRIALS`` sets the number of trials (default 5: the first five kinds; 7 or more cycles all).
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from reliability import deployment, faults, procs
from reliability.servers import PgDatabase, RedisServer, postgres_available, production_env
from skewless import features

pytestmark = [pytest.mark.production, pytest.mark.slow,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not running on 127.0.0.1:5432")]

KINDS = ("sigkill", "server_restart", "client_kill", "record_before", "restart_between", "record_after",
         "sigkill_timed")
LAST_DAY = date(2026, 8, 22)
FIRST_DAY = date(2026, 8, 8)
TRIALS = int(os.environ.get("SKEWLESS_FAULT_TRIALS", "5"))
SEED = int(os.environ.get("SKEWLESS_FAULT_SEED", "7"))
LATE_DAYS = (FIRST_DAY - timedelta(days=6), FIRST_DAY - timedelta(days=4))
LATE_TRIAL = 3


@pytest.fixture(scope="module")
def prod(tmp_path_factory, sample_parquet):
    """A production-profile deployment of the sample, built through LAST_DAY and applied, not materialized."""
    root = tmp_path_factory.mktemp("materialize_faults")
    redis = RedisServer(root / "redis").start()
    pg = PgDatabase()
    env = production_env(root / "home", pg, redis)
    t = pq.read_table(sample_parquet)
    late = pc.and_(pc.greater_equal(t["committed_at"], pa.scalar(features.day_start(LATE_DAYS[0]))),
                   pc.less(t["committed_at"], pa.scalar(features.day_start(LATE_DAYS[1]))))
    on_time, held_back = root / "on_time.parquet", root / "late.parquet"
    pq.write_table(t.filter(pc.invert(late)), on_time)
    pq.write_table(t.filter(late), held_back)
    try:
        for args in (["ingest", str(on_time)], ["features", "build", "--until", LAST_DAY.isoformat()], ["apply"]):
            assert procs.cli(args, env) == 0, args
        yield {"env": env, "redis": redis, "root": root, "late": held_back}
    finally:
        redis.stop()
        pg.drop()


def _fault(kind: str, rng: random.Random, root: Path, redis: RedisServer) -> dict:
    fault = {"kind": kind, "nth_write": rng.randint(1, 2), "fraction": rng.uniform(0.05, 0.95),
             "port": redis.port, "marker": str(root / f"marker-{rng.getrandbits(32):08x}")}
    if kind.startswith("record_"):
        fault["nth"] = rng.randint(1, 2)
    return fault


def _restart_on_marker(marker: Path, redis: RedisServer, stop: threading.Event) -> None:
    while not stop.is_set():
        if marker.exists():
            redis.restart()
            marker.unlink()
            return
        time.sleep(0.02)


def _run_faulted(kind: str, day: date, prod: dict, rng: random.Random, clean_seconds: float) -> str:
    """Run one faulted materialization; a short description of what happened to the process."""
    env, redis, root = prod["env"], prod["redis"], prod["root"]
    if kind == "sigkill_timed":
        delay = rng.uniform(0.0, clean_seconds)
        killed, _ = procs.cli_killed(["materialize", "--until", day.isoformat()], env, delay)
        return f"SIGKILL after {delay:.1f}s" if killed else f"finished before the SIGKILL at {delay:.1f}s"
    if kind == "restart_between":
        assert procs.cli(["materialize", "--until", day.isoformat()], env) == 0
        redis.restart()
        return "clean run, then redis-server restarted empty"
    fault = _fault(kind, rng, root, redis)
    stop = threading.Event()
    watcher = None
    if kind == "server_restart":
        watcher = threading.Thread(target=_restart_on_marker, args=(Path(fault["marker"]), redis, stop), daemon=True)
        watcher.start()
    child = procs.start_call(faults.materialize_with_fault, env, day.isoformat(), fault)
    child.join(600)
    stop.set()
    if watcher:
        watcher.join(5)
    assert child.exitcode is not None, "faulted materialize hung"
    detail = f"nth_write={fault['nth_write']} cut={fault['fraction']:.2f}" if "nth_write" in fault and \
        not kind.startswith("record_") else f"record #{fault.get('nth')}"
    return f"{detail}: exit {child.exitcode}"


def test_materialize_survives_kills_and_redis_faults(prod):
    rng = random.Random(SEED)
    env = prod["env"]
    clean_seconds = 10.0
    report = []
    for trial in range(TRIALS):
        kind = KINDS[trial % len(KINDS)]
        day = FIRST_DAY + timedelta(days=trial)
        assert day <= LAST_DAY, "more trials than built days"
        if trial == LATE_TRIAL:
            for args in (["ingest", str(prod["late"])], ["features", "build", "--until", LAST_DAY.isoformat()]):
                assert procs.cli(args, env) == 0, args
            kind += "+restated"
        what = _run_faulted(kind.removesuffix("+restated"), day, prod, rng, clean_seconds)
        clean_seconds = procs.timed_cli(["materialize", "--until", day.isoformat()], env)
        with deployment.exported(env) as p:
            got = deployment.online_state(p, day, deployment.all_entities(p))
            want = deployment.expected_state(p, day)
        diffs = deployment.differences(got, want)
        future = deployment.future_rows(got, day)
        rows = sum(len(s.rows) for s in want.values())
        report.append(f"trial {trial} {kind:<25} {day} {what}; rerun {clean_seconds:.1f}s; "
                      f"{rows} online rows expected, {len(diffs)} differing, {future} from the future")
        print("RELIABILITY materialize:", report[-1])
        assert not diffs, f"trial {trial} ({kind}, {what}): online store differs from an uninterrupted run:\n" + \
            "\n".join(diffs)
        assert future == 0
