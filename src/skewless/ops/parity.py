"""Online/offline parity: the online store must return exactly what a point-in-time offline read returns.

For sampled entities of every feature view, read the online values (``get_online_features``) and the offline
values (``get_historical_features``) at the timestamp the online store was loaded through, and count the
mismatches per feature. Any mismatch is train/serve skew.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from skewless import features, lake
from skewless.ops import online
from skewless.core.config import FEATURES_NAMESPACE, Profile, profile

FLOAT_TOLERANCE = 1e-9


@dataclass
class ViewParity:
    feature_view: str
    as_of: datetime
    entities: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    #: Declared features with no column or no values offline (feature -> why): not compared, and not ok (ADR 0019).
    without_values: dict[str, str] = field(default_factory=dict)

    def ratio(self, feature: str) -> float:
        return self.mismatches.get(feature, 0) / self.entities if self.entities else 0.0

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values()) and not self.without_values


def same(a, b) -> bool:
    """Equal as parity judges values: nulls (None, NaN, NA) equal each other, floats within FLOAT_TOLERANCE."""
    a_null = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NA
    b_null = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA
    if a_null or b_null:
        return a_null and b_null
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    return a == b


def check(sample: int | None = 200, seed: int = 0, p: Profile | None = None, store=None,
          online_reader=None) -> list[ViewParity]:
    """Compare online and offline values for up to ``sample`` entities per view (None: every entity).

    ``online_reader(store, features, entity_rows) -> {column: [values]}`` (:mod:`skewless.drills.skew`) replaces the online read (the skew drill uses it
    to inject a serving-side skew); by default it is ``store.get_online_features(...).to_df()``.
    """
    from skewless.feast_ext.materialize import unservable_features
    from skewless.feast_ext.ttl import serving_clock
    from skewless.ops.feast_ops import batch_views, feature_store

    p = p or profile()
    store = store or feature_store(p)
    rng = random.Random(seed)
    results = []
    for fv in batch_views(store):
        as_of = online.online_as_of(fv)
        if as_of is None:
            raise lake.LakeError(f"feature view {fv.name} was never materialized; run `skewless materialize`")
        table = next(t for t in features.TABLES if t.name == fv.name)
        key = table.entity_key
        ft = lake.load_table(f"{FEATURES_NAMESPACE}.{fv.name}", p)
        entities = sorted(set(ft.scan(selected_fields=(key,)).to_arrow()[key].to_pylist()))
        if sample is not None and len(entities) > sample:
            entities = sorted(rng.sample(entities, sample))
        # Online and offline would agree on null for a feature that has no values at all: that is no parity.
        without = unservable_features(fv, ft)
        names = [f.name for f in fv.features if f.name not in without]
        refs = [f"{fv.name}:{n}" for n in names]
        rows = [{key: e} for e in entities]
        if not names:
            results.append(ViewParity(fv.name, as_of, len(entities), without_values=without))
            continue
        with serving_clock(as_of):  # online and offline at the same time (TTL expiry included)
            if online_reader is None:
                online_df = store.get_online_features(features=refs, entity_rows=rows).to_df()
            else:
                online_df = pd.DataFrame(online_reader(store, refs, rows))
        entity_df = pd.DataFrame({key: entities, "event_timestamp": pd.Timestamp(as_of)})
        offline = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        on = online_df.set_index(key)[names]
        off = offline.set_index(key)[names]
        res = ViewParity(fv.name, as_of, len(entities), without_values=without)
        for e in entities:
            for n in names:
                a, b = on.at[e, n], off.at[e, n]
                if not same(a, b):
                    res.mismatches[n] = res.mismatches.get(n, 0) + 1
                    if len(res.examples) < 10:
                        res.examples.append({"entity": e, "feature": n, "online": a, "offline": b})
        for n in names:
            res.mismatches.setdefault(n, 0)
        results.append(res)
    return results


def report(results: list[ViewParity]) -> str:
    lines = ["feature_view        feature                           entities  mismatch_ratio"]
    for r in results:
        for n, _ in sorted(r.mismatches.items()):
            lines.append(f"{r.feature_view:<19} {n:<33} {r.entities:>8}  {r.ratio(n):.4f}")
        for ex in r.examples:
            lines.append(f"  mismatch: {ex}")
        for why in r.without_values.values():
            lines.append(f"  no values: {why}")
    verdict = "PARITY OK" if all(r.ok for r in results) else "PARITY FAILED"
    as_of = ", ".join(f"{r.feature_view} as of {r.as_of:%Y-%m-%d}" for r in results)
    lines.append(f"{verdict} ({as_of})")
    return "\n".join(lines)
