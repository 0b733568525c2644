"""``ingest`` and ``features build`` killed mid-write, and run concurrently: the Iceberg tables stay valid.

Local profile (Iceberg SqlCatalog on SQLite, the embedded default). Each command runs as the real ``skewless``
CLI in a child process (:mod:`procs`) and is SIGKILLed either after a random delay or at an exact point of the
Iceberg commit (entering it, between the metadata file and the catalog row, right after it). After every kill:
the table loads, a scan works, and its content is exactly the content before the command or exactly the content
the rerun ends with (all or nothing). The rerun completes, and at the end every table equals a clean run of the
same data in another home. Concurrent writers are forced to conflict by holding their first commit until all of
them reached it.

``SKEWLESS_LAKE_TRIALS`` sets the number of killed runs per command (default 3).
"""

from __future__ import annotations

import os
import random
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from reliability import deployment, faults, procs
from reliability.servers import local_env
from skewless import features, lake
from skewless.core.config import COMMITS_TABLE

pytestmark = pytest.mark.slow

LAST_DAY = date(2026, 8, 22)
TRIALS = int(os.environ.get("SKEWLESS_LAKE_TRIALS", "3"))
SEED = int(os.environ.get("SKEWLESS_FAULT_SEED", "7"))
#: A week of commits held back and ingested late (restates already built days).
LATE = (date(2026, 7, 6), date(2026, 7, 13))


def _content(env: dict[str, str], ident: str) -> pa.Table | None:
    """The table's rows in a canonical order (None when the table does not exist yet); loads and scans it."""
    with deployment.exported(env) as p:
        cat = lake.catalog(p)
        if not cat.table_exists(ident):
            return None
        t = cat.load_table(ident)
        rows = t.scan().to_arrow()
    keys = [c for c in ("repo", "sha", "author_id", "event_timestamp") if c in rows.column_names]
    return rows.sort_by([(k, "ascending") for k in keys]).combine_chunks()


def _props(env: dict[str, str], ident: str) -> dict[str, str]:
    with deployment.exported(env) as p:
        return dict(lake.load_table(ident, p).properties)


def _same(a: pa.Table | None, b: pa.Table | None) -> bool:
    """Same rows; a table that does not exist counts as empty (a kill between creating and filling it)."""
    if a is None or b is None:
        return (a is None or a.num_rows == 0) and (b is None or b.num_rows == 0)
    return a.num_rows == b.num_rows and a.equals(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_parquet) -> dict[str, pa.Table]:
    """A clean run: the whole sample ingested once and built through LAST_DAY in one go."""
    env = local_env(tmp_path_factory.mktemp("clean") / "home")
    with deployment.exported(env) as p:
        from skewless.lake import ingest

        ingest.ingest([sample_parquet])
        features.build(LAST_DAY, p)
    return {ident: _content(env, ident) for ident in (COMMITS_TABLE, *(t.identifier for t in features.TABLES))}


def _fault(rng: random.Random, clean_seconds: float, commits: int) -> dict:
    kind = rng.choice(("timed",) + faults.COMMIT_POINTS)
    if kind == "timed":
        return {"kind": "timed", "delay": rng.uniform(0.0, clean_seconds)}
    return {"kind": kind, "point": kind, "nth": rng.randint(1, commits)}


def _run_faulted(args: list[str], env: dict[str, str], fault: dict) -> str:
    if fault["kind"] == "timed":
        killed, _ = procs.cli_killed(args, env, fault["delay"])
        return f"SIGKILL after {fault['delay']:.2f}s" if killed else "finished before the SIGKILL"
    child = procs.start_call(faults.cli_with_fault, env, args, fault)
    child.join(600)
    assert child.exitcode is not None
    return f"SIGKILL at {fault['point']} #{fault['nth']} (exit {child.exitcode})"


def _chunks(sample_parquet: Path, root: Path, n: int, rng: random.Random) -> list[Path]:
    """The sample split into ``n`` overlapping random chunks (every commit in at least one; ~10% in two)."""
    t = pq.read_table(sample_parquet)
    owner = [rng.randrange(n) for _ in range(t.num_rows)]
    extra = [rng.randrange(n) if rng.random() < 0.1 else -1 for _ in range(t.num_rows)]
    paths = []
    for k in range(n):
        mask = pa.array([o == k or e == k for o, e in zip(owner, extra)])
        path = root / f"chunk{k}.parquet"
        pq.write_table(t.filter(mask), path)
        paths.append(path)
    return paths


def test_ingest_killed_mid_write_is_all_or_nothing(tmp_path, sample_parquet, reference):
    rng = random.Random(SEED)
    env = local_env(tmp_path / "home")
    chunks = _chunks(sample_parquet, tmp_path, TRIALS, rng)
    clean_seconds = 3.0
    before = _content(env, COMMITS_TABLE)
    for k, chunk in enumerate(chunks):
        fault = _fault(rng, clean_seconds, commits=3 if before is None else 1)  # create, properties, append
        what = _run_faulted(["ingest", str(chunk)], env, fault)
        killed = _content(env, COMMITS_TABLE)  # loads and scans: the table is at a valid snapshot
        clean_seconds = procs.timed_cli(["ingest", str(chunk)], env)
        after = _content(env, COMMITS_TABLE)
        stored = set(zip(after["repo"].to_pylist(), after["sha"].to_pylist()))
        chunk_keys = pq.read_table(chunk, columns=["repo", "sha"])
        assert set(zip(chunk_keys["repo"].to_pylist(), chunk_keys["sha"].to_pylist())) <= stored
        state = "before" if _same(killed, before) else "after" if _same(killed, after) else "NEITHER"
        print(f"RELIABILITY ingest: trial {k} {what}: table {state} "
              f"({0 if killed is None else killed.num_rows} rows; rerun -> {after.num_rows})")
        assert state != "NEITHER", f"ingest killed ({what}) left a table that is neither before nor after"
        before = after
    assert _same(_content(env, COMMITS_TABLE), reference[COMMITS_TABLE])


def test_features_build_killed_mid_write_is_all_or_nothing(tmp_path, sample_parquet, reference):
    rng = random.Random(SEED + 1)
    env = local_env(tmp_path / "home")
    t = pq.read_table(sample_parquet)
    day = pc.floor_temporal(t["committed_at"], unit="day")
    late = pc.and_(pc.greater_equal(day, pa.scalar(features.day_start(LATE[0]))),
                   pc.less(day, pa.scalar(features.day_start(LATE[1]))))
    on_time, held_back = tmp_path / "on_time.parquet", tmp_path / "late.parquet"
    pq.write_table(t.filter(pc.invert(late)), on_time)
    pq.write_table(t.filter(late), held_back)
    assert procs.cli(["ingest", str(on_time)], env) == 0
    days = [LAST_DAY - timedelta(days=(TRIALS - 1 - k) * 3) for k in range(TRIALS)]
    clean_seconds = 4.0
    idents = [ft.identifier for ft in features.TABLES]
    before = {i: _content(env, i) for i in idents}
    for k, until in enumerate(days):
        if k == TRIALS // 2:
            assert procs.cli(["ingest", str(held_back)], env) == 0  # late commits: this build restates
        fault = _fault(rng, clean_seconds, commits=len(idents) * (3 if before[idents[0]] is None else 1))
        what = _run_faulted(["features", "build", "--until", until.isoformat()], env, fault)
        killed = {i: _content(env, i) for i in idents}
        killed_props = {i: _props(env, i).get(features.BUILT_THROUGH) for i in idents if killed[i] is not None}
        clean_seconds = procs.timed_cli(["features", "build", "--until", until.isoformat()], env)
        after = {i: _content(env, i) for i in idents}
        states = []
        for i in idents:
            state = "before" if _same(killed[i], before[i]) else "after" if _same(killed[i], after[i]) else "NEITHER"
            states.append(f"{i.split('.')[1]} {state}")
            assert state != "NEITHER", f"build killed ({what}) left {i} neither before nor after"
            if state == "after" and not _same(before[i], after[i]):
                assert killed_props[i] == _props(env, i)[features.BUILT_THROUGH], "rows and built-through disagree"
        print(f"RELIABILITY build: trial {k} --until {until} {what}: {', '.join(states)}")
        before = after
        assert all(_props(env, i)[features.BUILT_THROUGH] == until.isoformat() for i in idents)
    for i in idents:
        assert _same(_content(env, i), reference[i]), f"{i} after killed builds differs from a clean build"


def _concurrently(runs: list[list[str]], env: dict[str, str], barrier_dir: Path) -> list[int]:
    """Start every command at once, each holding its first Iceberg commit until all reached theirs."""
    barrier_dir.mkdir(parents=True, exist_ok=True)
    for f in barrier_dir.glob("*.ready"):
        f.unlink()
    children = [procs.start_call(faults.cli_with_fault, env, args, None,
                                 {"dir": str(barrier_dir), "name": f"w{i}", "parties": len(runs)})
                for i, args in enumerate(runs)]
    t0 = time.monotonic()
    for c in children:
        c.join(600)
    print(f"  {len(runs)} concurrent commands took {time.monotonic() - t0:.1f}s")
    return [c.exitcode for c in children]


def test_concurrent_ingests_and_builds_lose_no_commit(tmp_path, sample_parquet, reference):
    """Writers forced to conflict at their commit: every command succeeds, nothing is lost or duplicated.

    (The first ingest runs alone so that the later ones conflict at their commits; first uses racing each other
    have their own test below.)"""
    rng = random.Random(SEED + 2)
    env = local_env(tmp_path / "home")
    chunks = _chunks(sample_parquet, tmp_path, 4, rng)
    assert procs.cli(["ingest", str(chunks[0])], env) == 0
    codes = _concurrently([["ingest", str(c)] for c in chunks[1:3]], env, tmp_path / "barrier")
    print(f"RELIABILITY concurrent ingests: exit codes {codes}")
    assert codes == [0, 0], "a concurrent ingest failed"
    stored = _content(env, COMMITS_TABLE)
    keys = set(zip(stored["repo"].to_pylist(), stored["sha"].to_pylist()))
    assert len(keys) == stored.num_rows, "concurrent ingests duplicated commits"
    for c in chunks[:3]:
        t = pq.read_table(c, columns=["repo", "sha"])
        assert set(zip(t["repo"].to_pylist(), t["sha"].to_pylist())) <= keys, "a concurrent ingest lost commits"
    # Two builds of different days at once, then the same day twice at once, then an ingest during a build.
    for days in ((date(2026, 5, 1), LAST_DAY - timedelta(days=5)), (LAST_DAY - timedelta(days=1),) * 2):
        codes = _concurrently([["features", "build", "--until", d.isoformat()] for d in days], env,
                              tmp_path / "barrier")
        print(f"RELIABILITY concurrent builds {[d.isoformat() for d in days]}: exit codes {codes}")
        assert codes == [0, 0], "a concurrent features build failed"
    codes = _concurrently([["features", "build", "--until", LAST_DAY.isoformat()], ["ingest", str(chunks[3])]], env,
                          tmp_path / "barrier")
    print(f"RELIABILITY ingest during a build: exit codes {codes}")
    assert codes == [0, 0]
    assert procs.cli(["features", "build", "--until", LAST_DAY.isoformat()], env) == 0  # picks up the late ingest
    assert _same(_content(env, COMMITS_TABLE), reference[COMMITS_TABLE])
    for ft in features.TABLES:
        assert _same(_content(env, ft.identifier), reference[ft.identifier]), f"concurrent writers broke {ft.name}"


def test_many_first_uses_of_an_empty_catalog_all_succeed(tmp_path):
    """Twelve processes open the same empty SQLite catalog at once (pyiceberg creates its tables, skewless its
    namespaces): every one succeeds, and the catalog ends with exactly the two namespaces."""
    import subprocess
    import sys

    env = local_env(tmp_path / "home")
    code = ("import sys, time; from skewless import lake\n"
            "while time.time() < float(sys.argv[1]): time.sleep(0.001)\n"
            "print(sorted(n[0] for n in lake.catalog().list_namespaces()))")
    start = time.time() + 4.0  # every child imported before any of them opens the catalog
    children = [subprocess.Popen([sys.executable, "-c", code, str(start)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(12)]
    results = [(c.wait(timeout=120), c.stdout.read(), c.stderr.read()) for c in children]
    failed = [err.strip().splitlines()[-1] for rc, _, err in results if rc != 0]
    print(f"RELIABILITY first uses of an empty catalog: {12 - len(failed)}/12 succeeded")
    assert not failed, failed
    assert {out.strip() for _, out, _ in results} == {"['abukix', 'features']"}
