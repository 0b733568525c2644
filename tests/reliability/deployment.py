"""A deployment of skewless for fault tests (own home, own Redis, own PostgreSQL database) and its online state.

The online state an uninterrupted ``skewless materialize --until DAY`` leaves is known without running Feast: for
every entity, the newest row of its Iceberg feature table with an event time at or before the end of DAY (that is
what Feast's materialization loads; ``tests/test_semantics.py`` and the parity check hold a clean run to it).
:func:`online_state` reads back what the online store serves for every entity, through ``get_online_features``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import pandas as pd
import pytest

from skewless import features, lake
from skewless.core import config

FEATURE_ENV_PREFIXES = ("SKEWLESS_", "FEAST_")


@contextlib.contextmanager
def exported(env: dict[str, str]) -> Iterator[config.Profile]:
    """This process switched to the profile of ``env`` (its SKEWLESS_/FEAST_ variables), restored on exit."""
    import os

    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith(FEATURE_ENV_PREFIXES):
                mp.delenv(k)
        for k, v in env.items():
            if k.startswith(FEATURE_ENV_PREFIXES):
                mp.setenv(k, v)
        p = config.profile()
        for k, v in p.feast_env().items():
            mp.setenv(k, v)
        yield p


def day_end(day: date) -> datetime:
    return features.day_start(day) + timedelta(days=1) - timedelta(microseconds=1)


@dataclass(frozen=True)
class ViewState:
    """Per entity: (event time in microseconds, feature values) — absent entities have no entry."""

    view: str
    rows: dict[str, tuple[int, tuple]]


def _norm(v):
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return float(v) if isinstance(v, float) else int(v) if not isinstance(v, str) else v


def expected_state(p: config.Profile, day: date) -> dict[str, ViewState]:
    """What an uninterrupted materialization through ``day`` loads: the newest row at or before its end."""
    from pyiceberg.expressions import LessThanOrEqual

    out = {}
    for t in features.TABLES:
        rows = lake.load_table(t.identifier, p).scan(
            row_filter=LessThanOrEqual("event_timestamp", day_end(day).isoformat())).to_arrow()
        rows = rows.sort_by([(t.entity_key, "ascending"), ("event_timestamp", "ascending")]).to_pylist()
        names = [f.name for f in t.features]
        state = {}
        for r in rows:  # ascending event time: the newest row of each entity is written last
            ts = r["event_timestamp"]
            us = (ts - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
            state[r[t.entity_key]] = (us, tuple(_norm(r[n]) for n in names))
        out[t.name] = ViewState(t.name, state)
    return out


def all_entities(p: config.Profile) -> dict[str, list[str]]:
    """Every entity key of every feature table (also those whose first row is after the day under test)."""
    return {t.name: sorted(set(lake.load_table(t.identifier, p).scan(selected_fields=(t.entity_key,)).to_arrow()
                               [t.entity_key].to_pylist())) for t in features.TABLES}


def online_state(p: config.Profile, day: date, entities: dict[str, list[str]]) -> dict[str, ViewState]:
    """What the online store serves for every entity, read with the serving clock at the start of ``day``.

    At that time no held row is expired, so the read shows every row the store holds (a row from after ``day``
    would show too: the TTL rule serves rows newer than "now" as held).
    """
    from feast.online_response import TIMESTAMP_POSTFIX

    from skewless.ops import feast_ops
    from skewless.feast_ext.ttl import serving_clock

    store = feast_ops.feature_store(p)
    out = {}
    with serving_clock(features.day_start(day)):
        for t in features.TABLES:
            names = [f.name for f in t.features]
            keys = entities[t.name]
            got = store.get_online_features(features=[f"{t.name}:{n}" for n in names],
                                            entity_rows=[{t.entity_key: k} for k in keys]
                                            ).to_dict(include_event_timestamps=True)
            state = {}
            for i, k in enumerate(keys):
                seconds = got[names[0] + TIMESTAMP_POSTFIX][i]
                values = tuple(_norm(got[n][i]) for n in names)
                if seconds or any(v is not None for v in values):
                    state[k] = (int(seconds) * 1_000_000, values)
            out[t.name] = ViewState(t.name, state)
    return out


def differences(got: dict[str, ViewState], want: dict[str, ViewState], limit: int = 5) -> list[str]:
    """Human-readable differences between two online states (empty: identical).

    Event times compare at second precision (what ``to_dict(include_event_timestamps=True)`` returns; every
    stored row is stamped at a UTC midnight).
    """
    diffs = []
    for view in want:
        g, w = got[view].rows, want[view].rows
        for k in sorted(set(g) | set(w)):
            a, b = g.get(k), w.get(k)
            if a is None or b is None:
                diffs.append(f"{view} {k}: online {'missing' if a is None else a} vs expected "
                             f"{'absent' if b is None else b}")
            elif a[0] // 1_000_000 != b[0] // 1_000_000 or a[1] != b[1]:
                diffs.append(f"{view} {k}: online {a} vs expected {b}")
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


def future_rows(got: dict[str, ViewState], day: date) -> int:
    """Online rows stamped after the end of ``day`` (must be none: no value from the future)."""
    end_us = int(day_end(day).timestamp() * 1_000_000)
    return sum(1 for s in got.values() for ts, _ in s.rows.values() if ts > end_us)
