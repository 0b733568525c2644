"""Logged online fetches of a feature service: what the fetch-replay check (:mod:`serving.replay`) replays.

The predictor serves the model's own service (``next_week_commits_v1``); no model is trained on the fresh service
(``next_week_commits_live_v1``) yet. :class:`LoggedFetcher` is the online read path of any feature service, named
by the caller and resolved in the Feast registry (no feature name here), that logs every fetched row to the serving
log (:mod:`serving.feature_log`, under the service's name) with its **request time** T: the instant the online store
evaluated the answer at. For a live view that instant is stamped on its values (the event timestamp Feast returns,
exact to the microsecond: the windows were evaluated at it); a service without a live view gets the serving clock
read just before the fetch. ``skewless stream fetch REPO...`` is this path on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from serving.feature_log import FeatureLog
from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE, Profile, profile
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

MAX_ENTITIES = 1000


class FetchError(SkewlessError, ValueError):
    """A fetch that cannot be served (unknown service, no entity, too many): the message says which."""


@dataclass(frozen=True)
class Fetched:
    """One fetched row: the entity, the request time and the served features."""

    entity: str
    ts: datetime
    features: dict[str, Any]


def service_of(store: "FeatureStore", name: str) -> tuple["FeatureService", str, list[str]]:
    """The feature service ``name``, its one join key and its feature names (from the registry)."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        raise FetchError(f"feature service {name!r} is not in the Feast registry; run `skewless apply`") from None
    keys, names = set(), []
    for proj in service.feature_view_projections:
        fv = store.get_feature_view(proj.name)
        keys.update(proj.join_key_map.get(k, k) for k in fv.join_keys)
        names.extend(f.name for f in proj.features)
    if len(keys) != 1:
        raise FetchError(f"feature service {name!r} has join keys {sorted(keys)}; fetches are keyed by one entity")
    return service, keys.pop(), names


class LoggedFetcher:
    """Online fetches of one feature service, each row logged with its request time (see the module docstring)."""

    def __init__(self, service: str = NEXT_WEEK_COMMITS_LIVE_SERVICE, p: Profile | None = None,
                 store: "FeatureStore | None" = None, log: bool = True):
        self.p = p or profile()
        if store is None:
            from skewless.ops.feast_ops import feature_store

            store = feature_store(self.p)
        self.store = store
        self.service, self.join_key, self.feature_names = service_of(store, service)
        self.log = FeatureLog(service, self.p) if log else None

    def fetch(self, entities: list[str]) -> list[Fetched]:
        from skewless.feast_ext.clock import serving_now

        if not entities:
            raise FetchError("no entity to fetch: name at least one")
        if len(entities) > MAX_ENTITIES:
            raise FetchError(f"{len(entities)} entities exceed the limit of {MAX_ENTITIES} per fetch; split them")
        before = serving_now()
        response = self.store.get_online_features(features=self.service,
                                                  entity_rows=[{self.join_key: e} for e in entities])
        values = response.to_dict()
        # The request time of each row: the newest event timestamp on its values, if later than the clock before
        # the read (a live view stamps its values with the instant it evaluated them at), else that clock.
        stamps = [before] * len(entities)
        for vector in response.proto.results:
            for i, ts in enumerate(vector.event_timestamps):
                if ts.seconds or ts.nanos:
                    at = ts.ToDatetime(tzinfo=timezone.utc)
                    if at > stamps[i]:
                        stamps[i] = at
        rows = [Fetched(e, stamps[i], {n: values[n][i] for n in self.feature_names}) for i, e in enumerate(entities)]
        if self.log is not None:
            # one write per request time (a single read: one instant per live view)
            for at in sorted(set(stamps)):
                self.log.write(({"feature_service": self.service.name, "kind": "fetch", self.join_key: r.entity,
                                 "features": r.features}
                                for r in rows if r.ts == at), now=at)
        return rows
