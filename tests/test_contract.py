"""The contract other checks rely on (README "Contract"), run exactly as a user would, in both profiles.

``skewless ingest X.parquet && skewless features build --until DAY && skewless apply``, then plain Feast in a fresh
Python process: historical values for any T before DAY + 1 day, and after ``skewless materialize --until DAY``
online values as of DAY. The local profile runs with no server reachable at all.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from skewless.core.config import FEATURE_REPO, PROJECT_ROOT

SKEWLESS = [sys.executable, "-m", "skewless.cli"]
DAY = "2026-06-30"

PROBE = r"""
import json, sys
import pandas as pd
from feast import FeatureStore
store = FeatureStore(repo_path=sys.argv[1])
refs = ["repo_activity:commits_last_7d", "repo_activity:commits_last_30d", "repo_activity:days_since_last_commit",
        "author_activity:commits_total"]
entity_df = pd.DataFrame({
    "repo": ["spf13/cobra", "spf13/cobra", "encode/httpx"],
    "author_id": ["a_1d4d4e2b9a66"] * 3,
    "event_timestamp": pd.to_datetime(["2026-06-30 23:59:59", "2026-07-01 00:00:00", "2026-06-30 08:00:00"], utc=True),
})
hist = store.get_historical_features(entity_df=entity_df, features=refs).to_df().sort_values("event_timestamp")
online = store.get_online_features(features=refs[:3], entity_rows=[{"repo": "spf13/cobra"}]).to_dict()
print(json.dumps({"hist": json.loads(hist.to_json(orient="records", date_format="iso")), "online": online}, default=str))
"""


def _run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, f"{shlex.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _contract(env: dict[str, str], sample_parquet: Path) -> dict:
    _run(SKEWLESS + ["ingest", str(sample_parquet)], env)
    _run(SKEWLESS + ["features", "build", "--until", DAY], env)
    _run(SKEWLESS + ["apply"], env)
    _run(SKEWLESS + ["materialize", "--until", DAY], env)
    return json.loads(_run([sys.executable, "-c", PROBE, str(FEATURE_REPO)], env).strip().splitlines()[-1])


def _check(out: dict) -> None:
    def row(repo: str, day: str) -> dict:
        return next(r for r in out["hist"] if r["repo"] == repo and str(r["event_timestamp"]).startswith(day))

    cobra_day, cobra_next = row("spf13/cobra", "2026-06-30"), row("spf13/cobra", "2026-07-01")
    httpx_day = row("encode/httpx", "2026-06-30")
    assert cobra_day["commits_last_30d"] is not None and cobra_day["days_since_last_commit"] is not None
    assert httpx_day["commits_last_7d"] == 0  # history ended 2025-12-10: an empty window is 0, not null
    assert httpx_day["days_since_last_commit"] > 200
    # DAY + 1 was never built: the last built values hold (no TTL); staleness is the freshness SLO's job.
    assert cobra_next["commits_last_7d"] == cobra_day["commits_last_7d"]
    online = out["online"]
    assert online["commits_last_30d"] == [cobra_day["commits_last_30d"]]
    assert online["days_since_last_commit"] == [pytest.approx(cobra_day["days_since_last_commit"])]


def test_contract_local_profile_needs_no_server(tmp_path, sample_parquet):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_"))}
    env.update(SKEWLESS_HOME=str(tmp_path / "home"),
               # Any server the code might wrongly reach is made unreachable.
               SKEWLESS_PG_URL="postgresql+psycopg://nobody@127.0.0.1:1/none", SKEWLESS_REDIS="127.0.0.1:1")
    _check(_contract(env, sample_parquet))


@pytest.mark.production
def test_contract_production_profile(tmp_path, sample_parquet):
    import redis
    import sqlalchemy as sa

    db = f"skewless_contract_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_"))}
    env.update(SKEWLESS_ENV="production", SKEWLESS_HOME=str(tmp_path / "home"),
               SKEWLESS_PG_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
               SKEWLESS_REDIS="127.0.0.1:6379,db=13")
    # `eval "$(skewless env)"` is how a shell or notebook points plain Feast at the production yaml.
    exports = _run(SKEWLESS + ["env"], env)
    for line in exports.splitlines():
        k, v = line.removeprefix("export ").split("=", 1)
        env[k] = v.strip("'")
    assert env["FEAST_FS_YAML_FILE_PATH"].endswith("feature_store.production.yaml")
    try:
        _check(_contract(env, sample_parquet))
    finally:
        redis.Redis(host="127.0.0.1", port=6379, db=13).flushdb()
        engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        engine.dispose()
