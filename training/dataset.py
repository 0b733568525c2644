"""The training set of next-week-commits: weekly labels joined with point-in-time features from Feast.

Rows are the observed ``(repo, Monday 00:00 UTC)`` weeks of :mod:`training.labels`. Features come from ONE call,
``store.get_historical_features(entity_df, features=<feature service>)``; the service is the caller's choice
(``skewless train --service NAME``; :data:`training.train.DEFAULT_SERVICE` by default) and the feature names come
from it, never from this code. Every Iceberg table read (``abukix.commits`` for the labels, the feature views'
tables through Feast) is read inside one :func:`skewless.lake.snapshots.pinned_snapshots` block, so the set records
the snapshot id of each, and passing those ids back as ``pins`` rebuilds the identical set later. The retrieval is
strict (:func:`skewless.feast_ext.retrieval.strict`): naive timestamps or weeks after the last built day are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Mapping

import pandas as pd

from skewless.feast_ext import pinned, retrieval
from skewless.lake import snapshots
from skewless.core.errors import SkewlessError
from training import labels as labels_mod
from training.labels import BASELINES, KEYS, LABEL

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

#: Default size of the evaluation split, in weeks.
TEST_WEEKS = 26


class DatasetError(SkewlessError, ValueError):
    """The training set cannot be built or split as asked (the message says why)."""


@dataclass(frozen=True)
class TrainingSet:
    """Examples with features, label and baselines, plus the provenance needed to rebuild them."""

    frame: pd.DataFrame  #: repo, event_timestamp, the service's features, label, baselines; sorted by keys
    feature_service: str
    feature_names: tuple[str, ...]
    #: the service's exact feature list: Feast reference ``view:feature`` -> Feast type, in the service's order
    features: dict[str, str]
    snapshots: dict[str, int | None]  #: every Iceberg table read -> the snapshot id read
    last_commit_day: pd.Timestamp | None = field(default=None)
    until: date | None = field(default=None)  #: the last UTC day of data used (None: all of it)

    @property
    def rows(self) -> pd.DataFrame:
        """The training rows proper (keys, features, label): what reproducibility compares."""
        return self.frame[KEYS + list(self.feature_names) + [LABEL]]


def feature_names(service: "FeatureService") -> list[str]:
    """The feature names a feature service serves, in the service's order."""
    names = [f.name for proj in service.feature_view_projections for f in proj.features]
    if len(set(names)) != len(names):
        raise DatasetError(f"feature service {service.name} serves duplicate feature names: {names}")
    return names


def service_features(service: "FeatureService") -> dict[str, str]:
    """A service's exact feature list: Feast reference ``view:feature`` -> Feast type, in the service's order (what
    a model version records, and what the feature guard and the predictor check it against)."""
    return {f"{proj.name_to_use()}:{f.name}": str(f.dtype)
            for proj in service.feature_view_projections for f in proj.features}


def service_of(store: "FeatureStore", name: str) -> "FeatureService":
    """The registered feature service ``name``, keyed by the examples' entity (``repo``); an unknown name is an error
    listing the registered services (or saying what to run when there are none)."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        if not known:
            raise DatasetError(f"feature service {name} is not registered (no service is); run `skewless apply` "
                               "first") from None
        raise DatasetError(f"feature service {name!r} is not registered; the registered services are: "
                           f"{', '.join(known)}") from None
    for proj in service.feature_view_projections:
        keys = {proj.join_key_map.get(k, k) for k in store.get_feature_view(proj.name).join_keys}
        if keys != {KEYS[0]}:
            raise DatasetError(f"feature service {name} reads view {proj.name}, keyed by {', '.join(sorted(keys))}; "
                               f"the model's examples are keyed by {KEYS[0]}: choose a service of {KEYS[0]} features")
    return service


def default_store() -> "FeatureStore":
    """The active profile's FeatureStore, with an offline store that honours snapshot pins."""
    from skewless.ops import feast_ops

    return pinned.pinnable(feast_ops.feature_store())


def historical_features(store: "FeatureStore", entity_df: pd.DataFrame, service_name: str) -> pd.DataFrame:
    """Point-in-time features of ``entity_df`` (repo, event_timestamp) from the feature service, keyed rows."""
    service = service_of(store, service_name)
    names = feature_names(service)
    out = store.get_historical_features(entity_df=entity_df[KEYS].copy(), features=service).to_df()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return out[KEYS + names]


def build(service_name: str, pins: Mapping[str, int] | None = None, store: "FeatureStore | None" = None,
          until: date | None = None) -> TrainingSet:
    """Build the training set of feature service ``service_name`` from the current snapshots, or from ``pins``
    (``namespace.table`` -> snapshot id).

    ``until``: use only the data of the UTC days through ``until`` (weeks that ended by then; their features are
    as of earlier Mondays), so a scheduled run is bounded by its data interval, never by the clock.
    """
    store = pinned.pinnable(store) if store is not None else default_store()
    # Strict retrieval: a week whose Monday lies after a table's last built day is refused, never trained on the
    # values of an earlier day (skewless.feast_ext.retrieval).
    with snapshots.pinned_snapshots(pins) as reads, retrieval.strict():
        labels = labels_mod.weekly_labels(until=until)
        if labels.frame.empty:
            raise DatasetError("no repository has an observed week yet (see training.labels: a week counts once "
                               "the repository has a commit on a later day)")
        service = service_of(store, service_name)
        names, refs = feature_names(service), service_features(service)
        feats = historical_features(store, labels.frame, service_name)
    read = reads.check()
    frame = labels.frame.merge(feats, on=KEYS, how="left", validate="one_to_one")
    if len(frame) != len(labels.frame):
        raise DatasetError("Feast returned a different number of rows than the entity dataframe")
    frame = frame.merge(labels_mod.label_baselines(labels.frame), on=KEYS, how="left", validate="one_to_one")
    frame = frame[KEYS + names + [LABEL] + list(BASELINES)].sort_values(KEYS).reset_index(drop=True)
    return TrainingSet(frame=frame, feature_service=service_name, feature_names=tuple(names), features=refs,
                       snapshots=read, last_commit_day=labels.last_commit_day, until=until)


# --- time split ---------------------------------------------------------------------------------------------------

def monday(value: pd.Timestamp | str) -> pd.Timestamp:
    """``value`` as a Monday 00:00 UTC, or a DatasetError saying why it is not one."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise DatasetError(f"cutoff {value!r} is not a date (YYYY-MM-DD)") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts.dayofweek != 0 or ts != ts.normalize():
        raise DatasetError(f"cutoff {value} is not a Monday 00:00 UTC (examples are weeks starting on Mondays)")
    return ts


def default_cutoff(frame: pd.DataFrame, test_weeks: int = TEST_WEEKS) -> pd.Timestamp:
    """The first Monday of the evaluation split: the last ``test_weeks`` observed Mondays are evaluated on."""
    if frame.empty:
        raise DatasetError("the training set is empty")
    return frame["event_timestamp"].max() - pd.Timedelta(weeks=test_weeks - 1)


def split(frame: pd.DataFrame, cutoff: pd.Timestamp | str | None = None) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                    pd.Timestamp]:
    """Split at ``cutoff`` (a Monday): train on weeks that END on or before it, evaluate on weeks starting at it.

    A training label's week never overlaps the evaluation period. Returns (train, test, cutoff).
    """
    cut = default_cutoff(frame) if cutoff is None else monday(cutoff)
    ts = frame["event_timestamp"]
    train = frame[ts + pd.Timedelta(weeks=1) <= cut]
    test = frame[ts >= cut]
    if train.empty or test.empty:
        raise DatasetError(f"cutoff {cut:%Y-%m-%d} leaves {len(train)} training and {len(test)} evaluation weeks "
                           f"(observed Mondays span {ts.min():%Y-%m-%d} to {ts.max():%Y-%m-%d})")
    return train.reset_index(drop=True), test.reset_index(drop=True), cut
