"""What a point-in-time retrieval assumes, said out loud (README "Retrieval rules"; ADR 0019).

Two assumptions of ``get_historical_features`` change the values a caller gets without changing anything they see:

* **Naive entity timestamps** (no time zone: ``datetime64[ns]``, ``"2026-05-01 10:00"``, a SQL ``TIMESTAMP``, a
  date) are read as UTC, as Feast reads them. A caller who meant local time gets the values of another instant,
  and near midnight another day's.
* **An entity timestamp after the last built day** of a feature table (``skewless.built-through``) gets the values
  of that day's row: a value holds until the next row, and no next row was built yet. Values are exact only for
  timestamps before the day after the built day.

:class:`~skewless.feast_ext.offline.IcebergOfflineStore` reports each with a :class:`RetrievalWarning` naming the
column, or the view and the day the values are from. Strict retrieval turns them into a :class:`RetrievalError`
and returns nothing: the store option ``strict_retrieval: true`` in ``feature_store.yaml``, the :func:`strict`
block (the skewless training path runs in one: a model is never trained on values other than the ones asked for),
or Python's own ``warnings.simplefilter("error", RetrievalWarning)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Iterator

from skewless.core.errors import SkewlessError


class RetrievalWarning(UserWarning):
    """A retrieval answered under an assumption the caller may not share (naive timestamps, values older than
    asked for)."""


class RetrievalError(SkewlessError, ValueError):
    """A strict retrieval met what would otherwise be a :class:`RetrievalWarning` (the message says what)."""


_STRICT: contextvars.ContextVar[bool] = contextvars.ContextVar("skewless_strict_retrieval", default=False)


@contextlib.contextmanager
def strict() -> Iterator[None]:
    """Inside the block, retrievals refuse instead of warning (:class:`RetrievalError`)."""
    token = _STRICT.set(True)
    try:
        yield
    finally:
        _STRICT.reset(token)


def is_strict(store_option: bool = False) -> bool:
    """Whether a retrieval must refuse: the store's ``strict_retrieval`` option or an enclosing :func:`strict`."""
    return bool(store_option) or _STRICT.get()


def report(message: str, store_option: bool = False) -> None:
    """Warn with ``message`` (:class:`RetrievalWarning`), or raise it as a :class:`RetrievalError` when strict."""
    if is_strict(store_option):
        raise RetrievalError(message)
    warnings.warn(message, RetrievalWarning, stacklevel=2)


def naive_message(column: str) -> str:
    return (f"entity_df column {column!r} holds timestamps without a time zone; they are read as UTC. Pass "
            "timezone-aware timestamps (pandas: .dt.tz_localize('Europe/Berlin') for local times, "
            ".dt.tz_localize('UTC') for UTC) to say which instant you mean")


def beyond_built_message(view: str, table: str, built: str, rows: int, total: int, latest: str) -> str:
    return (f"{rows} of {total} entity rows ask for feature view {view} after {table}'s last built day {built} "
            f"(latest {latest}): their values are those of {built}, not as of their timestamps. Build further "
            f"(`skewless features build --until DAY`) or ask for timestamps before the day after {built}")
