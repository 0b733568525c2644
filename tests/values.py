"""Comparing one feature value read back with the value expected: nulls (None, NaN) match only nulls, numbers match
within 1e-9 (relative or absolute)."""

from __future__ import annotations

import math


def same(a, b) -> bool:
    a_null = a is None or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
