"""The Iceberg and push sources of the feature repository, with a registry proto that depends on its definition only.

Feast stamps every ``DataSource`` with the time it was constructed (``created_timestamp``; also when the registry
decodes one), and ``apply`` stamps the registered object with the time of the apply (``last_updated_timestamp``).
Both go into the source's proto, also where it is embedded in a feature view. Once a view has been materialized,
``feast plan`` compares the view's spec field by field (its materialization intervals make the views unequal), so
those stamps made every plan of an unchanged repository report "Updated feature view" for every view, hiding real
changes. This source's stamps are fixed at :data:`STAMP` (the Unix epoch: not tracked) and cannot be reassigned,
so the definition, the registered source and the view's copy of it encode identically; the feature views keep
their own created/updated times.

Feast writes a view's source class into the proto by module and name, and decodes any Iceberg source as its own
``IcebergSource``; this class therefore goes by Feast's module and name, so a decoded source (with the stamps read
back from the proto) encodes exactly like the definition.
"""

from __future__ import annotations

from datetime import datetime, timezone

from feast.data_source import PushSource
from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

#: The created and last-updated time of every :class:`DefinedIcebergSource`.
STAMP = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _FixedStamps:
    """Created/updated stamps that are :data:`STAMP`, whatever Feast assigns (module docstring)."""

    @property
    def created_timestamp(self) -> datetime:
        return STAMP

    @created_timestamp.setter
    def created_timestamp(self, value: datetime | None) -> None:
        """Feast's construction and apply stamps are ignored (module docstring)."""

    @property
    def last_updated_timestamp(self) -> datetime:
        return STAMP

    @last_updated_timestamp.setter
    def last_updated_timestamp(self, value: datetime | None) -> None:
        """Feast's construction and apply stamps are ignored (module docstring)."""


class DefinedIcebergSource(_FixedStamps, IcebergSource):
    """Feast's ``IcebergSource`` whose created/updated stamps are :data:`STAMP`."""


class DefinedPushSource(_FixedStamps, PushSource):
    """Feast's ``PushSource`` (the live view's stream) whose created/updated stamps are :data:`STAMP`."""


# Encoded as Feast's classes (module docstring): the registry holds no skewless class name.
for _ours, _feasts in ((DefinedIcebergSource, IcebergSource), (DefinedPushSource, PushSource)):
    _ours.__module__ = _feasts.__module__
    _ours.__name__ = _ours.__qualname__ = _feasts.__name__
