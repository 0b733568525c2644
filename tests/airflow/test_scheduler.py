"""The daily DAG under a real Airflow 3 deployment: scheduler, dag-processor and api-server as subprocesses.

``dag.test()`` (``test_daily_dag.py``) runs tasks in process; here Airflow's own components run the DAG the way a
user deploys it (README, "Run the DAGs under Airflow"): ``airflow db migrate`` of a throwaway SQLite metadata DB, then
``airflow api-server`` (which serves the Task Execution API the workers talk to), ``airflow scheduler``
(LocalExecutor) and ``airflow dag-processor``, each in its own process group, on a free loopback port, with
``AIRFLOW__CORE__DAGS_FOLDER`` = skewless's ``dags/`` and the **local profile** in a temporary ``SKEWLESS_HOME``.
The commit source (``SKEWLESS_SOURCES``) is a copy of the shipped sample in a temporary directory.

The module's tests run in file order on one deployment:

1. **Scheduled run**: the DAG is unpaused and the *scheduler* creates the run itself. The DAG has ``catchup=False``,
   so the run it creates is the one of the latest complete interval, ``[T - 1 day, T)`` with T = today 00:00 UTC:
   deterministic given the UTC date (the test reads the date before and after and accepts either when midnight
   passes in between). No clock is faked and no run is created by hand; the lakehouse is then built and
   materialized through T, and the online store serves every entity's row of day T.
2. **Backfill**: ``airflow backfill create --from-date 2026-08-18 --to-date 2026-08-20 --max-active-runs 1``; the
   scheduler runs the three runs (intervals ``[08-18, 08-19)`` .. ``[08-20, 08-21)``) one at a time, oldest first.
   They come after the run of T (the DAG must be unpaused for backfill runs to start, and unpausing it creates the
   scheduled run), so by the DAG's contract they change nothing: every Iceberg table, snapshot, materialization
   interval and online row is the same before and after.
3. **Failure**: the source file is overwritten with bytes that are not Parquet and a run is triggered
   (``airflow dags trigger --logical-date``: Airflow 3 infers its interval from the trigger time, ``[T - 1 day, T)``).
   ``ingest_commits`` fails, is retried (the DAG's ``retries=2``) and fails for good on its third try; the
   downstream tasks are ``upstream_failed``, ``publish_metrics`` still runs and ``fail_if_upstream_failed`` fails
   the run. The task log names the bad source; the lakehouse is unchanged (ingest is all-or-nothing). The DAG's
   ``retry_delay`` (5 minutes) is shortened to 2 s by a *cluster policy* of this test deployment
   (``$AIRFLOW_HOME/config/airflow_local_settings.py``, Airflow's own mechanism), not by the DAG code.
4. **Rerun (clear)**: the source is restored and the failed run is cleared the way the runbooks say
   (``airflow tasks clear -s L -e L --only-failed --downstream --yes``); the scheduler reruns it to success. Then the
   scheduled day itself is cleared entirely and rerun. Each rerun leaves the tables, their snapshots, Feast's
   materialization intervals and every online-store row exactly as before.

States are read through Airflow's CLI (``airflow dags list-runs``, ``airflow tasks states-for-dag-run``) and its
REST API (polling); results through skewless's readers (``skewless.lake``, ``skewless.features``, Feast) and the
SQLite online store's rows. Every wait has a deadline; every component's process group is killed at teardown, and
the component logs (and task logs) are printed when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(1200)]
# "airflow.sdk", not "airflow": where Airflow is not installed, this very directory (tests/airflow) would
# import as a namespace package named airflow.
pytest.importorskip("airflow.sdk")

from processes import free_port  # noqa: E402
from skewless.core import config  # noqa: E402
from values import same  # noqa: E402

DAG_ID = "commits_features_daily"
BACKFILL = (date(2026, 8, 18), date(2026, 8, 20))  # logical dates (interval starts), inside the sample's history
RETRY_DELAY_S = 2
AIRFLOW = str(Path(sys.executable).parent / "airflow")
TABLES = (config.COMMITS_TABLE, "features.repo_activity", "features.author_activity")
#: The test deployment's cluster policy (Airflow reads airflow_local_settings from $AIRFLOW_HOME/config).
LOCAL_SETTINGS = f'''
from datetime import timedelta


def task_policy(task):
    """Test deployment only: retry after {RETRY_DELAY_S} s instead of the DAG's minutes."""
    task.retry_delay = timedelta(seconds={RETRY_DELAY_S})
'''


def _utc(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def _today() -> date:
    return datetime.now(timezone.utc).date()


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


@dataclass
class Deployment:
    """A running Airflow deployment of skewless's dags/ with the local skewless profile."""

    root: Path
    env: dict[str, str]
    port: int
    source: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    failed_run: dict | None = None  # the run test 3 failed, which test 4 repairs
    _token: str | None = None

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def skewless_home(self) -> Path:
        return Path(self.env["SKEWLESS_HOME"])

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    # --- components ---------------------------------------------------------------------------------------------
    def start(self, name: str, *args: str) -> None:
        with self.log(name).open("wb") as out:
            self.procs[name] = subprocess.Popen([AIRFLOW, *args], env=self.env, cwd=self.root, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"Airflow components exited: {dead}"

    def stop(self) -> None:
        """SIGTERM every component's process group, SIGKILL what is left after a grace period."""
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs.values():  # the group too: task processes the executor forked
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def dump_logs(self, tail: int = 8000) -> str:
        parts = []
        for name in self.procs:
            text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
            parts.append(f"===== {name} (last {tail} chars) =====\n{text[-tail:]}")
        for f in sorted((self.airflow_home / "logs").rglob("*.log")):
            if "dag_id=" in str(f):
                parts.append(f"===== task log {f.relative_to(self.airflow_home)} =====\n"
                             f"{f.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # --- Airflow's CLI and REST API -----------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180) -> str:
        out = subprocess.run([AIRFLOW, *args], env=self.env, cwd=self.root, capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"airflow {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n" \
                                    f"{out.stderr[-3000:]}"
        return out.stdout

    def cli_json(self, *args: str):
        text = self.cli(*args, "-o", "json")
        for line in reversed(text.splitlines()):  # the JSON document is the last line; warnings may come first
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        raise AssertionError(f"airflow {' '.join(args)} printed no JSON:\n{text[-3000:]}")

    def api(self, path: str):
        if self._token is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/auth/token", timeout=30) as r:
                self._token = json.load(r)["access_token"]
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v2/{path}",
                                     headers={"Authorization": f"Bearer {self._token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def wait(self, what: str, probe, timeout: float, interval: float = 2.0):
        """Poll ``probe()`` until it returns a truthy value; fail after ``timeout`` seconds or if a component died."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = probe()
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last = e
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")

    def runs(self) -> list[dict]:
        return self.api(f"dags/{DAG_ID}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]

    def wait_finished(self, run_ids: set[str], timeout: float) -> dict[str, dict]:
        def probe():
            runs = {r["dag_run_id"]: r for r in self.runs() if r["dag_run_id"] in run_ids}
            done = len(runs) == len(run_ids) and all(r["state"] in ("success", "failed") for r in runs.values())
            return runs if done else None

        return self.wait(f"runs {sorted(run_ids)} to finish", probe, timeout)

    def list_runs(self, *flags: str) -> dict[str, dict]:
        """``airflow dags list-runs``: run_id -> its row (state, logical date, start/end date)."""
        return {r["run_id"]: r for r in self.cli_json("dags", "list-runs", DAG_ID, *flags)}

    def task_states(self, run_id: str) -> dict[str, dict]:
        """``airflow tasks states-for-dag-run``: task_id -> its row (state, try_number, ...)."""
        return {t["task_id"]: t for t in self.cli_json("tasks", "states-for-dag-run", DAG_ID, run_id)}

    def ti_tries(self, run_id: str) -> dict[str, int]:
        tis = self.api(f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: t["try_number"] for t in tis}


def _subprocess_env(root: Path, port: int, source: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SKEWLESS_", "FEAST_"))}
    airflow_home = root / "airflow"
    base_url = f"http://127.0.0.1:{port}"
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(config.PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        # One secret for the tokens the scheduler issues to task workers and the api-server that checks them.
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        # The skewless profile of the tasks (the LocalExecutor's workers inherit the scheduler's environment).
        "SKEWLESS_ENV": "local",
        "SKEWLESS_HOME": str(root / "skewless-home"),
        "SKEWLESS_SOURCES": str(source),
    })
    return env


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow-scheduler")
    source = root / "sources" / "commits.parquet"
    source.parent.mkdir()
    shutil.copyfile(config.SAMPLE_COMMITS, source)
    port = free_port()
    dep = Deployment(root, _subprocess_env(root, port, source), port, source)
    (dep.airflow_home / "config").mkdir(parents=True)
    (dep.airflow_home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    # The test process reads the same lakehouse as the tasks (skewless's readers, Feast).
    saved = dict(os.environ)
    for k in [k for k in os.environ if k.startswith(("SKEWLESS_", "FEAST_"))]:
        del os.environ[k]
    os.environ.update({k: dep.env[k] for k in ("SKEWLESS_ENV", "SKEWLESS_HOME", "SKEWLESS_SOURCES")})
    failed = False
    try:
        t0 = time.perf_counter()
        dep.cli("db", "migrate", timeout=300)
        dep.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        dep.start("scheduler", "scheduler")
        dep.start("dag-processor", "dag-processor")
        dep.wait("the api-server", lambda: dep.api("monitor/health"), 180)
        dep.wait(f"the dag-processor to serialize {DAG_ID}", lambda: _dag_known(dep), 180)
        errors = dep.api("importErrors")
        assert errors["total_entries"] == 0, errors
        dep.wait("a scheduler heartbeat", lambda: dep.api("monitor/health")["scheduler"]["status"] == "healthy", 120)
        print(f"\nAirflow deployment up in {time.perf_counter() - t0:.1f} s (port {port})")
        yield dep
    except BaseException:
        failed = True
        raise
    finally:
        dep.stop()
        if failed:
            print(dep.dump_logs())
        os.environ.clear()
        os.environ.update(saved)


def _dag_known(dep: Deployment) -> bool:
    try:
        return dep.api(f"dags/{DAG_ID}")["dag_id"] == DAG_ID
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise


@pytest.fixture
def logs_on_failure(deployment, request):
    yield deployment
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(deployment.dump_logs())


# --- the lakehouse, read with skewless's own readers -----------------------------------------------------------------

def _lake_state(dep: Deployment) -> dict:
    """Everything a run could change: each table's snapshot and rows, Feast's materialization intervals, every row
    of the SQLite online store."""
    import pyarrow as pa

    from skewless import lake
    from skewless.ops import feast_ops

    state: dict = {"snapshots": {}, "rows": {}}
    for ident in TABLES:
        table = lake.load_table(ident)
        state["snapshots"][ident] = lake.snapshot_id(table)
        rows = table.scan().to_arrow()
        keys = [f.name for f in rows.schema if not pa.types.is_nested(f.type)]  # lists do not sort; rows are unique
        state["rows"][ident] = rows.sort_by([(c, "ascending") for c in keys])
    store = feast_ops.feature_store()
    state["intervals"] = {fv.name: sorted(fv.materialization_intervals) for fv in store.list_feature_views()}
    online_db = dep.skewless_home / "feast" / "online_store.db"
    with sqlite3.connect(f"{online_db.as_uri()}?mode=ro", uri=True) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        state["online"] = {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    con.close()
    return state


def _assert_same_state(before: dict, after: dict) -> None:
    assert after["snapshots"] == before["snapshots"]
    for ident in TABLES:
        assert after["rows"][ident].equals(before["rows"][ident]), f"{ident} rows changed"
        assert before["rows"][ident].num_rows > 0, ident
    assert after["intervals"] == before["intervals"]
    assert after["online"] == before["online"]
    assert sum(len(rows) for rows in before["online"].values()) > 0


def _assert_online_serves(day: date) -> None:
    """Through Feast: every repository's online values are its Iceberg row of ``day``, stamped ``day`` 00:00 UTC;
    every author's are the author's latest row up to ``day``."""
    from skewless import lake
    from skewless.ops import feast_ops

    store = feast_ops.feature_store()
    for view, key in (("repo_activity", "repo"), ("author_activity", "author_id")):
        df = lake.load_table(f"features.{view}").scan().to_arrow().to_pandas()
        offline = df[df.event_timestamp <= _utc(day)].sort_values("event_timestamp").groupby(key).tail(1)
        offline = offline.set_index(key)
        fv = store.get_feature_view(view)
        refs = [f"{view}:{f.name}" for f in fv.features]
        got = store.get_online_features(features=refs, entity_rows=[{key: e} for e in offline.index]).to_dict(
            include_event_timestamps=True)
        assert len(offline) > 0 and got[key] == list(offline.index)
        for i, (entity, row) in enumerate(offline.iterrows()):
            for f in fv.features:
                assert same(got[f.name][i], row[f.name]), (view, entity, f.name, got[f.name][i], row[f.name])
                assert got[f.name + "__ts"][i] == int(row.event_timestamp.timestamp()), (view, entity, f.name)
        if view == "repo_activity":  # dense: every repository has the row of the day itself
            assert set(got[fv.features[0].name + "__ts"]) == {int(_utc(day).timestamp())}


def _assert_tasks(dep: Deployment, run_id: str, expected: dict[str, str], cli: bool = False) -> None:
    """The run's task states, from ``airflow tasks states-for-dag-run`` (``cli``) or the REST API (an ``airflow``
    command costs seconds of imports on a busy machine)."""
    if cli:
        states = {t: s["state"] for t, s in dep.task_states(run_id).items()}
    else:
        tis = dep.api(f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        states = {t["task_id"]: t["state"] for t in tis}
    assert states == expected, states


ALL_SUCCESS = {t: "success" for t in ("ingest_commits", "build_features", "register_features", "materialize_online",
                                       "check_parity", "publish_metrics")} | {"fail_if_upstream_failed": "skipped"}


# --- tests, in order --------------------------------------------------------------------------------------------

def test_scheduler_creates_and_runs_the_latest_interval(logs_on_failure):
    """Unpause: the scheduler creates the run of [T - 1 day, T) by itself and runs it to success; the lakehouse is
    built and materialized through T and the online store serves the rows of T."""
    from skewless import features

    dep = logs_on_failure
    assert dep.runs() == []  # paused at creation: nothing ran before
    day_before = _today()
    t0 = time.perf_counter()
    dep.cli("dags", "unpause", DAG_ID)
    run = dep.wait("the scheduler to create a run", lambda: next(iter(dep.runs()), None), 120)
    finished = dep.wait_finished({run["dag_run_id"]}, 600)[run["dag_run_id"]]
    elapsed = time.perf_counter() - t0
    day_after = _today()

    listed = dep.list_runs()
    assert list(listed) == [run["dag_run_id"]]
    row = listed[run["dag_run_id"]]
    assert finished["run_type"] == "scheduled" and row["state"] == "success", (finished, row)
    start, end = _parse(finished["data_interval_start"]), _parse(finished["data_interval_end"])
    day = end.date()
    assert day in {day_before, day_after} and end == _utc(day) and start == end - timedelta(days=1), finished
    assert _parse(row["logical_date"]) == start  # the logical date is the interval start
    _assert_tasks(dep, run["dag_run_id"], ALL_SUCCESS, cli=True)

    assert features.built_through() == {"repo_activity": day, "author_activity": day}
    _assert_online_serves(day)
    print(f"\nscheduled run of [{start:%F}, {end:%F}) (full history of the sample): {elapsed:.1f} s")


def test_backfill_runs_three_days_oldest_first_and_changes_nothing_after_a_newer_day(logs_on_failure):
    dep = logs_on_failure
    before = _lake_state(dep)
    existing = {r["dag_run_id"] for r in dep.runs()}
    t0 = time.perf_counter()
    dep.cli("backfill", "create", "--dag-id", DAG_ID, "--from-date", BACKFILL[0].isoformat(),
            "--to-date", BACKFILL[1].isoformat(), "--max-active-runs", "1")
    created = dep.wait("the backfill runs", lambda: [r for r in dep.runs() if r["dag_run_id"] not in existing
                                                     and r["run_type"] == "backfill"], 60)
    runs = dep.wait_finished({r["dag_run_id"] for r in created}, 600)
    elapsed = time.perf_counter() - t0

    listed = dep.list_runs()
    backfill = sorted((listed[r] for r in runs), key=lambda r: r["logical_date"])
    days = [BACKFILL[0] + timedelta(days=i) for i in range(3)]
    assert [_parse(r["logical_date"]) for r in backfill] == [_utc(d) for d in days]
    assert {r["state"] for r in backfill} == {"success"}, backfill
    assert len(runs) == 3, runs
    for d in days:
        r = next(x for x in runs.values() if _parse(x["logical_date"]) == _utc(d))
        assert (_parse(r["data_interval_start"]), _parse(r["data_interval_end"])) == (_utc(d), _utc(d + timedelta(1)))
        _assert_tasks(dep, r["dag_run_id"], ALL_SUCCESS)
    # One at a time, oldest first (--max-active-runs 1): each run started after the previous one ended.
    for prev, nxt in zip(backfill, backfill[1:]):
        assert _parse(prev["end_date"]) <= _parse(nxt["start_date"]), (prev, nxt)

    _assert_same_state(before, _lake_state(dep))
    print(f"\nbackfill of 3 days after the newest day: {elapsed:.1f} s")


def test_a_failing_task_is_retried_then_fails_the_run(logs_on_failure):
    dep = logs_on_failure
    before = _lake_state(dep)
    good = dep.source.read_bytes()
    dep.source.write_bytes(b"these bytes are not a Parquet file\n" * 100)
    try:
        logical = datetime.now(timezone.utc).replace(microsecond=0)
        existing = {r["dag_run_id"] for r in dep.runs()}
        t0 = time.perf_counter()
        dep.cli("dags", "trigger", DAG_ID, "--logical-date", logical.isoformat())
        run = dep.wait("the triggered run", lambda: next((r for r in dep.runs() if r["dag_run_id"] not in existing
                                                             and r["run_type"] == "manual"), None), 60)
        finished = dep.wait_finished({run["dag_run_id"]}, 420)[run["dag_run_id"]]
        elapsed = time.perf_counter() - t0
    finally:
        dep.source.write_bytes(good)

    run_id = run["dag_run_id"]
    row = dep.list_runs()[run_id]
    assert (finished["run_type"], row["state"]) == ("manual", "failed"), (finished, row)
    assert _parse(finished["logical_date"]) == logical
    end = _parse(finished["data_interval_end"])  # Airflow 3: a manual run's interval is the latest complete one
    assert end == _utc(end.date()) and _parse(finished["data_interval_start"]) == end - timedelta(days=1)
    _assert_tasks(dep, run_id, {
        "ingest_commits": "failed", "build_features": "upstream_failed", "register_features": "upstream_failed",
        "materialize_online": "upstream_failed", "check_parity": "upstream_failed", "publish_metrics": "success",
        "fail_if_upstream_failed": "failed"}, cli=True)
    assert dep.ti_tries(run_id)["ingest_commits"] == 3  # the first try and the DAG's two retries
    logs = sorted((dep.airflow_home / "logs").rglob(f"run_id={run_id}/task_id=ingest_commits/attempt=*.log"))
    assert [p.name for p in logs] == ["attempt=1.log", "attempt=2.log", "attempt=3.log"], logs
    assert str(dep.source) in logs[-1].read_text(), "the failed ingest's log does not name the bad source"
    _assert_same_state(before, _lake_state(dep))
    print(f"\nfailing run (3 tries of ingest_commits, retry_delay {RETRY_DELAY_S} s): {elapsed:.1f} s")
    dep.failed_run = finished  # for the rerun test


def test_clearing_a_day_reruns_it_and_gives_the_same_tables(logs_on_failure):
    dep = logs_on_failure
    failed = dep.failed_run
    if failed is None:
        pytest.fail("needs the failed run of test_a_failing_task_is_retried_then_fails_the_run")
    before = _lake_state(dep)

    # The runbooks' mitigation: clear the failed tasks (and what they held back) of that run, the source repaired.
    logical = failed["logical_date"]
    t0 = time.perf_counter()
    dep.cli("tasks", "clear", DAG_ID, "-s", logical, "-e", logical, "--only-failed", "--downstream", "--yes")
    dep.wait_finished({failed["dag_run_id"]}, 420)
    repaired = time.perf_counter() - t0
    assert dep.list_runs()[failed["dag_run_id"]]["state"] == "success"
    _assert_tasks(dep, failed["dag_run_id"], ALL_SUCCESS, cli=True)
    assert dep.ti_tries(failed["dag_run_id"])["ingest_commits"] == 4  # ran again, after its three failed tries
    _assert_same_state(before, _lake_state(dep))

    _assert_online_serves(_parse(failed["data_interval_end"]).date())
    print(f"\nrerun of the failed run's failed and held-back tasks: {repaired:.1f} s")
