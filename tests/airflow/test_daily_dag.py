"""The daily DAG, really run in process on the PRODUCTION profile (Redis online store, PostgreSQL catalog/registry).

Each test module run gets its own PostgreSQL database (created by the pipeline, dropped here) and Redis DB 12
(flushed before and after), a temporary SKEWLESS_HOME and the shipped sample as the commit source; the Airflow
metadata DB is SQLite in a temporary AIRFLOW_HOME (conftest). Order matters and is the file order:

1. Airflow's own backfill (``airflow backfill create``) of logical dates 2026-08-18..19 builds the online store
   day by day (features as of 08-19, then 08-20);
2. ``dag.test()`` runs the interval [08-20, 08-21): the online store then serves the rows of 08-21; re-running the
   same day changes nothing (Iceberg snapshots, Feast materialization intervals, every Redis key).
"""

from __future__ import annotations

import os
import time
from datetime import date, datetime, timezone

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.production, pytest.mark.timeout(1200)]
# "airflow.sdk", not "airflow": where Airflow is not installed, this very directory (tests/airflow) would
# import as a namespace package named airflow.
pytest.importorskip("airflow.sdk")

from skewless.core import config  # noqa: E402
from values import same  # noqa: E402

DAG_ID = "commits_features_daily"
REDIS_DB = 12
PG_DB = f"skewless_airflow_test_{os.getpid()}"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _drop_database(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="module")
def production(tmp_path_factory, airflow_db):
    """Production-profile environment of the tasks; everything it creates is removed afterwards."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    r.flushdb()
    _drop_database(PG_DB)
    env = {
        "SKEWLESS_ENV": "production",
        "SKEWLESS_HOME": str(tmp_path_factory.mktemp("airflow-prod") / "home"),
        "SKEWLESS_PG_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}",
        "SKEWLESS_REDIS": f"127.0.0.1:6379,db={REDIS_DB}",
        "SKEWLESS_SOURCES": str(config.SAMPLE_COMMITS),
    }
    saved = dict(os.environ)
    os.environ.update(env)
    os.environ.pop("FEAST_FS_YAML_FILE_PATH", None)
    cwd = os.getcwd()
    try:
        yield SimpleEnv(env, r)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(cwd)
        r.flushdb()
        r.close()
        _drop_database(PG_DB)


class SimpleEnv:
    def __init__(self, env: dict, redis_client):
        self.env = env
        self.redis = redis_client


@pytest.fixture(scope="module")
def dag():
    """The DAG as the DagBag parses it, with retries off so that a failing task fails the test at once."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(config.PROJECT_ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    d = bag.dags[DAG_ID]
    for t in d.tasks:
        t.retries = 0
    return d


# --- helpers ------------------------------------------------------------------------------------------------------

def _utc(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def _task_states(dag_run) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        from airflow.models.dagrun import DagRun

        dr = session.query(DagRun).filter(DagRun.dag_id == DAG_ID, DagRun.run_id == dag_run).one()
        return {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}


def _assert_run_ok(run_id: str) -> None:
    states = _task_states(run_id)
    expected = {t: "success" for t in ("ingest_commits", "build_features", "register_features",
                                       "materialize_online", "check_parity", "publish_metrics")}
    expected["fail_if_upstream_failed"] = "skipped"
    assert states == expected, states


def _online(store, view: str, key: str, entities: list[str]) -> dict[str, dict]:
    """Every feature of ``view`` online, with its event time, per entity."""
    fv = store.get_feature_view(view)
    refs = [f"{view}:{f.name}" for f in fv.features]
    d = store.get_online_features(features=refs, entity_rows=[{key: e} for e in entities]).to_dict(
        include_event_timestamps=True)
    return {e: {c: d[c][i] for c in d} for i, e in enumerate(d[key])}


def _offline_as_of(view: str, day: date):
    """Each entity's offline row in force on ``day`` (latest event_timestamp <= day), from the Iceberg table."""
    from skewless import lake

    df = lake.load_table(f"features.{view}").scan().to_arrow().to_pandas()
    df = df[df.event_timestamp <= _utc(day)]
    key = "repo" if view == "repo_activity" else "author_id"
    return df.sort_values("event_timestamp").groupby(key).tail(1).set_index(key)


def _assert_online_serves(day: date) -> None:
    """The online store holds, for every entity, exactly the offline row in force on ``day``, stamped with it."""
    from skewless.ops import feast_ops

    store = feast_ops.feature_store()
    for view, key in (("repo_activity", "repo"), ("author_activity", "author_id")):
        offline = _offline_as_of(view, day)
        online = _online(store, view, key, sorted(offline.index))
        features = [f.name for f in store.get_feature_view(view).features]
        assert len(online) == len(offline) > 0
        for entity, row in offline.iterrows():
            got = online[entity]
            for f in features:
                assert same(got[f], row[f]), (view, entity, f, got[f], row[f])
                assert got[f + "__ts"] == int(row.event_timestamp.timestamp()), (view, entity, f)
        if view == "repo_activity":  # dense: every repo has the row of the day itself
            assert {got[features[0] + "__ts"] for got in online.values()} == {int(_utc(day).timestamp())}


def _state(redis_client) -> dict:
    """Everything a re-run could change: Iceberg snapshots, Feast materialization intervals, every Redis key."""
    from skewless import lake
    from skewless.ops import feast_ops

    snaps = {t: lake.snapshot_id(lake.load_table(t)) for t in
             ("abukix.commits", "features.repo_activity", "features.author_activity")}
    store = feast_ops.feature_store()
    intervals = {fv.name: sorted(fv.materialization_intervals) for fv in store.list_feature_views()}
    keys = {}
    for k in redis_client.scan_iter(count=1000):
        keys[k] = redis_client.hgetall(k) if redis_client.type(k) == b"hash" else redis_client.dump(k)
    return {"snapshots": snaps, "intervals": intervals, "redis": keys}


def _run_backfill_in_process(dag, from_date: date, to_date: date) -> list[str]:
    """``airflow backfill create`` (Airflow's CLI, in process), then execute the runs it created, oldest first.

    The scheduler would execute them; here each queued run is driven by the same minimal loop ``dag.test()`` uses
    (state update, then every schedulable task instance run in process), one run at a time.
    """
    from airflow import settings
    from airflow.cli import cli_parser
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunType

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(DagBag(str(config.PROJECT_ROOT / "dags")), "dags-folder", None)
    args = cli_parser.get_parser().parse_args([
        "backfill", "create", "--dag-id", DAG_ID, "--from-date", from_date.isoformat(),
        "--to-date", to_date.isoformat(), "--max-active-runs", "1"])
    args.func(args)

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    session = settings.Session()
    run_ids = [r.run_id for r in session.query(DagRun).filter(
        DagRun.dag_id == DAG_ID, DagRun.run_type == DagRunType.BACKFILL_JOB).order_by(DagRun.logical_date)]
    for run_id in run_ids:
        session = settings.Session()
        dr = session.query(DagRun).filter(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id).one()
        dr.dag = scheduler_dag
        dr.state = DagRunState.RUNNING
        session.commit()
        while dr.state == DagRunState.RUNNING:
            session.expire_all()
            schedulable, _ = dr.update_state(session=session)
            for ti in schedulable:
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in [t for t in dr.get_task_instances(session=session) if t.state == TaskInstanceState.SCHEDULED]:
                _run_task(ti=ti, task=dag.task_dict[ti.task_id])
        assert dr.state == DagRunState.SUCCESS, f"{run_id}: {_task_states(run_id)}"
    return run_ids


# --- tests --------------------------------------------------------------------------------------------------------

def test_backfill_builds_a_past_range_day_by_day(production, dag):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from skewless import features
    from skewless.ops import feast_ops

    t0 = time.perf_counter()
    run_ids = _run_backfill_in_process(dag, date(2026, 8, 18), date(2026, 8, 19))
    elapsed = time.perf_counter() - t0
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.run_id.in_(run_ids)).order_by(DagRun.logical_date).all()
        intervals = [(r.data_interval_start, r.data_interval_end) for r in runs]
    assert intervals == [(_utc(date(2026, 8, 18)), _utc(date(2026, 8, 19))),
                         (_utc(date(2026, 8, 19)), _utc(date(2026, 8, 20)))]
    for run_id in run_ids:
        _assert_run_ok(run_id)
    # Day by day: one materialization per run, the second starting where the first ended.
    store = feast_ops.feature_store()
    for fv in feast_ops.batch_views(store):  # the live view is fed by the stream, never materialized
        ends = sorted(end.astimezone(timezone.utc).date() for _, end in fv.materialization_intervals)
        assert ends == [date(2026, 8, 19), date(2026, 8, 20)], (fv.name, fv.materialization_intervals)
    assert set(features.built_through().values()) == {date(2026, 8, 20)}
    _assert_online_serves(date(2026, 8, 20))
    print(f"\nbackfill of 2 daily runs (production profile, sample): {elapsed:.1f} s")


def test_daily_run_serves_the_day_and_a_rerun_changes_nothing(production, dag):
    from monitoring import exporter

    logical = _utc(date(2026, 8, 21))  # dag.test(): interval [08-20, 08-21) -> features as of 08-21
    t0 = time.perf_counter()
    dr = dag.test(logical_date=logical)
    first = time.perf_counter() - t0
    assert (dr.data_interval_start, dr.data_interval_end) == (_utc(date(2026, 8, 20)), logical)
    _assert_run_ok(dr.run_id)
    _assert_online_serves(date(2026, 8, 21))

    # The publish step wrote the metrics: the online store's newest event time is the day, parity clean.
    from prometheus_client.parser import text_string_to_metric_families

    text = exporter.default_textfile().read_text()
    samples = {(s.name, s.labels.get("feature_view"), s.labels.get("feature")): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("skewless_online_newest_event_timestamp_seconds", "repo_activity", None)] == logical.timestamp()
    assert samples[("skewless_materialized_through_timestamp_seconds", "repo_activity", None)] == logical.timestamp()
    assert samples[("skewless_materialization_lag_seconds", "author_activity", None)] == 0
    parity = {k: v for k, v in samples.items() if k[0] == "skewless_parity_mismatch_ratio"}
    assert len(parity) == 9 and set(parity.values()) == {0.0}

    before = _state(production.redis)
    t0 = time.perf_counter()
    again = dag.test(logical_date=logical)
    rerun = time.perf_counter() - t0
    _assert_run_ok(again.run_id)
    after = _state(production.redis)
    assert after["snapshots"] == before["snapshots"]
    assert after["intervals"] == before["intervals"]
    assert after["redis"] == before["redis"] and len(before["redis"]) > 0
    _assert_online_serves(date(2026, 8, 21))
    print(f"\ndaily run (production profile, after the backfill): {first:.1f} s; re-run of the same day: "
          f"{rerun:.1f} s; Redis keys compared: {len(before['redis'])}")
