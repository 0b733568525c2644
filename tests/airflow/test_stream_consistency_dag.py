"""The stream consistency DAG, really run in process (``dag.test()``) on the LOCAL profile: the events of one hour go
through the intake and the processor, the fresh service is fetched (logged), then the run of that hour reconciles
the stream with the lake and replays the fetches, and publishes both results. A second run, after a version is
removed from the lake, fails at the reconciliation and still publishes the metric that says why."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(900)]
# "airflow.sdk", not "airflow": where Airflow is not installed, this very directory (tests/airflow) would
# import as a namespace package named airflow.
pytest.importorskip("airflow.sdk")

from skewless.core import config  # noqa: E402

DAG_ID = "stream_consistency_hourly"
HOUR = datetime(2026, 12, 7, 10, tzinfo=timezone.utc)  # the interval [10:00, 11:00)
REPO = "acme/hourly"


@pytest.fixture(scope="module")
def local_home(tmp_path_factory, airflow_db):
    home = tmp_path_factory.mktemp("stream-dag") / "home"
    saved = dict(os.environ)
    os.environ.update({"SKEWLESS_ENV": "local", "SKEWLESS_HOME": str(home)})
    os.environ.pop("FEAST_FS_YAML_FILE_PATH", None)
    for k, v in config.profile().feast_env().items():
        os.environ[k] = v
    home.mkdir(parents=True)
    try:
        yield home
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(config.PROJECT_ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    d = bag.dags[DAG_ID]
    for t in d.tasks:
        t.retries = 0
    return d


def _states(run_id: str) -> dict[str, str]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        dr = session.query(DagRun).filter(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id).one()
        return {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}


def _published() -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    from monitoring import exporter

    text = exporter.default_textfile().read_text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name in exporter.CONSISTENCY_METRIC_NAMES}


def test_hourly_run_reconciles_replays_and_publishes(local_home, dag, tmp_path):
    from pyiceberg.expressions import EqualTo

    from serving.fetch import LoggedFetcher
    from skewless.feast_ext.clock import serving_clock
    from skewless.lake.events import events_table, read_versions
    from skewless.stream import intake
    from skewless.stream.log import SqliteEventLog
    from skewless.stream.processor import Processor
    from test_fresh import prepare_lake

    prepare_lake(tmp_path)
    p = config.profile()
    rows = [{"repo": REPO, "sha": f"{i:02x}" * 20, "author_id": f"a_{i:012x}",
             "authored_at": (HOUR + timedelta(minutes=i)).isoformat(),
             "committed_at": (HOUR + timedelta(minutes=i)).isoformat(), "is_merge": False, "files_changed": 1,
             "lines_added": i, "lines_deleted": 0, "languages": ["Python"]} for i in range(1, 6)]
    now = [HOUR + timedelta(minutes=10)]
    with serving_clock(lambda: now[0]), SqliteEventLog(p.event_log_path) as log_, Processor(log_=log_) as proc:
        log_.publish(intake.events_of_table(intake.table_of_rows(rows, "dag-test"), "dag-test"))
        proc.drain()
        fetcher = LoggedFetcher(p=p, store=proc.store)
        for minute in (20, 40):
            now[0] = HOUR + timedelta(minutes=minute)
            fetcher.fetch([REPO, "acme/nothing"])
        now[0] = HOUR + timedelta(hours=1, minutes=5)  # a fetch of the next hour: not this run's
        fetcher.fetch([REPO])

    dr = dag.test(logical_date=HOUR + timedelta(hours=1))
    assert (dr.data_interval_start, dr.data_interval_end) == (HOUR, HOUR + timedelta(hours=1))
    assert _states(dr.run_id) == {"reconcile_stream_lake": "success", "replay_fetches": "success",
                                  "publish_metrics": "success", "fail_if_upstream_failed": "skipped"}
    m = _published()
    assert m[("skewless_stream_reconcile_checked_events", ())] == 5
    assert {dict(lb)["kind"]: v for (n, lb), v in m.items() if n == "skewless_stream_reconcile_mismatches"} == {
        "missing": 0, "duplicated": 0, "orphaned": 0, "commits_mismatched": 0}
    service = (("feature_service", config.NEXT_WEEK_COMMITS_LIVE_SERVICE), ("project", proc.store.project))
    assert m[("skewless_fetch_replay_checked_rows", service)] == 4  # two fetches of two repos in the hour
    ratios = [v for (n, _), v in m.items() if n == "skewless_fetch_replay_mismatch_ratio"]
    assert len(ratios) == len(fetcher.feature_names) and set(ratios) == {0.0}

    # The lake loses a version: the run fails at the reconciliation, and the published metric says so.
    lost = read_versions(p).to_pylist()[0]
    events_table(p).delete(EqualTo("seq", lost["seq"]))
    failed = dag.test(logical_date=HOUR + timedelta(hours=1))
    states = _states(failed.run_id)
    assert states["reconcile_stream_lake"] == "failed" and states["publish_metrics"] == "success", states
    assert states["fail_if_upstream_failed"] == "failed", states
    assert _published()[("skewless_stream_reconcile_mismatches", (("kind", "missing"),))] == 1
