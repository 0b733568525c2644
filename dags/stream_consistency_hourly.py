"""
### stream_consistency_hourly: the fresh path's stream and lake agree, and its served fetches replay offline

Each run covers its **data interval** `[data_interval_start, data_interval_end)`, one hour, and never reads the
clock for data:

1. **reconcile_stream_lake**: `skewless.stream.reconcile.reconcile(until=data_interval_end)`: every event of the
   log that arrived before the interval end and was acknowledged landed exactly once in `abukix.commit_events`,
   no version names an event the log does not hold, and `abukix.commits` holds what the versions say. Events still
   held by a processor are counted as in flight and judged by a later run (the check is cumulative). The result is
   recorded for monitoring; any disagreement fails the task (alert `StreamLakeReconciliationFailed`).
2. **replay_fetches**: `serving.replay.check(data_interval_start, data_interval_end)`: the online fetches of the fresh
   service logged in the interval (`serving.fetch`, `skewless stream fetch`) replayed as the entity rows of one
   point-in-time `get_historical_features`; the mismatch ratio per feature is recorded for monitoring. The task
   does not fail on a mismatch: the alert `FetchReplayConsistencyFailed` judges the ratio (it tolerates the small
   share served while a batch was being written).
3. **publish_metrics** (runs even when an earlier task failed): writes the exporter's metrics once to
   `$SKEWLESS_HOME/monitoring/skewless.prom` (node_exporter textfile), the consistency results included.
4. **fail_if_upstream_failed**: fails the run when any task failed.

**Idempotent**: both checks only read the log, the lake, the serving log and the Feast store, then overwrite their
recorded result; re-running an hour gives the same answer unless the stores changed in between.

Runs: `airflow dags test stream_consistency_hourly 2026-12-07T11:00:00+00:00` checks the interval `[10:00, 11:00)`
in process. Tests: `tests/airflow/test_stream_consistency_dag.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, task


def _interval(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The run's data interval as plain UTC datetimes (Airflow hands pendulum ones, whose arithmetic with a
    ``timedelta`` fails inside the checks)."""
    if start is None or end is None:
        raise ValueError("this run has no data interval: trigger it with a logical date (see the DAG's doc)")
    return tuple(datetime.fromisoformat(t.astimezone(timezone.utc).isoformat()) for t in (start, end))


with DAG(
    dag_id="stream_consistency_hourly",
    description="Reconcile the commit-event stream with the lake and replay the fresh service's logged fetches "
                "point-in-time; publish the results as metrics: one hour per run.",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 12, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args={
        "owner": "platform@skewless.dev",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(minutes=45),
    },
    tags=["skewless", "stream", "consistency", "hourly"],
) as dag:

    @task
    def reconcile_stream_lake(data_interval_start: datetime | None = None,
                              data_interval_end: datetime | None = None) -> dict:
        """Check that every settled event landed once and abukix.commits agrees; record; fail on disagreement."""
        from airflow.sdk.exceptions import AirflowFailException
        from skewless.ops import consistency
        from skewless.stream import reconcile

        _, end = _interval(data_interval_start, data_interval_end)
        result = reconcile.reconcile(end)
        consistency.record_reconciliation(result.record())
        print(result)
        if not result.ok:
            raise AirflowFailException(f"the stream and the lake disagree:\n{result}")
        return {"events": result.events, "in_flight": result.in_flight, **result.counts}

    @task
    def replay_fetches(data_interval_start: datetime | None = None,
                       data_interval_end: datetime | None = None) -> dict:
        """Replay the fresh service's fetches logged in the interval point-in-time; record the mismatch ratios."""
        from serving import replay
        from skewless.ops import consistency

        start, end = _interval(data_interval_start, data_interval_end)
        result = replay.check(start, end)
        consistency.record_replay(result.record())
        print(result)
        return {"rows": result.rows, **{f: result.ratio(f) for f in result.mismatches}}

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def publish_metrics() -> str:
        """Write the exporter's metrics once (textfile), the consistency results included, and log them."""
        from monitoring import exporter

        path, text = exporter.write_textfile()
        print(text)
        return str(path)

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def fail_if_upstream_failed() -> None:
        """Fail the run when a task failed: publish_metrics runs regardless and would otherwise mark it a success."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a task of this run failed; see its log")

    [reconcile_stream_lake(), replay_fetches()] >> publish_metrics()
    list(dag.tasks) >> fail_if_upstream_failed()
