"""The online read path every request takes, and the serving-skew switch of the drills.

Both consumers — the predictor (``serving/``) and parity — call one reader signature::

    reader(store, features, entity_rows) -> {column: [values]}   # join key + one column per feature (+ "__ts")

where ``features`` is a Feast ``FeatureService`` or a list of ``"view:feature"`` references. The honest reader is
``store.get_online_features(...).to_dict(include_event_timestamps=True)`` (Feast's own columns, no DataFrame on the
request path).

A DRILL switch, ``SKEWLESS_SERVING_SKEW`` (read only through :func:`skewless.core.config.serving_skew`), or an
explicit :class:`SkewedReader` wraps the honest read and transforms what it returns, exactly as a buggy serving path
would; nothing in normal operation sets it. A skewed reader never computes a feature from commits: every value it
serves comes from Feast (the online store, or a point-in-time read of the offline store for the shifted day).

Modes
-----
``window_edge``
    Off-by-one day edge: the serving side reads every view as of the previous UTC day edge (D − 1 day instead of
    D), i.e. all trailing windows end one day early. The value is what Feast's point-in-time join returns at
    D − 1 day. Every value of every row can change; marginal distributions barely move.
``timezone[:<hours>]`` (default offset +10)
    The serving side recomputes "as of now" on a host clock running at local time UTC+<hours> that it takes for
    UTC: the age features (names starting with ``days_since_``, the convention for "time since an event, in days,
    measured at the day edge D") are re-anchored from D to that local "now"; window counts cannot be recomputed
    from online data and stay as read. Only the age features change; their distribution moves by up to a day.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

import pandas as pd

from skewless.core import config
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

MODES = ("window_edge", "timezone")
DEFAULT_TZ_OFFSET_HOURS = 10.0
#: Naming convention of age features ("time since an event, in days, at the day edge D").
AGE_PREFIX = "days_since_"

Columns = dict[str, list]
OnlineReader = Callable[["FeatureStore", object, list], Columns]


class SkewError(SkewlessError, ValueError):
    """The skew switch names a mode that does not exist, or the drill cannot run on the given input."""


@dataclass(frozen=True)
class Skew:
    """One injected serving-side skew: ``mode`` in :data:`MODES`; ``offset_hours`` for ``timezone``."""

    mode: str
    offset_hours: float = 0.0

    def __str__(self) -> str:
        if self.mode == "timezone":
            return f"timezone:{self.offset_hours:+g}"
        return self.mode


def parse(value: str | None) -> Skew | None:
    """Parse a skew switch value (``window_edge`` | ``timezone`` | ``timezone:+5.5``); None/empty means no skew."""
    if value is None or not value.strip():
        return None
    mode, _, arg = value.strip().partition(":")
    mode = mode.strip().lower()
    if mode not in MODES:
        raise SkewError(f"SKEWLESS_SERVING_SKEW={value!r}: unknown skew mode {mode!r}; choose one of "
                        f"{', '.join(MODES)} (or leave it unset: no skew)")
    if mode == "window_edge":
        if arg:
            raise SkewError(f"SKEWLESS_SERVING_SKEW={value!r}: window_edge takes no argument")
        return Skew("window_edge")
    try:
        hours = float(arg) if arg else DEFAULT_TZ_OFFSET_HOURS
    except ValueError:
        raise SkewError(f"SKEWLESS_SERVING_SKEW={value!r}: {arg!r} is not a UTC offset in hours") from None
    if not -14 <= hours <= 14:
        raise SkewError(f"SKEWLESS_SERVING_SKEW={value!r}: UTC offset {hours:+g} h is outside [-14, +14]")
    return Skew("timezone", hours)


# --- readers -------------------------------------------------------------------------------------------------------

def honest_reader(store: "FeatureStore", features, entity_rows: list[dict]) -> Columns:
    """The online read, unchanged: ``store.get_online_features(...).to_dict()`` (one list per column, None where
    the store holds no value), with the event-time columns (``<feature>__ts``, epoch seconds, 0 when the store
    holds no row) that tell a stale row from a missing one."""
    return store.get_online_features(features=features, entity_rows=entity_rows).to_dict(
        include_event_timestamps=True)


def view_features(features) -> dict[str, list[str]]:
    """``{feature view: [feature names]}`` of a FeatureService or of a list of ``"view:feature"`` references."""
    out: dict[str, list[str]] = {}
    if isinstance(features, (list, tuple)):
        for ref in features:
            view, _, name = str(ref).partition(":")
            out.setdefault(view, []).append(name)
        return out
    for proj in features.feature_view_projections:
        out.setdefault(proj.name, []).extend(f.name for f in proj.features)
    return out


def online_as_of(fv) -> datetime | None:
    """The UTC day edge D the online store holds for a view (the day of its materialized end), or None."""
    from skewless.features import day_start
    from skewless.ops.feast_ops import materialized_through

    day = materialized_through(fv)
    return None if day is None else day_start(day)


def _serving_now() -> datetime:
    from skewless.feast_ext.ttl import serving_now

    return serving_now()


class SkewedReader:
    """DRILL ONLY: the online read with a serving-side skew applied (see the module docstring for the modes).

    ``clock`` returns the request time (UTC, aware) the ``timezone`` mode reads; by default the serving clock of
    :mod:`skewless.feast_ext.ttl` (the wall clock, or the time a replay pinned with ``serving_clock``).
    """

    def __init__(self, skew: Skew, clock: Callable[[], datetime] = _serving_now):
        self.skew = skew
        self.clock = clock

    def __repr__(self) -> str:
        return f"SkewedReader({self.skew})"

    def __call__(self, store: "FeatureStore", features, entity_rows: list[dict]) -> Columns:
        online = pd.DataFrame(honest_reader(store, features, entity_rows))
        if not entity_rows:
            return _columns(online)
        keys = list(entity_rows[0])
        if len(keys) != 1:
            raise SkewError(f"the skew drill reads one join key at a time, not {keys}")
        key = keys[0]
        for view, names in view_features(features).items():
            fv = store.get_feature_view(view, allow_registry_cache=True)
            as_of = online_as_of(fv)
            present = online[names].notna().any(axis=1)
            if as_of is None or not present.any():
                continue
            if self.skew.mode == "window_edge":
                self._previous_day_edge(store, online, key, view, names, present, as_of)
            else:
                self._local_now(online, names, present, as_of)
        return _columns(online)

    def _previous_day_edge(self, store, online, key, view, names, present, as_of) -> None:
        entities = pd.unique(online.loc[present, key])
        entity_df = pd.DataFrame({key: entities, "event_timestamp": pd.Timestamp(as_of - timedelta(days=1))})
        hist = store.get_historical_features(entity_df=entity_df, features=[f"{view}:{n}" for n in names]).to_df()
        shifted = hist.drop_duplicates(key).set_index(key)[names]
        rows = online.loc[present, key]
        for n in names:
            online[n] = online[n].astype(object)
            online.loc[present, n] = shifted.loc[rows, n].to_numpy(dtype=object)
            online[n] = pd.to_numeric(online[n], errors="coerce")

    def _local_now(self, online, names, present, as_of) -> None:
        # The host clock shows local time; the serving code takes that wall time for UTC and measures ages to it.
        local_now_as_utc = self.clock() + timedelta(hours=self.skew.offset_hours)
        shift_days = (local_now_as_utc - as_of).total_seconds() / 86400.0
        for n in names:
            if n.startswith(AGE_PREFIX):
                online[n] = pd.to_numeric(online[n], errors="coerce") + shift_days


def _columns(df: pd.DataFrame) -> Columns:
    """A reader's answer from a DataFrame: one list per column, None (not NaN) where a value is missing."""
    return {c: [None if isinstance(v, float) and math.isnan(v) else v for v in df[c].tolist()] for c in df.columns}


def reader_from_config() -> OnlineReader:
    """The online reader the process should use: honest, unless the drill switch ``SKEWLESS_SERVING_SKEW`` is set."""
    skew = parse(config.serving_skew())
    if skew is None:
        return honest_reader
    log.warning("DRILL: SKEWLESS_SERVING_SKEW=%s injects a serving-side skew into every online read; "
                "never set it outside a drill", skew)
    return SkewedReader(skew)
