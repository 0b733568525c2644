"""Feast schema of a feature table, derived from its one definition in :mod:`skewless.features`."""

from __future__ import annotations

import pyarrow as pa
from feast import Field
from feast.types import Float64, Int64, String

from skewless.features.definitions import FeatureTable, LiveTable

_FEAST_TYPES = {pa.int64(): Int64, pa.float64(): Float64, pa.string(): String}


def fields_of(table: FeatureTable | LiveTable) -> list[Field]:
    """The Feast fields of a feature table (its features, with their descriptions)."""
    return [Field(name=f.name, dtype=_FEAST_TYPES[f.arrow_type], description=f.description) for f in table.features]
