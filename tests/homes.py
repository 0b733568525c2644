"""In-process access to one local ``SKEWLESS_HOME`` from a test (the helpers' shared environment switch)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pytest

from skewless.core import config


@contextlib.contextmanager
def exported(home: Path) -> Iterator[None]:
    """The local profile on ``home`` plus the Feast variables it exports, for plain ``FeatureStore(...)`` calls;
    the environment is restored on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKEWLESS_ENV", "local")
        mp.setenv("SKEWLESS_HOME", str(home))
        mp.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
        for k, v in config.profile().feast_env().items():
            mp.setenv(k, v)
        yield
