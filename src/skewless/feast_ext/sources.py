"""The Iceberg source of the feature repository, with a registry proto that depends on its definition only.

Feast stamps every ``DataSource`` with the time it was constructed (``created_timestamp``), and ``apply`` stamps
the registered object with the time of the apply (``last_updated_timestamp``); both go into the source's proto,
also where it is embedded in a feature view. Once a view has been materialized, ``feast plan`` compares the
view's spec field by field (its materialization intervals make the views unequal), so the embedded source's
stamps made every plan of an unchanged repository report "Updated feature view" for every view, hiding real
changes. This source leaves those stamps out of its proto; the feature views keep their own created/updated times.
The proto still names Feast's ``IcebergSource`` class, so the registry reads back a plain ``IcebergSource``.
"""

from __future__ import annotations

from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource
from feast.protos.feast.core.DataSource_pb2 import DataSource as DataSourceProto


class DefinedIcebergSource(IcebergSource):
    """Feast's ``IcebergSource`` whose proto carries no construction or apply time (module docstring)."""

    def _set_timestamps_in_proto(self, data_source_proto: DataSourceProto) -> None:
        data_source_proto.ClearField("meta")
