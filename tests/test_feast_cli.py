"""Plain ``feast`` commands, run through Feast's own CLI as ops run them, leave the state the ``skewless`` command
beside them leaves (README "How data flows"): apply, plan, materialize, materialize-incremental, and ``feast ui``
starts.

Every command runs in a subprocess with the environment of ``skewless env`` (local profile, a home of its own),
``.venv/bin/feast -c feature_repo ...`` from the project directory. The state is compared through what users read:
online values of every entity (``get_online_features``), ``skewless status`` and ``skewless parity``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from processes import free_port, stop_group
from skewless.core.config import PROJECT_ROOT

SKEWLESS = [sys.executable, "-m", "skewless.cli"]
FEAST = [str(Path(sys.executable).parent / "feast"), "-c", "feature_repo"]
#: Built and materialized day; the sample's history reaches 2026-08-22.
DAY = date(2026, 8, 15)
LATER = DAY + timedelta(days=3)
VIEWS = ("author_activity", "repo_activity")  # materialized
LIVE_VIEWS = ("repo_activity_live",)  # registered, computed at read time from streamed events (never materialized)

ONLINE_PROBE = r"""
import json
from skewless import features, lake
from skewless.ops import feast_ops
store = feast_ops.feature_store()
out = {}
for t in features.TABLES:
    col = lake.load_table(t.identifier).scan(selected_fields=(t.entity_key,)).to_arrow()[t.entity_key]
    keys = sorted(set(col.to_pylist()))
    refs = [f"{t.name}:{f.name}" for f in store.get_feature_view(t.name).features]
    resp = store.get_online_features(features=refs, entity_rows=[{t.entity_key: k} for k in keys])
    out[t.name] = resp.to_dict(include_event_timestamps=True)
print(json.dumps(out, default=str))
"""

REGISTRY_PROBE = r"""
import json
from google.protobuf import text_format
from skewless.ops import feast_ops
from skewless.core.config import profile
store = feast_ops.feature_store()
text = lambda proto: text_format.MessageToString(proto)  # the source's catalog configuration as readable bytes
print(json.dumps({
    "entities": {e.name: text(e.to_proto().spec) for e in store.list_entities()},
    "feature_views": {v.name: text(v.to_proto().spec) for v in store.list_feature_views()},
    "feature_services": {s.name: text(s.to_proto().spec) for s in store.list_feature_services()},
    "data_sources": {s.name: text(s.to_proto()) for s in store.list_data_sources()},
}, sort_keys=True).replace(str(profile().home), "<HOME>"))  # the catalog paths of the sources are the home's own
"""


@pytest.mark.parametrize("end, day", [
    (datetime(2026, 8, 15), DAY),  # `feast materialize-incremental 2026-08-15`: naive midnight, inclusive
    (datetime(2026, 8, 15, tzinfo=timezone.utc), DAY),
    (datetime(2026, 8, 15, 23, 59, 59, 999999, tzinfo=timezone.utc), DAY),  # `skewless materialize --until`
    (datetime(2026, 8, 16, 1, 30, tzinfo=timezone(timedelta(hours=2))), DAY),  # 2026-08-15 23:30 UTC
])
def test_materialized_through_reads_the_end_bound_as_inclusive(end, day):
    from skewless.features import day_start
    from skewless.ops import feast_ops, online

    fv = SimpleNamespace(most_recent_end_time=end)
    assert feast_ops.materialized_through(fv) == day
    assert online.online_as_of(fv) == day_start(day)  # what parity and the skew drill read


def _env(home: Path) -> dict[str, str]:
    """The environment of ``eval "$(skewless env)"`` for ``home`` on the local profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_"))}
    env.update(SKEWLESS_ENV="local", SKEWLESS_HOME=str(home))
    out = _run(SKEWLESS + ["env"], env)
    for line in out.splitlines():
        m = re.fullmatch(r"export (\w+)='(.*)'", line)
        assert m, f"`skewless env` printed {line!r}, not an export"
        env[m[1]] = m[2]
    assert "FEAST_FS_YAML_FILE_PATH" in env
    return env


def _run(cmd: list[str], env: dict[str, str], ok: bool = True) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=900)
    if ok:
        assert proc.returncode == 0, f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _built_home(tmp_path_factory, name: str, sample_parquet: Path, until: date = DAY) -> dict[str, str]:
    env = _env(tmp_path_factory.mktemp(name) / "home")
    _run(SKEWLESS + ["ingest", str(sample_parquet)], env)
    _run(SKEWLESS + ["features", "build", "--until", str(until)], env)
    return env


@pytest.fixture(scope="module")
def skewless_home(tmp_path_factory, sample_parquet) -> dict[str, str]:
    """A home driven by skewless commands: built, applied and materialized through DAY."""
    env = _built_home(tmp_path_factory, "skewless", sample_parquet)
    _run(SKEWLESS + ["apply"], env)
    _run(SKEWLESS + ["materialize", "--until", str(DAY)], env)
    return env


@pytest.fixture(scope="module")
def feast_home(tmp_path_factory, sample_parquet) -> dict[str, str]:
    """A home built by skewless and registered by plain `feast apply` (nothing materialized yet)."""
    env = _built_home(tmp_path_factory, "feast", sample_parquet)
    _run(FEAST + ["apply"], env)
    return env


def _online(env: dict[str, str]) -> dict:
    return json.loads(_run([sys.executable, "-c", ONLINE_PROBE], env).strip().splitlines()[-1])


def _registry(env: dict[str, str]) -> dict:
    return json.loads(_run([sys.executable, "-c", REGISTRY_PROBE], env).strip().splitlines()[-1])


def _status(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Per view, the `skewless status` lines "materialized through" and "online store"."""
    out = _run(SKEWLESS + ["status"], env)
    views: dict[str, dict[str, str]] = {}
    current = None
    for line in out.splitlines():
        if m := re.fullmatch(r"feature view (\w+)", line.strip()):
            current = views.setdefault(m[1], {})
        elif current is not None and (m := re.fullmatch(r"\s+(materialized through|online store)\s+(.*)", line)):
            current[m[1]] = m[2].strip()
    assert set(views) == set(VIEWS), out
    return views


def _assert_complete(env: dict[str, str], day: date) -> None:
    """`skewless status` says every view holds ``day`` for every entity, and `skewless parity` passes as of it."""
    for view, lines in _status(env).items():
        assert lines["materialized through"] == str(day), (view, lines)
        m = re.fullmatch(r"(\d+) of (\d+) entities have a value", lines["online store"])
        assert m and m[1] == m[2] and int(m[2]) > 0, (view, lines)
    out = _run(SKEWLESS + ["parity", "--sample", "0"], env)
    assert f"PARITY OK (author_activity as of {day}, repo_activity as of {day})" in out, out


def test_feast_apply_registers_what_skewless_apply_registers(feast_home, skewless_home):
    ours, theirs = _registry(feast_home), _registry(skewless_home)
    assert set(ours["feature_views"]) == set(VIEWS + LIVE_VIEWS)
    assert sorted(ours["data_sources"]) == ["author_activity_source", "commit_events_push", "commit_events_source",
                                            "repo_activity_source"]
    assert ours == theirs


def test_feast_plan_right_after_apply_reports_no_change(feast_home, skewless_home):
    # feast_home: applied by `feast apply`; skewless_home: applied by `skewless apply` and materialized (the case
    # where every view used to show up as "Updated").
    for env in (feast_home, skewless_home):
        out = _run(FEAST + ["plan"], env)
        assert "No changes to registry" in out, out
        assert not re.search(r"^(Updated|Created|Deleted) (feature view|data source|entity|feature service)", out,
                             re.M), out
    for env in (feast_home, skewless_home):  # the short form: nothing but the verdict (Feast's dump: --verbose)
        assert _run(SKEWLESS + ["plan"], env).strip() == "no changes"
    verbose = _run(SKEWLESS + ["plan", "--verbose"], skewless_home)
    assert verbose.startswith("no changes\n") and "No changes to registry" in verbose, verbose


def _scratch_plan(env: dict[str, str], tmp_path: Path, changes: list[tuple[str, str, str]]) -> list[str]:
    """`skewless plan` of a copy of the project (feature_repo/ and src/) with ``changes`` planted (file, old text,
    new text), against the registry of ``env``'s home: its output lines."""
    import shutil

    for d in ("feature_repo", "src"):
        shutil.copytree(PROJECT_ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    for rel, old, new in changes:
        text = (tmp_path / rel).read_text()
        assert text.count(old) == 1, f"{rel} no longer contains {old!r} exactly once: update the planted change"
        (tmp_path / rel).write_text(text.replace(old, new))
    return _run(SKEWLESS + ["plan"], {**env, "PYTHONPATH": str(tmp_path / "src")}).strip().splitlines()


DEFINITIONS = "src/skewless/features/definitions.py"
COMMITS_LAST_30D = 'Feature("commits_last_30d", pa.int64(), "commits with committed_at in [D-30d, D)"),'


def test_skewless_plan_names_exactly_an_added_feature(skewless_home, tmp_path):
    # README "Adding a feature": the new feature in its view; services list their features, so none of them changes.
    added = COMMITS_LAST_30D + '\n        Feature("commits_last_14d", pa.int64(), "commits in [D-14d, D)"),'
    assert _scratch_plan(skewless_home, tmp_path, [(DEFINITIONS, COMMITS_LAST_30D, added)]) == [
        "feature view repo_activity: changed",
        "  added feature commits_last_14d (Int64)",
    ]


def test_skewless_plan_names_removed_and_retyped_features_and_changed_properties(skewless_home, tmp_path):
    changes = [
        (DEFINITIONS, COMMITS_LAST_30D, COMMITS_LAST_30D.replace("pa.int64()", "pa.float64()")),
        (DEFINITIONS, 'Feature("langs_used",', 'Feature("languages_used",'),  # a rename: removed + added,
        (DEFINITIONS, '"commits_total", "langs_used",', '"commits_total", "languages_used",'),  # in its service too
        ("feature_repo/repo_features.py", '"tier": "1"', '"tier": "2"'),
        ("feature_repo/author_features.py", "ttl=timedelta(0)", "ttl=timedelta(days=3)"),
    ]
    assert _scratch_plan(skewless_home, tmp_path, changes) == [
        "feature view author_activity: changed",
        "  added feature languages_used (Int64)",
        "  removed feature langs_used (Int64)",
        "  ttl: 0:00:00 -> 3 days, 0:00:00",
        "feature view repo_activity: changed",
        "  changed feature commits_last_30d: type Int64 -> Float64",
        "  tags['tier']: '1' -> '2'",
        "feature service author_profile_v1: changed",
        "  added feature author_activity:languages_used (Int64)",
        "  removed feature author_activity:langs_used (Int64)",
        "feature service next_week_commits_v1: changed",
        "  changed feature repo_activity:commits_last_30d: type Int64 -> Float64",
    ]


def test_plan_ignores_source_stamps_that_feast_counts_as_a_change():
    # Feast's own sources carry their construction/apply times in the view's proto (skewless's sources fix them,
    # skewless.feast_ext.sources): once the registered view was materialized (so the views are unequal), Feast's
    # diff compares their specs field by field and calls the view "updated"; the short form does not.
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.diff.property_diff import TransitionType
    from feast.diff.registry_diff import diff_registry_objects
    from feast.infra.registry.registry import FeastObjectType
    from feast.types import Float64, Int64

    from skewless.feast_ext.plan import object_changes

    def view(stamp: datetime, dtype=Int64, extra=()):
        source = FileSource(name="s", path="s.parquet", timestamp_field="ts")
        source.created_timestamp = source.last_updated_timestamp = stamp
        return FeatureView(name="v", entities=[Entity(name="e", join_keys=["e"], value_type=ValueType.INT64)], source=source,
                           schema=[Field(name="e", dtype=Int64), Field(name="a", dtype=dtype), *extra])

    t = datetime(2026, 8, 15, tzinfo=timezone.utc)
    old, new = view(t), view(t + timedelta(seconds=5))
    old.materialization_intervals.append((t - timedelta(days=1), t))  # as registered after a materialization
    assert diff_registry_objects(old, new, FeastObjectType.FEATURE_VIEW).transition_type == TransitionType.UPDATE
    assert object_changes(old, new) == []
    assert object_changes(old, view(t + timedelta(seconds=5), Float64, [Field(name="b", dtype=Int64)])) == [
        "added feature b (Int64)", "changed feature a: type Int64 -> Float64"]


def test_feast_materialize_incremental_loads_what_skewless_materialize_loads(feast_home, skewless_home):
    # Never materialized: the first incremental run must load every entity, not the last year before now.
    _run(FEAST + ["materialize-incremental", DAY.isoformat()], feast_home)  # midnight: an inclusive end bound
    _assert_complete(feast_home, DAY)
    assert _online(feast_home) == _online(skewless_home)
    assert "No changes to registry" in _run(FEAST + ["plan"], feast_home)

    # Later runs continue from the previous end, in both homes alike.
    for env in (feast_home, skewless_home):
        _run(SKEWLESS + ["features", "build", "--until", str(LATER)], env)
    _run(FEAST + ["materialize-incremental", LATER.isoformat()], feast_home)
    _run(SKEWLESS + ["materialize", "--until", str(LATER)], skewless_home)
    _assert_complete(feast_home, LATER)
    assert _online(feast_home) == _online(skewless_home)


def test_feast_materialize_range_loads_every_entity(tmp_path_factory, sample_parquet):
    # A first `feast materialize START END` with START after many entities' last row: all of them are loaded
    # (a value holds until the entity's next row), as `skewless materialize --until END` does.
    env = _built_home(tmp_path_factory, "feast-range", sample_parquet)
    reference = _built_home(tmp_path_factory, "skewless-range", sample_parquet)
    _run(FEAST + ["apply"], env)
    _run(FEAST + ["materialize", f"{DAY - timedelta(days=7)}T00:00:00", f"{DAY}T00:00:00"], env)
    _assert_complete(env, DAY)
    _run(SKEWLESS + ["apply"], reference)
    _run(SKEWLESS + ["materialize", "--until", str(DAY)], reference)
    assert _online(env) == _online(reference)


def test_feast_materialize_incremental_reloads_restated_days(tmp_path_factory, tmp_path, sample_parquet):
    # Commits of one week arrive late: the build restates days before the last materialized end. The next plain
    # incremental run must reload them (as `skewless materialize` does), not start at the previous end.
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(sample_parquet)
    ts = t["committed_at"]
    late_mask = pc.and_(pc.greater_equal(ts, pd_ts("2026-03-02")), pc.less(ts, pd_ts("2026-03-09")))
    on_time, late = tmp_path / "on_time.parquet", tmp_path / "late.parquet"
    pq.write_table(t.filter(pc.invert(late_mask)), on_time)
    pq.write_table(t.filter(late_mask), late)
    env = _built_home(tmp_path_factory, "feast-late", on_time)
    _run(FEAST + ["apply"], env)
    _run(FEAST + ["materialize-incremental", DAY.isoformat()], env)
    _run(SKEWLESS + ["ingest", str(late)], env)
    built = _run(SKEWLESS + ["features", "build", "--until", str(DAY)], env)
    assert re.search(r"\(([1-9]\d*) entities restated\)", built), built
    out = _run(FEAST + ["materialize-incremental", DAY.isoformat()], env)
    m = re.search(r"repo_activity: builds since the last load restated rows from (\S+); reloading from there", out)
    assert m and "2026-03-02" <= m[1] <= "2026-03-10", out
    _assert_complete(env, DAY)
    assert "online loaded from snapshot -" not in _run(SKEWLESS + ["status"], env)


def pd_ts(day: str):
    import pandas as pd

    return pd.Timestamp(day, tz="UTC")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_feast_ui_starts_and_serves_the_registry(skewless_home, tmp_path):
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(FEAST + ["ui", "--host", "127.0.0.1", "--port", str(port)], env=skewless_home,
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240  # a bound against hanging, not a performance check
        health = None
        while health != 200:
            assert proc.poll() is None, f"feast ui exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"feast ui did not answer on port {port}:\n{log.read_text()}"
            try:
                health, _ = _get(f"http://127.0.0.1:{port}/health")
            except OSError:
                time.sleep(0.5)
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/feature_views?project=skewless")
        assert status == 200, body
        assert {"repo_activity", "author_activity"} <= set(re.findall(r'"name":\s*"(\w+)"', body)), body[:2000]
    finally:
        stop_group(proc)
