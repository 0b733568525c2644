"""Local-profile Feast plugins that keep the registry and the online DB inside ``SKEWLESS_HOME``.

Feast resolves relative paths against the feature repository, which would make every home share one registry
and one online DB. These two thin subclasses resolve them against the profile's home instead, so
``FeatureStore(repo_path="feature_repo")`` finds the state of the active home with no environment variable set.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Literal

from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.infra.registry.file import FileRegistryStore
from feast.repo_config import RegistryConfig
from pydantic import model_validator

from skewless.core.config import profile
from skewless.feast_ext.live import LiveReadMixin
from skewless.feast_ext.ttl import TtlOnlineReadMixin


def _home_path(relative: str) -> Path:
    p = profile()
    if p.name != "local":
        raise ValueError(
            f"SKEWLESS_ENV={p.name} but Feast loaded the local profile's feature_store.yaml; point Feast at "
            f"{p.feature_store_yaml} (`eval \"$(skewless env)\"` sets FEAST_FS_YAML_FILE_PATH) or use "
            "skewless.ops.feast_ops.feature_store()"
        )
    path = Path(relative)
    return path if path.is_absolute() else p.home / path


class HomeRegistryStore(FileRegistryStore):
    """Feast's file registry store, with a relative ``path`` resolved inside ``SKEWLESS_HOME``."""

    def __init__(self, registry_config: RegistryConfig, repo_path: Path):
        super().__init__(registry_config, repo_path)
        self._filepath = _home_path(registry_config.path)
        self._filepath.parent.mkdir(parents=True, exist_ok=True)


class HomeSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """SQLite online store config whose relative ``path`` lives inside ``SKEWLESS_HOME``."""

    type: Literal["skewless.feast_ext.home.HomeSqliteOnlineStore"] = "skewless.feast_ext.home.HomeSqliteOnlineStore"

    @model_validator(mode="after")
    def _resolve_in_home(self):
        resolved = _home_path(self.path)
        resolved.parent.mkdir(parents=True, exist_ok=True)
        object.__setattr__(self, "path", str(resolved))
        return self


def _sqlite_timestamp(val: bytes) -> datetime:
    """Decode a SQLite ``timestamp`` column: Feast writes epoch seconds, ISO text is accepted too.

    sqlite3 converters are process-global: IPython's history (a notebook, nbclient, an MLflow run inside Jupyter)
    registers an ISO-only ``timestamp`` converter that makes Feast's SQLite reads fail with "Invalid isoformat
    string: '1765756800'". This converter reads both forms, so neither library breaks the other.
    """
    text = val.decode()
    return datetime.fromtimestamp(int(text)) if text.lstrip("-").isdigit() else datetime.fromisoformat(text)


class HomeSqliteOnlineStore(LiveReadMixin, TtlOnlineReadMixin, SqliteOnlineStore):
    """Feast's SQLite online store whose reads honour the view's TTL like offline reads
    (:mod:`skewless.feast_ext.ttl`); the config resolves its path."""

    def _get_conn(self, config):
        sqlite3.register_converter("timestamp", _sqlite_timestamp)
        return super()._get_conn(config)
