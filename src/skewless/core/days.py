"""Days and instants: what day a scheduled run works on (the one rule both DAGs apply to their data interval), and
the UTC DuckDB session every day computation runs in."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


def interval_day(data_interval_end: datetime | None) -> date:
    """The UTC day of a run's data-interval end: the day a daily run builds and materializes through (its rows use
    only commits before it), and the last day whose data a weekly training run may use. Never ``now()``."""
    if data_interval_end is None:
        # Airflow 3 gives a run triggered without a logical date no interval; with one, the latest complete interval
        # at trigger time (not the interval of that date: a past day is re-run by clearing or backfilling it).
        raise ValueError("this run has no data interval; trigger it with a logical date, or backfill the day")
    return data_interval_end.astimezone(timezone.utc).date()


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_us(value: datetime) -> int:
    """An instant as integer microseconds since the Unix epoch (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - EPOCH) // timedelta(microseconds=1)


def from_epoch_us(us: int) -> datetime:
    """Integer microseconds since the Unix epoch as an aware UTC datetime (exact, unlike a float timestamp)."""
    return EPOCH + timedelta(microseconds=int(us))


def utc_duckdb(database: str = ":memory:") -> "duckdb.DuckDBPyConnection":
    """A new DuckDB connection whose session time zone is UTC, so that days and instants mean UTC everywhere."""
    import duckdb

    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    return con
