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


# --- the groups the README promises: code, data, model, integration (`pytest -m data`, `make test PYTEST_ARGS=...`) ---
TEST_GROUPS: dict[str, tuple[str, ...]] = {
    # the code itself: contracts, docs, pure functions; no lake, no server
    "code": ("test_adrs.py", "test_layers.py", "test_readme.py", "test_guard.py", "test_trees.py",
             "test_online_response.py"),
    # what the data means: reference semantics, ingest rules, build, offline answers, the fresh path's rule
    "data": ("test_reference.py", "test_semantics.py", "test_build.py", "test_ingest.py", "test_gitsource.py",
             "test_lake_truth.py", "test_offline_store.py", "test_offline_conformance.py", "test_fresh.py",
             "test_stream_consistency.py",
             "test_bad_input.py", "test_lake_faults.py"),
    # models: training through Feast, the drills, the notebook
    "model": ("test_training.py", "test_skew_drill.py", "test_notebook.py"),
    # whole paths with their servers and commands: CLI, Feast CLI, serving, Redis/Postgres/NATS, Airflow, Spark
    "integration": ("test_contract.py", "test_feast_cli.py", "test_feature_guard.py", "test_bench.py",
                    "test_lineage.py", "test_monitoring.py", "test_nats_log.py", "test_redis_cluster.py",
                    "test_runbooks.py", "test_serving.py", "test_spark.py", "test_status.py", "test_terminal.py",
                    "test_security.py", "test_materialize_faults.py", "test_predictor_faults.py",
                    "test_ttl_parity.py", "test_dag_integrity.py", "test_daily_dag.py", "test_scheduler.py",
                    "test_stream_consistency_dag.py",
                    "test_stream_metrics.py", "test_adding_a_feature.py"),
}
_GROUP_OF = {name: group for group, names in TEST_GROUPS.items() for name in names}


def pytest_collection_modifyitems(config, items):
    """Mark every test with its group; a test file in no group (or in two) is an error, so the groups stay whole."""
    assert len(_GROUP_OF) == sum(map(len, TEST_GROUPS.values())), "a test file is listed in two groups"
    for item in items:
        name = item.path.name
        if name not in _GROUP_OF:
            raise pytest.UsageError(f"{item.path} is in no test group: add it to TEST_GROUPS in tests/conftest.py "
                                    "(code, data, model or integration)")
        item.add_marker(getattr(pytest.mark, _GROUP_OF[name]))
