"""The timed section of a benchmark path: wall and CPU seconds, peak RSS before and after (shared by the workers)."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from typing import Any, Iterator

_KB = 1024


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KB / 1e6


@contextmanager
def measured(result: dict[str, Any]) -> Iterator[None]:
    """Record the wall and CPU seconds of the block, and the peak RSS before it, into ``result``."""
    result["rss_before_mb"] = _rss_mb()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    yield
    result["seconds"] = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result["peak_rss_mb"] = _rss_mb()
