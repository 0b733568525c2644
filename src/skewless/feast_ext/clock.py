"""The serving clock: the instant online reads are evaluated at (TTL expiry, live windows), and the instant the
stream processor stamps as "known at". The wall clock (UTC) unless :func:`serving_clock` pins it — for tests (a
frozen or stepped clock), replays of a past day and drills.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime, timezone
from typing import Callable, Iterator, Union


def wall_clock() -> datetime:
    """The default serving time: now, UTC."""
    return datetime.now(timezone.utc)


_clock: Callable[[], datetime] = wall_clock
_clock_lock = threading.Lock()


def serving_now() -> datetime:
    """The time online reads are evaluated at (aware, UTC): the wall clock unless :func:`serving_clock` pins it."""
    now = _clock()
    if now.tzinfo is None:
        raise ValueError(f"the serving clock returned a naive datetime {now!r}; it must be timezone-aware (UTC)")
    return now.astimezone(timezone.utc)


@contextlib.contextmanager
def serving_clock(at: Union[datetime, Callable[[], datetime]]) -> Iterator[None]:
    """Evaluate online reads at ``at`` (an aware datetime, or a function returning one) inside the block.

    Process wide (Feast runs reads on worker threads too); the previous clock is restored on exit. For tests and
    for replaying a past serving day, never for live serving.
    """
    global _clock
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError(f"serving_clock({at!r}): give a timezone-aware datetime (UTC)")
        fixed = at

        def clock() -> datetime:
            return fixed
    elif callable(at):
        clock = at
    else:
        raise TypeError(f"serving_clock expects an aware datetime or a callable, not {type(at).__name__}")
    with _clock_lock:
        previous, _clock = _clock, clock
    try:
        yield
    finally:
        with _clock_lock:
            _clock = previous
