"""
### next_week_commits_weekly: retrain next-week-commits, promote it only if it beats the registered model

Each run is a transaction over its data interval (one week, Monday 03:00 UTC to Monday 03:00 UTC, after the daily
feature run of Monday night has materialized):

1. **train_candidate**: `training.train.train(until=D, register=False)` with D = the UTC day of
   `data_interval_end`: a model trained and evaluated on the weeks labeled by D (features through the feature
   service `next_week_commits_v1`, the Feast SDK's point-in-time join), logged to MLflow as a run, not
   registered. Returns its run id and metrics.
2. **evaluate_against_registered**: `training.evaluate.compare(run_id)`: the currently registered version of
   `next_week_commits` scored on the candidate's own evaluation weeks (same rows, same metric); the candidate is
   better when its metric is lower (or when nothing is registered yet). Short-circuits the run otherwise.
3. **register_if_better**: `training.train.register(run_id)`: registers the candidate's model as the next version
   (the predictor reads its feature service from the version's tag).

Re-running a week trains on the same labeled weeks (bounded by the interval, never by the clock) and promotes at
most once: the second candidate is not better than the first, now registered. Backfill is not meaningful for a
model (only the newest model matters): trigger one run,
`airflow dags trigger next_week_commits_weekly --logical-date "$(date -u +%FT%TZ)"` (Airflow 3 gives it the latest
complete week; a run triggered without a logical date has no data interval, and the tasks refuse it).

Training code lives in `training/` (one module per stage); the DAG only calls it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, CronDataIntervalTimetable, task


with DAG(
    dag_id="next_week_commits_weekly",
    description="Train next-week-commits on the feature service, compare with the registered model, register "
                "only if better.",
    schedule=CronDataIntervalTimetable("0 3 * * 1", timezone="UTC"),
    start_date=datetime(2026, 1, 5, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args={
        "owner": "ml@skewless.dev",
        "retries": 1,
        "retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(hours=3),
    },
    tags=["skewless", "training", "mlflow", "weekly"],
) as dag:

    @task
    def train_candidate(data_interval_end: datetime | None = None) -> dict:
        """Train and log a candidate model on the weeks labeled by the interval end (not registered)."""
        from skewless.core.days import interval_day
        from training import train

        result = train.train(until=interval_day(data_interval_end), register=False)
        print(result)
        return {"run_id": result.run_id}

    @task.short_circuit
    def evaluate_against_registered(candidate: dict) -> bool:
        """Score the registered model on the candidate's evaluation weeks; continue only if the candidate wins."""
        from training import evaluate

        comparison = evaluate.compare(candidate["run_id"])
        print(comparison)
        return bool(comparison.better)

    @task
    def register_if_better(candidate: dict) -> str:
        """Register the candidate (it beat the registered version)."""
        from training import train

        version = train.register(candidate["run_id"])
        print(f"registered run {candidate['run_id']} as version {version}")
        return str(version)

    candidate = train_candidate()
    evaluate_against_registered(candidate) >> register_if_better(candidate)
