"""README "Adding a feature, step by step", followed verbatim on the sample (issue 17).

A copy of the project (the working tree's files, so uncommitted changes count) gets the README's diff with
``git apply``; the README's command blocks then run in it with ``skewless`` meaning that copy's code, on a home that
already holds the sample and a registered v1 model (the world a team adds a feature to). The test then checks what
the section promises: the new feature's values, point in time offline (against a brute-force count of the sample)
and online (against offline), v1 untouched, a v2 model version trained on the new service and served. Step 2 (the
reference and edge-case expectations, then ``make test``) is the one step not run here: it is this suite.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skewless.core.config import PROJECT_ROOT

SECTION = "### Adding a feature, step by step"
NEW = "commits_last_14d"
V2 = "next_week_commits_v2"

# Runs in the copy (its code on PYTHONPATH): offline point-in-time rows, online rows, the registry and MLflow.
_CHECK = r'''
import json, sys
import numpy as np, pandas as pd, pyarrow.parquet as pq
from mlflow.tracking import MlflowClient
from skewless.core import config
from skewless.ops import feast_ops

sample, new, v2 = sys.argv[1], sys.argv[2], sys.argv[3]
commits = pq.read_table(sample, columns=["repo", "committed_at"]).to_pandas()
store = feast_ops.feature_store()
rng = np.random.default_rng(0)
repos = sorted(commits["repo"].unique())
lo, hi = commits["committed_at"].min(), commits["committed_at"].max()
ts = pd.to_datetime(rng.integers(lo.value, hi.value, 40), utc=True)
rows = pd.DataFrame({"repo": rng.choice(repos, 40), "event_timestamp": ts})
off = store.get_historical_features(entity_df=rows, features=store.get_feature_service(v2)).to_df()
expected = []
for r in off.itertuples():
    d = pd.Timestamp(r.event_timestamp).tz_convert("UTC").floor("D")
    own = commits[commits["repo"] == r.repo]["committed_at"]
    first = own.min().floor("D")
    expected.append(None if d < first else int(((own >= d - pd.Timedelta(days=14)) & (own < d)).sum()))
got = [None if pd.isna(v) else int(v) for v in off[new]]
last = store.get_historical_features(
    entity_df=pd.DataFrame({"repo": repos, "event_timestamp": [hi.floor("D")] * len(repos)}),
    features=[f"repo_activity:{new}"]).to_df().set_index("repo")[new]
online = store.get_online_features(features=store.get_feature_service(v2),
                                   entity_rows=[{"repo": r} for r in repos]).to_dict()
client = MlflowClient(config.profile().mlflow_tracking_uri)
versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{config.NEXT_WEEK_COMMITS_MODEL}'")}
print(json.dumps({
    "pit": [got, expected],
    "online": dict(zip(online["repo"], online[new])),
    "offline_last": {r: int(v) for r, v in last.items()},
    "v1": [f"{p.name}:{f.name}" for p in store.get_feature_service(config.NEXT_WEEK_COMMITS_SERVICE)
           .feature_view_projections for f in p.features],
    "versions": versions,
}))
'''


def _blocks(lang: str) -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    section = readme[start:readme.index("\n### ", start + len(SECTION))]
    return [textwrap.dedent(b) for b in re.findall(rf"^   ```{lang}\n(.*?)^   ```$", section, re.S | re.M)]


def _project_copy(dest: Path) -> Path:
    """The project's files as they are in the working tree (tracked and new, not ignored), without .git."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = PROJECT_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_sections_blocks_are_what_the_test_runs():
    assert len(_blocks("diff")) == 1 and len(_blocks("sh")) == 2
    assert NEW in _blocks("diff")[0] and f"--service {V2}" in _blocks("sh")[0]


@pytest.mark.slow
def test_adding_a_feature_as_the_readme_says(tmp_path: Path, sample_parquet: Path):
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("needs the project's git checkout to copy its files")
    proj = _project_copy(tmp_path / "proj")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "skewless").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m skewless.cli "$@"\n')
    (bin_dir / "skewless").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_"))}
    env.update(SKEWLESS_ENV="local", SKEWLESS_HOME=str(tmp_path / "home"), PORT=str(_free_port()),
               PYTHONPATH=f"{proj / 'src'}{os.pathsep}{proj}", PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")

    def sh(script: str, timeout: float = 1200) -> str:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=proj, env=env, capture_output=True,
                              text=True, timeout=timeout)
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"`{script.strip()}` exited {done.returncode}:\n{out[-4000:]}"
        return out

    # the world before the change: the sample ingested, built, registered, loaded, and a v1 model
    sh(f"skewless ingest {sample_parquet} && skewless features build && skewless apply && skewless materialize "
       "&& skewless train")
    # step 1, verbatim: the README's diff
    patch = tmp_path / "readme.diff"
    patch.write_text(_blocks("diff")[0])
    applied = subprocess.run(["git", "apply", "--verbose", str(patch)], cwd=proj, capture_output=True, text=True)
    assert applied.returncode == 0, f"the README's diff no longer applies to the project:\n{applied.stderr}"
    build, serve = _blocks("sh")
    out = sh(build)  # step 3, verbatim
    assert f"added column(s) {NEW}" in out and "backfilled the whole history" in out, out[-3000:]
    assert f"added feature {NEW} (Int64)" in out and f"feature service {V2}: added" in out, out[-3000:]
    assert re.search(r"parity[^\n]*(OK|ok|pass)", out, re.I), out[-3000:]
    assert NEW in (proj / "README.md").read_text().split("feature-catalogue:begin")[1]
    out = sh(serve, timeout=600)  # step 4, verbatim
    assert '"predictions"' in out, out[-3000:]

    checked = subprocess.run([sys.executable, "-c", _CHECK, str(sample_parquet), NEW, V2], cwd=proj, env=env,
                             capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stderr[-4000:]
    facts = json.loads(checked.stdout.strip().splitlines()[-1])
    got, expected = facts["pit"]
    assert got == expected, "point-in-time values of the new feature differ from a brute-force count"
    assert any(v for v in got), "every sampled value is 0 or null: the check would not see a wrong window"
    assert facts["online"] == facts["offline_last"], "online values of the new feature differ from offline"
    assert f"repo_activity:{NEW}" not in facts["v1"] and len(facts["v1"]) == 6, "v1 changed under its model"
    versions = facts["versions"]
    assert versions["1"]["feature_service"] == "next_week_commits_v1"
    assert versions["2"]["feature_service"] == V2
    assert f"repo_activity:{NEW}" in json.loads(versions["2"]["features"])
    assert f"repo_activity:{NEW}" not in json.loads(versions["1"]["features"])
