"""Shared fixtures: every test gets its own SKEWLESS_HOME, so no test sees another's state."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewless.core import config
from skewless.data import SAMPLE_COMMITS

SAMPLE = SAMPLE_COMMITS
FULL = config.SHARED_COMMITS


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SKEWLESS_HOME on the local profile, exported the way the CLI exports it."""
    h = tmp_path / "home"
    monkeypatch.setenv("SKEWLESS_ENV", "local")
    monkeypatch.setenv("SKEWLESS_HOME", str(h))
    monkeypatch.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
    p = config.profile()
    for k, v in p.feast_env().items():
        monkeypatch.setenv(k, v)
    h.mkdir(parents=True)
    return h


@pytest.fixture(scope="session")
def sample_parquet() -> Path:
    return SAMPLE
