"""Stage 3 — register the feature repository and load the online store, through Feast.

``apply()`` has the same effect as ``feast apply`` with the profile's yaml; ``materialize(until=DAY)`` loads the
online store incrementally so that ``get_online_features`` returns the values as of DAY.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterator

from skewless import features, lake
from skewless.core import terminal
from skewless.lake.events import events_table
from skewless.core.config import FEATURE_REPO, FEATURES_NAMESPACE, Profile, activate, profile

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def feature_store(p: Profile | None = None) -> "FeatureStore":
    """A Feast FeatureStore for the active profile (exports the profile's Feast environment first)."""
    from feast import FeatureStore

    p = activate(p)
    return FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=p.feature_store_yaml)


@contextlib.contextmanager
def _in_feature_repo() -> Iterator[None]:
    """Import context for Feast's apply/plan, as the ``feast`` CLI sets it up, undone afterwards.

    Feast chdirs into the repository and imports its modules by bare name (``entities``, ``sources``...), so the
    repository goes on ``sys.path``; afterwards the cwd is restored and those modules are dropped from
    ``sys.modules``, so a later apply in the same process (another home or profile) re-reads the definitions.
    """
    import sys

    cwd = os.getcwd()
    sys.path.insert(0, str(FEATURE_REPO))
    os.chdir(FEATURE_REPO)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path.remove(str(FEATURE_REPO))
        for name, mod in list(sys.modules.items()):
            if str(getattr(mod, "__file__", "") or "").startswith(str(FEATURE_REPO)):
                del sys.modules[name]


def repo_contents(p: Profile | None = None):
    """The Feast objects declared in ``feature_repo/`` (what ``apply`` registers), parsed without registering."""
    from feast.repo_operations import parse_repo

    activate(p)
    with _in_feature_repo():
        return parse_repo(FEATURE_REPO)


def apply(p: Profile | None = None) -> None:
    """Register entities, sources, views and services (same as ``feast apply`` with the profile's yaml)."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    p = activate(p)
    for t in features.TABLES:  # Feast validates every source: say what to run instead of a catalog stack trace
        lake.load_table(t.identifier, p)
    events_table(p)  # the live views' source: created empty before the first streamed event
    with _in_feature_repo():
        apply_total(load_repo_config(FEATURE_REPO, p.feature_store_yaml), FEATURE_REPO,
                    skip_source_validation=False)


def plan(p: Profile | None = None, verbose: bool = False) -> str:
    """What ``apply`` would change, briefly (``skewless.feast_ext.plan``: features and services added, removed or
    changed per object, or "no changes"); ``verbose`` adds Feast's own ``feast plan`` output (the proto dumps)."""
    from feast.repo_config import load_repo_config

    from skewless.feast_ext.plan import plan_text

    p = activate(p)
    with _in_feature_repo():
        return plan_text(load_repo_config(FEATURE_REPO, p.feature_store_yaml), FEATURE_REPO,
                         skip_source_validation=False, verbose=verbose)


def materialized_through(fv: "FeatureView") -> date | None:
    """The last UTC day whose rows Feast materialized for ``fv``: its end bound floored to the day.

    Feast's end bound is inclusive and rows are stamped at 00:00 UTC of their day, so any end on day D loads D's
    row: ``feast materialize-incremental 2026-08-15`` (midnight) and ``skewless materialize --until 2026-08-15``
    (the day's last microsecond) both hold 2026-08-15.
    """
    end = fv.most_recent_end_time
    if end is None:
        return None
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    return end.astimezone(timezone.utc).date()


@dataclass(frozen=True)
class MaterializeResult:
    feature_view: str
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{self.feature_view}: materialized event times {self.start:%Y-%m-%d} through {self.end:%Y-%m-%d}"



#: Entities probed per view to tell whether the online store still holds what it was loaded with.
ONLINE_PROBE = 256


def _online_lost(store, fv, table, last_end: datetime) -> bool:
    """True when the online store lost rows it was loaded with (a Redis restarted empty, a deleted SQLite file).

    The registry remembers what was materialized, the online store may not: an incremental run after such a loss
    would load only the new days and leave every other entity missing. Probes up to :data:`ONLINE_PROBE` entities
    (a deterministic spread) that have a row at or before the last materialized end: any of them without an
    online row means the store must be reloaded from the start. Partial loss of unprobed keys is not detected.
    """
    import hashlib

    from feast.online_response import TIMESTAMP_POSTFIX
    from pyiceberg.expressions import LessThanOrEqual

    key = next(t.entity_key for t in features.TABLES if t.name == fv.name)
    rows = table.scan(row_filter=LessThanOrEqual("event_timestamp", last_end.isoformat()),
                      selected_fields=(key,)).to_arrow()
    entities = sorted(set(rows[key].to_pylist()), key=lambda e: hashlib.sha256(e.encode()).digest())[:ONLINE_PROBE]
    if not entities:
        return False
    feature = fv.features[0].name
    resp = store.get_online_features(features=[f"{fv.name}:{feature}"], entity_rows=[{key: e} for e in entities])
    stamps = resp.to_dict(include_event_timestamps=True)[feature + TIMESTAMP_POSTFIX]
    missing = sum(1 for s in stamps if not s)
    if missing:
        log.warning("online store lost %s: %d of %d probed entities have no online row; reloading it from the "
                    "start", fv.name, missing, len(entities))
    return missing > 0


def _materialize_end(day: date) -> datetime:
    """Inclusive event-time end of a materialization through ``day``: its last microsecond."""
    return features.day_start(day) + timedelta(days=1) - timedelta(microseconds=1)


def batch_views(store: "FeatureStore") -> list["FeatureView"]:
    """The feature views built by `skewless features build` and materialized, by name (the live views are fed by
    the stream processor and computed at read time: skewless.feast_ext.live)."""
    names = {t.name for t in features.TABLES}
    return sorted((fv for fv in store.list_feature_views() if fv.name in names), key=lambda v: v.name)


def materialize(until: date, p: Profile | None = None) -> list[MaterializeResult]:
    """Load every feature view's rows with event time up to and including day ``until`` into the online store.

    Incremental: each view restarts from its last materialized end, or earlier if a build since then restated
    older rows (late commits), or from the start if the online store lost what it held (:func:`_online_lost`).
    Rows are stamped at UTC midnight; Feast's end bound is inclusive, so it is the last microsecond of day
    ``until`` (the next day's row must not be loaded).
    """
    from skewless.feast_ext.materialize import ONLINE_FEATURES, not_loaded_online, refuse_unservable

    p = p or profile()
    store = feature_store(p)
    built = features.built_through(p)
    end = _materialize_end(until)
    results = []
    views = batch_views(store)
    for fv in views:  # every view checked before any is loaded
        if built.get(fv.name) is None or built[fv.name] < until:
            raise lake.LakeError(f"feature view {fv.name} is built through {built.get(fv.name)}, not {until}; "
                                 f"run `skewless features build --until {until}` first")
        refuse_unservable(fv, lake.load_table(f"{FEATURES_NAMESPACE}.{fv.name}", p), None, end)
    for fv in views:
        table = lake.load_table(f"{FEATURES_NAMESPACE}.{fv.name}", p)
        snapshot = lake.snapshot_id(table)
        last_end = fv.most_recent_end_time
        if last_end is not None and last_end.tzinfo is None:
            last_end = last_end.replace(tzinfo=timezone.utc)
        restart = features.restart_day(table, p) if last_end else None
        start = EPOCH if last_end is None else min(last_end, restart or last_end)
        if last_end is not None and (not_loaded_online(fv, table) or _online_lost(store, fv, table, last_end)):
            start = EPOCH
        if start < end:
            log.info("materializing %s [%s, %s]", fv.name, start, end)
            with terminal.library_output():  # Feast's own "Materializing ..." lines: the result says it
                store.materialize(start_date=start, end_date=end, feature_views=[fv.name])
            results.append(MaterializeResult(fv.name, start, end))
        if end >= _materialize_end(built[fv.name]):
            # Everything this snapshot holds is now online: later restatements are measured from here.
            with table.transaction() as tx:
                tx.set_properties({f"{features.ONLINE_SNAPSHOT}.{p.name}": str(snapshot),
                                   f"{ONLINE_FEATURES}.{p.name}": ",".join(f.name for f in fv.features)})
    return results
