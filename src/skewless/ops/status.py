"""Where a deployment stands, in one read: the first command of every runbook (``skewless status``).

For each stage of the pipeline it prints the mark that stage leaves:

* ingest: the current snapshot of ``abukix.commits``;
* build: per feature table its current snapshot, the commits snapshot it was built from (a build is pending when
  that is not the current one) and its built-through day;
* materialize: per feature view the last day Feast loaded into the online store, the Iceberg snapshot it was
  loaded from, and the last materialization the pipeline recorded;
* online store: the event time of the newest value it serves (its age against the view's freshness SLO) and how
  many entities have a value;
* parity: the last recorded online/offline check.

The per-view readings are :mod:`skewless.ops.freshness`'s (the exporter's source), so this command and the alerts in
``monitoring/alerts.yaml`` read the same numbers. :func:`findings` turns them into one line per problem with the
runbook that handles it. Reading never changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from skewless import features, lake
from skewless.core.config import COMMITS_TABLE, Profile, profile

if TYPE_CHECKING:
    from feast import FeatureStore

    from skewless.ops.freshness import ViewStatus


@dataclass(frozen=True)
class TableState:
    """One Iceberg table's marks (all None when the table does not exist)."""

    identifier: str
    exists: bool
    snapshot_id: int | None = None
    committed_at: datetime | None = None
    #: Feature tables: the ``abukix.commits`` snapshot the last build read.
    built_from_commits: int | None = None
    #: Feature tables: the snapshot the online store of this profile was last fully loaded from.
    online_snapshot: int | None = None


@dataclass(frozen=True)
class Status:
    """A deployment's state at ``observed_at``: tables and feature views."""

    profile: str
    home: str
    feature_store_yaml: str
    observed_at: datetime
    commits: TableState
    tables: dict[str, TableState]
    views: list["ViewStatus"]


def _table_state(cat, identifier: str, p: Profile) -> TableState:
    from pyiceberg.exceptions import NoSuchTableError

    from skewless.features import ONLINE_SNAPSHOT

    try:
        t = cat.load_table(identifier)
    except NoSuchTableError:
        return TableState(identifier, exists=False)
    snap = t.current_snapshot()
    props = t.properties
    built_from = props.get(features.COMMITS_SNAPSHOT)
    online = props.get(f"{ONLINE_SNAPSHOT}.{p.name}")
    return TableState(
        identifier,
        exists=True,
        snapshot_id=snap.snapshot_id if snap else None,
        committed_at=datetime.fromtimestamp(snap.timestamp_ms / 1000, timezone.utc) if snap else None,
        built_from_commits=int(built_from) if built_from else None,
        online_snapshot=int(online) if online else None,
    )


def read(p: Profile | None = None, store: "FeatureStore | None" = None, now: datetime | None = None) -> Status:
    """Read the state of the profile's deployment (catalog, registry, online store); changes nothing."""
    from skewless.ops import freshness

    p = p or profile()
    cat = lake.catalog(p)
    views = freshness.status(p, store, now)
    return Status(
        profile=p.name,
        home=str(p.home),
        feature_store_yaml=str(p.feature_store_yaml),
        observed_at=views[0].observed_at if views else (now or datetime.now(timezone.utc)),
        commits=_table_state(cat, COMMITS_TABLE, p),
        tables={t.name: _table_state(cat, t.identifier, p) for t in features.TABLES},
        views=views,
    )


def findings(s: Status) -> list[str]:
    """One line per problem the marks show, naming the command or runbook that handles it (empty: none seen)."""
    out: list[str] = []
    if not s.commits.exists or s.commits.snapshot_id is None:
        out.append(f"{COMMITS_TABLE} holds no commits: run `skewless ingest`")
    for t in s.tables.values():
        if not t.exists:
            out.append(f"{t.identifier} does not exist: run `skewless features build`")
        elif s.commits.snapshot_id is not None and t.built_from_commits != s.commits.snapshot_id:
            out.append(f"{t.identifier} was built from commits snapshot {t.built_from_commits}, the current one is "
                       f"{s.commits.snapshot_id}: a build is pending (`skewless features build`)")
    if s.tables and not s.views:
        out.append("no feature view is registered: run `skewless apply`")
    for v in s.views:
        out += [f"{v.feature_view}: {problem}" for problem in v.feature_problems]
        if v.online_error:
            out.append(f"{v.feature_view}: the online store cannot be read ({v.online_error}); "
                       "runbooks/redis-online-store-stale.md")
            continue
        if v.built_through is not None and v.materialized_through is None:
            out.append(f"{v.feature_view}: never materialized; run `skewless materialize`")
        elif v.materialization_lag_seconds:
            out.append(f"{v.feature_view}: built through {v.built_through} but materialized through "
                       f"{v.materialized_through}; runbooks/feast-materialization-stuck.md")
        elif v.materialized_through is not None and v.online_entities < v.entities:
            out.append(f"{v.feature_view}: {v.entities - v.online_entities} of {v.entities} entities have no value "
                       "online although everything built is materialized; runbooks/redis-online-store-stale.md")
        if v.materialized_through is not None and v.online_newest_event is not None:
            behind = (features.day_start(v.materialized_through) - v.online_newest_event).total_seconds()
            if behind > v.slo.max_age_seconds:
                out.append(f"{v.feature_view}: the newest online value ({_when(v.online_newest_event)}) is "
                           f"{_hours(behind)} older than the last materialized day {v.materialized_through}; "
                           "runbooks/redis-online-store-stale.md")
        age = v.online_age_seconds
        if age is not None and age > v.slo.max_age_seconds:
            out.append(f"{v.feature_view}: the newest online value is {_hours(age)} old, its freshness SLO is "
                       f"{_hours(v.slo.max_age_seconds)}; runbooks/feature-freshness-slo-violation.md")
        if v.last_materialization is not None:
            since = (v.observed_at - v.last_materialization).total_seconds()
            if since > 1.5 * v.slo.schedule_seconds:
                out.append(f"{v.feature_view}: the last recorded materialization finished {_hours(since)} ago, "
                           f"its schedule is every {_hours(v.slo.schedule_seconds)}; "
                           "runbooks/feast-materialization-stuck.md")
        if v.parity is not None and any(v.parity.mismatches.values()):
            worst = max(v.parity.mismatches, key=lambda f: v.parity.mismatches[f])
            out.append(f"{v.feature_view}: the last parity check ({v.parity.checked_at:%Y-%m-%d %H:%M}Z) found "
                       f"mismatches (worst: {worst}, {v.parity.ratio(worst):.2%}); "
                       "runbooks/online-offline-parity-failed.md")
        elif v.parity is not None and \
                (v.observed_at - v.parity.checked_at).total_seconds() > 2 * v.slo.schedule_seconds:
            out.append(f"{v.feature_view}: parity was last checked {_when(v.parity.checked_at)}, more than two "
                       "schedule intervals ago; runbooks/online-offline-parity-failed.md")
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _when(ts: datetime | None) -> str:
    return "-" if ts is None else ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snap(t: TableState) -> str:
    if not t.exists:
        return "missing"
    return "no snapshot" if t.snapshot_id is None else f"snapshot {t.snapshot_id} ({_when(t.committed_at)})"


def render(s: Status) -> str:
    """The status as the text ``skewless status`` prints."""
    lines = [f"skewless status — profile {s.profile}, home {s.home}, observed {_when(s.observed_at)}",
             f"Feast yaml: {s.feature_store_yaml}", "",
             f"{s.commits.identifier:<25} {_snap(s.commits)}"]
    for t in s.tables.values():
        lines.append(f"{t.identifier:<25} {_snap(t)}")
        if t.exists:
            lines.append(f"{'':<25} built from commits snapshot {t.built_from_commits or '-'}, "
                         f"online loaded from snapshot {t.online_snapshot or '-'}")
    for v in s.views:
        if v.online_error:
            online, newest = f"unreadable: {v.online_error}", "-"
        else:
            online = f"{v.online_entities} of {v.entities} entities have a value"
            newest = _when(v.online_newest_event)
            if v.online_age_seconds is not None:
                newest += f" (age {_hours(v.online_age_seconds)}; freshness SLO {_hours(v.slo.max_age_seconds)})"
        parity = "-" if v.parity is None else (
            f"{_when(v.parity.checked_at)} as of {v.parity.as_of:%Y-%m-%d}, {v.parity.entities} entities, "
            f"mismatches {dict(v.parity.mismatches)}")
        lines += ["", f"feature view {v.feature_view}",
                  f"  built through          {v.built_through or '-'}",
                  f"  materialized through   {v.materialized_through or '-'}",
                  f"  online store           {online}",
                  f"  online newest event    {newest}",
                  f"  last materialization   {_when(v.last_materialization)}",
                  f"  last parity check      {parity}"]
    found = findings(s)
    lines += ["", "findings:"] + [f"  - {f}" for f in found or ["none"]]
    return "\n".join(lines)
