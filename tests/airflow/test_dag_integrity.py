"""Integrity of every DAG in dags/: it imports, is documented, owned, tagged, retried, and parses without I/O."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.airflow
# "airflow.sdk", not "airflow": where Airflow is not installed, this very directory (tests/airflow) would
# import as a namespace package named airflow.
pytest.importorskip("airflow.sdk")

from skewless.core.config import PROJECT_ROOT  # noqa: E402

DAGS_FOLDER = PROJECT_ROOT / "dags"

EXPECTED_DAGS = {"commits_features_daily", "next_week_commits_weekly", "stream_consistency_hourly"}
#: Modules a DAG file must not import at parse time (they load inside tasks).
HEAVY = ("skewless", "training", "monitoring", "serving", "feast", "pyiceberg", "duckdb", "mlflow", "sklearn",
         "pandas", "pyarrow")

PARSE = textwrap.dedent("""
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag

    before = set(sys.modules)
    t0 = time.perf_counter()
    bag = DagBag(sys.argv[1])
    total = time.perf_counter() - t0
    heavy = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in sys.argv[2].split(","))
    print(json.dumps({
        "dags": sorted(bag.dag_ids),
        "errors": {k: str(v) for k, v in bag.import_errors.items()},
        "heavy": heavy,
        "total": total,
        "files": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats},
    }))
""")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_FOLDER))


def test_dags_import_without_errors(dagbag):
    assert not dagbag.import_errors, dagbag.import_errors
    assert EXPECTED_DAGS <= set(dagbag.dag_ids)


def test_every_dag_is_documented_owned_tagged_and_retried(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and dag_id in dag.doc_md, f"{dag_id}: doc_md must be the module's docstring"
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.default_args.get("retries", 0) >= 1, f"{dag_id}: default_args must set retries >= 1"
        assert dag.default_args.get("owner") not in (None, "airflow"), f"{dag_id}: default_args must name an owner"
        assert dag.max_active_runs == 1, f"{dag_id}: runs of one pipeline must not overlap"
        for t in dag.tasks:
            assert t.owner == dag.default_args["owner"], f"{dag_id}.{t.task_id} owner {t.owner}"
            assert t.doc_md or t.doc or (t.python_callable.__doc__ if hasattr(t, "python_callable") else None), \
                f"{dag_id}.{t.task_id} has no docstring"
            if t.trigger_rule == "one_failed":  # the run-failing watcher: retrying a deliberate failure is noise
                assert t.retries == 0
            else:
                assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_daily_dag_is_a_data_interval_dag(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["commits_features_daily"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is False
    assert [t.task_id for t in dag.topological_sort()][:5] == [
        "ingest_commits", "build_features", "register_features", "materialize_online", "check_parity"]
    assert dag.task_dict["publish_metrics"].trigger_rule == "all_done"


def test_stream_consistency_dag_checks_its_data_interval(dagbag):
    """Hourly data intervals; both checks take the interval from Airflow (never the clock); metrics always published."""
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["stream_consistency_hourly"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable) and dag.catchup is False
    assert dag.task_dict["publish_metrics"].trigger_rule == "all_done"
    assert set(dag.task_dict["publish_metrics"].upstream_task_ids) == {"reconcile_stream_lake", "replay_fetches"}
    text = (DAGS_FOLDER / "stream_consistency_hourly.py").read_text()
    assert "now(" not in text and "_interval(data_interval_start, data_interval_end)" in text


def test_a_run_works_on_the_utc_day_of_its_interval_end():
    """Both DAGs take their day from skewless.core.days.interval_day (inside the task: no import at parse time)."""
    from skewless.core.days import interval_day

    for dag_file in ("commits_features_daily.py", "next_week_commits_weekly.py"):
        assert "interval_day(data_interval_end)" in (DAGS_FOLDER / dag_file).read_text(), dag_file
    assert interval_day(datetime(2026, 8, 21, tzinfo=timezone.utc)) == date(2026, 8, 21)
    # 2026-08-21 01:00 in UTC+2 is 2026-08-20 23:00 UTC.
    assert interval_day(datetime(2026, 8, 21, 1, tzinfo=timezone(timedelta(hours=2)))) == date(2026, 8, 20)
    with pytest.raises(ValueError, match="no data interval"):
        interval_day(None)


def test_parsing_does_no_io_and_no_heavy_imports(tmp_path):
    """Parse the DAG folder in a fresh interpreter with SKEWLESS_HOME pointing nowhere: nothing is created there,
    no stage module is imported. Parse times are printed, not asserted."""
    home = tmp_path / "does-not-exist"
    env = {**os.environ, "SKEWLESS_ENV": "local", "SKEWLESS_HOME": str(home)}
    env.pop("FEAST_FS_YAML_FILE_PATH", None)
    out = subprocess.run([sys.executable, "-c", PARSE, str(DAGS_FOLDER), ",".join(HEAVY)], env=env,
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert not report["errors"], report["errors"]
    assert EXPECTED_DAGS <= set(report["dags"])
    assert report["heavy"] == [], f"DAG files import {report['heavy']} at parse time"
    assert not home.exists(), "parsing the DAGs created SKEWLESS_HOME"
    assert list(tmp_path.iterdir()) == [], f"parsing wrote {list(tmp_path.iterdir())}"
    print(f"\nDagBag parse of {DAGS_FOLDER}: {report['total']:.3f} s in total; per file: "
          + ", ".join(f"{os.path.basename(f)} {d:.3f} s" for f, d in report["files"].items()))


def test_weekly_dag_training_interface():
    """The calls the weekly DAG's tasks make exist in training/ with the parameters the DAG passes."""
    import inspect

    from training import train

    try:
        evaluate = importlib.import_module("training.evaluate")
    except ModuleNotFoundError as e:
        if e.name != "training.evaluate":
            raise
        pytest.skip("training/evaluate.py is not written yet: the weekly DAG expects evaluate.compare(run_id) -> "
                    "object with .better, train.train(until=, register=False) and train.register(run_id)")
    assert {"until", "register"} <= set(inspect.signature(train.train).parameters)
    assert list(inspect.signature(train.register).parameters)[:1] == ["run_id"]
    assert list(inspect.signature(evaluate.compare).parameters)[:1] == ["run_id"]
