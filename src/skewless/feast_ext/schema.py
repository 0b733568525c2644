"""Feast schema of a feature table, derived from its one definition in :mod:`skewless.features`."""

from __future__ import annotations

import pyarrow as pa
from feast import Field
from feast.types import Float64, Int64, String

from skewless.features.definitions import FeatureTable, LiveTable, ServiceFeatures

_FEAST_TYPES = {pa.int64(): Int64, pa.float64(): Float64, pa.string(): String}


def fields_of(table: FeatureTable | LiveTable) -> list[Field]:
    """The Feast fields of a feature table (its features, with their descriptions)."""
    return [Field(name=f.name, dtype=_FEAST_TYPES[f.arrow_type], description=f.description) for f in table.features]


def projections(service: ServiceFeatures, *views) -> list:
    """The Feast projections of a service's listed features (``view[[name, ...]]``), from the declared views."""
    by_name = {v.name: v for v in views}
    missing = [t.name for t, _ in service.views if t.name not in by_name]
    if missing:
        raise ValueError(f"feature service {service.name} needs the view(s) {', '.join(missing)}; "
                         f"got {', '.join(sorted(by_name)) or 'none'}")
    for table, names in service.views:
        declared = [f.name for f in by_name[table.name].features]
        unknown = [n for n in names if n not in declared]
        if unknown:  # Feast's own error would name neither the service nor the fix
            raise ValueError(f"feature service {service.name} lists {', '.join(unknown)}, which feature view "
                             f"{table.name} in feature_repo/ does not declare: remove it from the service's list "
                             "(a service in use keeps its features: put the change in a new service, ADR 0020)")
    return [by_name[t.name][list(names)] for t, names in service.views]
