"""
### commits_features_daily: commit events to fresh online features, one UTC day at a time

Each run is a transaction over its **data interval** `[data_interval_start, data_interval_end)`, one UTC day, and
never reads the clock for data:

1. **ingest_commits**: `skewless.lake.ingest.ingest(config.commit_sources())`: the sources of `SKEWLESS_SOURCES`
   (Parquet files or git repositories, `os.pathsep`-separated; default: the shared data set, else the shipped
   sample). Keyed by `(repo, sha)`: commits already stored are skipped.
2. **build_features**: `skewless.features.build(until=D)` with **D = the UTC day of `data_interval_end`**. The
   feature row of day D (event time D 00:00) is computed from the commits with `committed_at < D 00:00` only,
   i.e. exactly the interval's commits and everything before: it is the first row the interval completes. (The
   row of the interval's start day was already complete after the previous interval, and a row of a later day
   would need commits the interval has not seen.) Commits ingested after their day restate the rows they touch.
3. **register_features**: `skewless.ops.feast_ops.apply()` (`feast apply`; a no-op when the definitions did not change).
4. **materialize_online**: `skewless.ops.feast_ops.materialize(until=D)`: loads rows with event time up to D into the
   online store, incrementally; then records the success time for monitoring.
5. **check_parity**: `skewless.ops.parity.check()`: online values against point-in-time offline values; the result is
   recorded for monitoring, and any mismatch fails the task.
6. **publish_metrics** (runs even when an earlier task failed): writes the Prometheus metrics of
   `monitoring.exporter` once, to `$SKEWLESS_HOME/monitoring/skewless.prom` (node_exporter textfile), and logs them.
7. **fail_if_upstream_failed**: fails the run when any task failed (publish_metrics always succeeds).

A lineage step belongs after **materialize_online** (its own task, in parallel with **check_parity**).

After the run for logical date L (interval `[L, L+1 day)`), the online store serves the features as of L + 1 day.

**Idempotent**: every stage is. Re-running a day adds no commit, builds nothing new, loads nothing new into the
online store (materialization restarts from its last end) and re-checks parity. Running an older day after a newer
one changes nothing either.

**Backfill** (a past range, day by day, oldest first, one run at a time):

    airflow backfill create --dag-id commits_features_daily \
        --from-date 2026-08-18 --to-date 2026-08-20 --max-active-runs 1

creates the runs of logical dates 2026-08-18..20 (features as of 08-19..21); the scheduler executes them. The
first run on an empty lakehouse builds the whole history through its day D, so a backfill is for re-running
days, not for the first load. `airflow dags test commits_features_daily 2026-08-21` runs one interval in process
(`dag.test()`; its logical date is taken as the run time, so that runs the interval `[08-20, 08-21)`).
Tests: `tests/airflow/` (see `dags/README.md`).

Profile and resources come from `skewless.core.config.profile()` (`SKEWLESS_ENV`, `SKEWLESS_HOME`, ...) in the worker's
environment.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, task


with DAG(
    dag_id="commits_features_daily",
    description="Ingest commits, build the feature tables, materialize the online store, check parity, publish "
                "freshness metrics: one UTC day per run.",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args={
        "owner": "platform@skewless.dev",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
    },
    tags=["skewless", "features", "feast", "daily"],
) as dag:

    @task
    def ingest_commits() -> dict:
        """Append the new commits of the configured sources to abukix.commits."""
        from skewless.core import config
        from skewless.lake import ingest

        sources = config.commit_sources()
        result = ingest.ingest(sources)
        print(f"sources {', '.join(map(str, sources))}: {result}")
        return {"rows_added": result.rows_added, "snapshot_id": result.snapshot_id}

    @task
    def build_features(data_interval_end: datetime | None = None) -> str:
        """Build every feature table through the interval's feature day."""
        from skewless import features
        from skewless.core.days import interval_day

        day = interval_day(data_interval_end)
        for r in features.build(day, progress=print):
            print(r)
        return day.isoformat()

    @task
    def register_features() -> None:
        """Register the feature repository (feast apply with the profile's yaml)."""
        from skewless.ops import feast_ops

        feast_ops.apply()

    @task
    def materialize_online(day: str) -> list[str]:
        """Load the online store through the feature day, then record the success for monitoring."""
        from skewless.ops import feast_ops, freshness

        results = feast_ops.materialize(date.fromisoformat(day))
        freshness.record_materialization()
        for r in results:
            print(r)
        return [str(r) for r in results]

    @task
    def check_parity() -> dict:
        """Compare online with point-in-time offline values; record the result; fail on any mismatch."""
        from airflow.sdk.exceptions import AirflowFailException
        from skewless.ops import freshness, parity

        results = parity.check()
        freshness.record_parity(results)
        report = parity.report(results)
        print(report)
        if not all(r.ok for r in results):
            raise AirflowFailException(f"online/offline parity failed:\n{report}")
        return {r.feature_view: r.entities for r in results}

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def publish_metrics() -> str:
        """Write the freshness, materialization and parity metrics once (textfile) and log them."""
        from monitoring import exporter

        path, text = exporter.write_textfile()
        print(text)
        return str(path)

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def fail_if_upstream_failed() -> None:
        """Fail the run when a task failed: publish_metrics runs regardless and would otherwise mark it a success."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a task of this run failed; see its log")

    day = build_features()
    materialized = materialize_online(day)
    ingest_commits() >> day >> register_features() >> materialized
    published = publish_metrics()
    materialized >> check_parity() >> published
    list(dag.tasks) >> fail_if_upstream_failed()
