"""Freshness of every feature view, as the online store serves it: what monitoring exports and the DAG publishes.

For each feature view of the Feast registry this module gathers

* its freshness SLO, declared next to the view as tags (``freshness_slo_seconds``, ``freshness_objective``,
  ``freshness_window_days``, ``schedule``) and read back from the registry;
* the event time of the newest value the ONLINE store returns (read through ``get_online_features`` with event
  timestamps for every entity of the view: the age of the data served, not the time a job ran);
* the last day built offline (``skewless.built-through`` of its Iceberg table) and the last day materialized
  online (Feast's materialization intervals);
* when materialization last succeeded and the last parity check, which the pipeline records here
  (:func:`record_materialization`, :func:`record_parity`) as properties of the view's Iceberg feature table, per
  profile, beside ``skewless.built-through`` and ``skewless.online-snapshot``. The catalog is shared by every
  process of a deployment (PostgreSQL in production), so an exporter on another host reads what the DAG wrote.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Iterable, Mapping

from skewless import features, lake
from skewless.core.config import FEATURES_NAMESPACE, Profile, profile
from skewless.ops import feast_ops
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

    from skewless.ops.parity import ViewParity

log = logging.getLogger(__name__)

#: Tags of a feature view that declare its freshness SLO (see ``feature_repo/*_features.py``).
SLO_TAG = "freshness_slo_seconds"
OBJECTIVE_TAG = "freshness_objective"
WINDOW_TAG = "freshness_window_days"
SCHEDULE_TAG = "schedule"
SCHEDULES = {"hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}

#: Iceberg table properties (suffixed with ``.<profile>``) this module records.
MATERIALIZED_AT = "skewless.monitor.materialized-at"
PARITY = "skewless.monitor.parity"

#: Entities per online read call.
ONLINE_BATCH = 5000
COMMIT_RETRIES = 5


class FreshnessError(SkewlessError, ValueError):
    """A feature view's freshness declaration is missing or malformed (the message names view and tag)."""


@dataclass(frozen=True)
class FreshnessSLO:
    """A view's freshness objective: ``objective`` of the time over ``window_days``, served values are younger
    than ``max_age_seconds`` (event time)."""

    max_age_seconds: float
    objective: float
    window_days: float
    schedule_seconds: float

    @property
    def window_seconds(self) -> float:
        return self.window_days * 86400.0


def _tag(fv: "FeatureView", name: str) -> str:
    value = (fv.tags or {}).get(name)
    if value is None or not str(value).strip():
        raise FreshnessError(f"feature view {fv.name} declares no tag {name!r}; every view declares its freshness "
                             f"SLO next to its definition ({SLO_TAG}, {OBJECTIVE_TAG}, {WINDOW_TAG}, {SCHEDULE_TAG})")
    return str(value).strip()


def _positive(fv: "FeatureView", name: str) -> float:
    raw = _tag(fv, name)
    try:
        value = float(raw)
    except ValueError:
        raise FreshnessError(f"feature view {fv.name}: tag {name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise FreshnessError(f"feature view {fv.name}: tag {name}={raw!r} must be a positive number")
    return value


def slo_of(fv: "FeatureView") -> FreshnessSLO:
    """The freshness SLO a view declares in its tags; :class:`FreshnessError` names a missing or bad tag."""
    objective = _positive(fv, OBJECTIVE_TAG)
    if objective >= 1:
        raise FreshnessError(f"feature view {fv.name}: tag {OBJECTIVE_TAG}={objective} must be below 1 "
                             "(a ratio such as 0.99; 1 leaves no error budget)")
    schedule = _tag(fv, SCHEDULE_TAG)
    if schedule not in SCHEDULES:
        raise FreshnessError(f"feature view {fv.name}: tag {SCHEDULE_TAG}={schedule!r} is not one of "
                             f"{', '.join(SCHEDULES)}")
    return FreshnessSLO(_positive(fv, SLO_TAG), objective, _positive(fv, WINDOW_TAG), SCHEDULES[schedule])


@dataclass(frozen=True)
class ParityRecord:
    """The last online/offline parity check of a view, as recorded by :func:`record_parity`."""

    checked_at: datetime
    as_of: datetime
    entities: int
    mismatches: Mapping[str, int]

    def ratio(self, feature: str) -> float:
        """Share of the checked entities whose online value of ``feature`` differs from the offline one."""
        return self.mismatches.get(feature, 0) / self.entities if self.entities else 0.0

    def to_json(self) -> str:
        return json.dumps({"checked_at": self.checked_at.isoformat(), "as_of": self.as_of.isoformat(),
                           "entities": self.entities, "mismatches": dict(sorted(self.mismatches.items()))})

    @classmethod
    def from_json(cls, raw: str) -> "ParityRecord":
        d = json.loads(raw)
        return cls(datetime.fromisoformat(d["checked_at"]), datetime.fromisoformat(d["as_of"]), int(d["entities"]),
                   {k: int(v) for k, v in d["mismatches"].items()})


@dataclass(frozen=True)
class ViewStatus:
    """Everything monitoring knows about one feature view at one instant (``observed_at``)."""

    project: str
    feature_view: str
    slo: FreshnessSLO
    observed_at: datetime
    #: Event time of the newest value the online store returned (None: no entity has a value online).
    online_newest_event: datetime | None = None
    #: Entities with a value online / entities the offline table knows.
    online_entities: int = 0
    entities: int = 0
    #: Why the online store could not be read (None: it was read).
    online_error: str | None = None
    #: Last UTC day whose rows are built offline / loaded online (None: never).
    built_through: date | None = None
    materialized_through: date | None = None
    last_materialization: datetime | None = None
    parity: ParityRecord | None = None
    features: tuple[str, ...] = field(default_factory=tuple)
    #: One line per declared feature without values: no column offline, a history never computed, not registered,
    #: or no value online for any entity (ADR 0019).
    feature_problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def online_age_seconds(self) -> float | None:
        """Event-time age of the newest online value at ``observed_at``."""
        if self.online_newest_event is None:
            return None
        return (self.observed_at - self.online_newest_event).total_seconds()

    @property
    def materialization_lag_seconds(self) -> float | None:
        """How far the online store trails the offline tables (0: everything built is online)."""
        if self.built_through is None:
            return None
        if self.materialized_through is None:
            return math.inf
        return max(0.0, (self.built_through - self.materialized_through).days * 86400.0)


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _table_def(name: str) -> features.FeatureTable:
    for t in features.TABLES:
        if t.name == name:
            return t
    raise FreshnessError(f"feature view {name} has no feature table in skewless.features.TABLES")


def _set_properties(table_name: str, props: Mapping[str, str], p: Profile) -> None:
    """Set properties on a feature table, re-reading and retrying when another writer committed first."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(1, COMMIT_RETRIES + 1):
        table = lake.load_table(f"{FEATURES_NAMESPACE}.{table_name}", p)
        try:
            with table.transaction() as tx:
                tx.set_properties(dict(props))
            return
        except CommitFailedException as e:
            log.warning("property commit conflict on %s (attempt %d/%d): %s", table_name, attempt, COMMIT_RETRIES, e)
            time.sleep(0.05 * attempt)
    raise lake.LakeError(f"could not record monitoring state on {table_name} after {COMMIT_RETRIES} attempts")


def record_materialization(views: Iterable[str] | None = None, at: datetime | None = None,
                           p: Profile | None = None) -> datetime:
    """Record that materialization of ``views`` (default: every feature table) succeeded at ``at`` (default: now).

    Called after :func:`skewless.ops.feast_ops.materialize` returns, also when it had nothing new to load: the
    metric is "the last time the online store was confirmed up to date", which is what the stuck alert needs.
    """
    p = p or profile()
    at = _utc(at or datetime.now(timezone.utc))
    for name in views if views is not None else [t.name for t in features.TABLES]:
        _set_properties(name, {f"{MATERIALIZED_AT}.{p.name}": at.isoformat()}, p)
    return at


def record_parity(results: "Iterable[ViewParity]", at: datetime | None = None,
                  p: Profile | None = None) -> list[ParityRecord]:
    """Record the outcome of :func:`skewless.ops.parity.check` per view, so the exporter can serve it between checks."""
    p = p or profile()
    at = _utc(at or datetime.now(timezone.utc))
    out = []
    for r in results:
        rec = ParityRecord(at, _utc(r.as_of), r.entities, dict(r.mismatches))
        _set_properties(r.feature_view, {f"{PARITY}.{p.name}": rec.to_json()}, p)
        out.append(rec)
    return out


class FreshnessReader:
    """Reads :class:`ViewStatus` for every view; keeps its FeatureStore and catalog between calls (one exporter).

    The entity list of a view is read from its Iceberg feature table and cached per table snapshot, so repeated
    reads only cost the online lookups.
    """

    def __init__(self, p: Profile | None = None, store: "FeatureStore | None" = None):
        self.profile = p or profile()
        self._store = store
        self._catalog = None
        self._entities: dict[str, tuple[int | None, list[str]]] = {}

    @property
    def store(self) -> "FeatureStore":
        if self._store is None:

            self._store = feast_ops.feature_store(self.profile)
        return self._store

    def _table(self, name: str):
        from pyiceberg.exceptions import NoSuchTableError

        if self._catalog is None:
            self._catalog = lake.catalog(self.profile)
        try:
            return self._catalog.load_table(f"{FEATURES_NAMESPACE}.{name}")
        except NoSuchTableError:
            return None

    def _entity_keys(self, table, key: str) -> list[str]:
        name = ".".join(table.name())
        snap = lake.snapshot_id(table)
        cached = self._entities.get(name)
        if cached is not None and cached[0] == snap:
            return cached[1]
        keys = [] if snap is None else sorted(set(table.scan(selected_fields=(key,)).to_arrow()[key].to_pylist()))
        self._entities[name] = (snap, keys)
        return keys

    def _newest_online(self, fv: "FeatureView", key: str,
                       keys: list[str]) -> tuple[datetime | None, int, dict[str, int]]:
        """Newest event time among the online values of ``keys``, how many of them have a value online, and per
        feature how many of those hold a non-null value."""
        from feast.online_response import TIMESTAMP_POSTFIX

        names = [f.name for f in fv.features]
        feature = names[0]
        newest, present = 0, 0
        values = dict.fromkeys(names, 0)
        for i in range(0, len(keys), ONLINE_BATCH):
            rows = [{key: k} for k in keys[i:i + ONLINE_BATCH]]
            resp = self.store.get_online_features(features=[f"{fv.name}:{n}" for n in names], entity_rows=rows)
            got = resp.to_dict(include_event_timestamps=True)
            stamps = got[feature + TIMESTAMP_POSTFIX]
            seen = [s for s in stamps if s]  # an entity with no online row has a zero timestamp
            present += len(seen)
            newest = max([newest, *seen])
            for n in names:
                values[n] += sum(1 for v, s in zip(got[n], stamps) if s and v is not None)
        return (datetime.fromtimestamp(newest, timezone.utc) if newest else None), present, values

    @staticmethod
    def _feature_problems(fv: "FeatureView", tdef: features.FeatureTable, table,
                          online_values: dict[str, int], present: int) -> tuple[str, ...]:
        """Declared features (the definitions' and the registered view's) that have no column or no values."""
        from skewless.feast_ext.materialize import unservable_features

        if table is None:
            return ()
        out = []
        registered = {f.name for f in fv.features}
        columns = {f.name for f in table.schema().fields}
        for f in tdef.features:
            if f.name in registered:
                continue
            if f.name not in columns:
                out.append(f"feature {f.name} is declared in skewless.features.definitions but {table.name()[-1]}'s "
                           f"Iceberg table has no column {f.name}: run `skewless features build`, then `skewless "
                           "apply` and `skewless materialize`")
            else:
                out.append(f"feature {f.name} is declared in skewless.features.definitions but not registered in "
                           f"feature view {fv.name}: run `skewless apply`, then `skewless materialize`")
        offline = unservable_features(fv, table)
        out += offline.values()
        nullable = {f.name for f in tdef.features if f.nullable}
        for name, n in online_values.items():
            if present and not n and name not in nullable and name not in offline:
                out.append(f"feature {fv.name}:{name}: none of the {present} entities with a row online has a value "
                           "for it: run `skewless materialize`")
        return tuple(out)

    def status(self, now: datetime | None = None) -> list[ViewStatus]:
        """The status of every feature view, sorted by name. A view with a bad SLO declaration raises."""
        p = self.profile
        out = []
        for fv in feast_ops.batch_views(self.store):
            slo = slo_of(fv)
            tdef = _table_def(fv.name)
            table = self._table(fv.name)
            props = table.properties if table is not None else {}
            built = props.get(features.BUILT_THROUGH)
            mat_at = props.get(f"{MATERIALIZED_AT}.{p.name}")
            parity = props.get(f"{PARITY}.{p.name}")
            newest, present, keys, error, online_values = None, 0, [], None, {}
            try:
                keys = self._entity_keys(table, tdef.entity_key) if table is not None else []
                newest, present, online_values = self._newest_online(fv, tdef.entity_key, keys)
            except Exception as e:  # noqa: BLE001 - an unreachable online store is a reading, not a crash
                error = f"{type(e).__name__}: {e}"
                log.warning("online store read for %s failed: %s", fv.name, error)
            out.append(ViewStatus(
                project=self.store.project,
                feature_view=fv.name,
                slo=slo,
                observed_at=_utc(now or datetime.now(timezone.utc)),
                online_newest_event=newest,
                online_entities=present,
                entities=len(keys),
                online_error=error,
                built_through=date.fromisoformat(built) if built else None,
                materialized_through=feast_ops.materialized_through(fv),
                last_materialization=datetime.fromisoformat(mat_at) if mat_at else None,
                parity=ParityRecord.from_json(parity) if parity else None,
                features=tuple(f.name for f in fv.features),
                feature_problems=self._feature_problems(fv, tdef, table, online_values, present),
            ))
        return out


def status(p: Profile | None = None, store: "FeatureStore | None" = None,
           now: datetime | None = None) -> list[ViewStatus]:
    """One-shot :meth:`FreshnessReader.status`."""
    return FreshnessReader(p, store).status(now)
