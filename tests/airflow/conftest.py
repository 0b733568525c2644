"""Airflow tests: a throwaway AIRFLOW_HOME with a SQLite metadata DB, configured BEFORE airflow is imported.

Airflow reads its configuration when it is first imported, so the environment is set when this conftest loads
(before the test modules' ``pytest.importorskip("airflow.sdk")``), and only where Airflow is installed: the main
environment, which has no Airflow, is left untouched. The directory is removed at the end of the session.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from skewless.core import config

DAGS_FOLDER = config.PROJECT_ROOT / "dags"

def _airflow_installed() -> bool:
    """Airflow's distribution is installed (``find_spec("airflow")`` would also find this directory: tests/ is on
    sys.path and tests/airflow looks like a namespace package named airflow)."""
    try:
        importlib.metadata.distribution("apache-airflow-core")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if _airflow_installed():
    _AIRFLOW_HOME = Path(tempfile.gettempdir()) / f"skewless-airflow-tests-{os.getpid()}"
    os.environ.update({
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    })
else:  # pragma: no cover - main environment
    _AIRFLOW_HOME = None


@pytest.fixture(scope="session")
def airflow_db():
    """The migrated metadata DB (created once per session), removed with its AIRFLOW_HOME afterwards."""
    from airflow.utils import db

    db.initdb()
    yield _AIRFLOW_HOME
    if _AIRFLOW_HOME is not None:
        shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``item.rep_call``), for fixtures that print diagnostics on failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
