"""Distribution tests of served features against a reference sample: KS and PSI per feature."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from skewless.ops.online import SkewError

PSI_ALERT = 0.2
KS_ALPHA = 0.01
KS_MIN_STATISTIC = 0.1
PSI_BINS = 10
_PSI_EPS = 1e-4


def psi(reference: Sequence[float], served: Sequence[float], bins: int = PSI_BINS) -> float:
    """Population stability index of ``served`` against ``reference``.

    Bins are the reference's quantiles (ties merged, so discrete features get fewer bins); nulls form a bin of
    their own, so a change in the null rate counts too. Empty bins get a small floor instead of a log of zero.
    """
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(served, dtype=float)
    if len(ref) == 0 or len(cur) == 0:
        raise SkewError("PSI needs a non-empty reference and a non-empty served sample")
    ref_ok = ref[~np.isnan(ref)]
    edges = np.unique(np.quantile(ref_ok, np.linspace(0, 1, bins + 1)[1:-1])) if len(ref_ok) else np.array([])

    def shares(x: np.ndarray) -> np.ndarray:
        nulls = np.isnan(x)
        counts = np.bincount(np.searchsorted(edges, x[~nulls], side="right"), minlength=len(edges) + 1)
        return np.append(counts, nulls.sum()) / len(x)

    e, a = np.maximum(shares(ref), _PSI_EPS), np.maximum(shares(cur), _PSI_EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def ks(reference: Sequence[float], served: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic and p-value over the non-null values (nan, nan if either is empty)."""
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(served, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return math.nan, math.nan
    res = ks_2samp(ref, cur)
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class DistributionCheck:
    """KS and PSI of one feature: served sample against a reference sample."""

    feature: str
    n_reference: int
    n_served: int
    ks_statistic: float
    ks_pvalue: float
    psi: float

    @property
    def flagged(self) -> bool:
        """PSI at or above :data:`PSI_ALERT`, or a KS test significant at :data:`KS_ALPHA` with a material
        statistic (>= :data:`KS_MIN_STATISTIC`: large samples make tiny, harmless differences significant)."""
        ks_hit = (not math.isnan(self.ks_pvalue) and self.ks_pvalue < KS_ALPHA
                  and self.ks_statistic >= KS_MIN_STATISTIC)
        return self.psi >= PSI_ALERT or ks_hit


def distribution_checks(reference: pd.DataFrame, served: pd.DataFrame, features: Sequence[str]
                        ) -> list[DistributionCheck]:
    """KS and PSI of every feature in ``features``: ``served`` rows against ``reference`` rows."""
    out = []
    for f in features:
        r = pd.to_numeric(reference[f], errors="coerce").to_numpy(dtype=float)
        s = pd.to_numeric(served[f], errors="coerce").to_numpy(dtype=float)
        stat, p = ks(r, s)
        out.append(DistributionCheck(f, len(r), len(s), stat, p, psi(r, s)))
    return out
