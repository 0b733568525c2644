"""The fresh path (issue "Fresh features", ADR 0015/0016): what the online store answered at instant T is what
get_historical_features returns for T, late, duplicated, shuffled and retracted events included; crash safety;
bad events refused at the intake with ingest's messages."""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fresh_replay import REPLAY_REPOS, reference, replay_events, sample_instants, ticks
from skewless.core import config
from skewless.data import SAMPLE_COMMITS
from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE
from skewless.features.definitions import REPO_ACTIVITY_LIVE

FEATURES = [f.name for f in REPO_ACTIVITY_LIVE.features]
NATS_URL = "nats://127.0.0.1:4222"


def prepare_lake(tmp: Path) -> None:
    """The batch half on the repositories the replay does not stream: ingest, build, apply."""
    from skewless import features, lake
    from skewless.lake.ingest import ingest
    from skewless.ops import feast_ops

    t = pq.read_table(SAMPLE_COMMITS)
    rest = t.filter(pc.invert(pc.is_in(t["repo"], value_set=pa.array(REPLAY_REPOS))))
    path = tmp / "batch.parquet"
    pq.write_table(rest, path)
    ingest([path])
    features.build(lake.newest_commit_day())
    feast_ops.apply()


def _norm(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v) if isinstance(v, float) else int(v)


def _online(store, service) -> dict[str, dict[str, Any]]:
    got = store.get_online_features(features=service, entity_rows=[{"repo": r} for r in REPLAY_REPOS]).to_dict()
    return {r: {f: _norm(got[f][i]) for f in FEATURES} for i, r in enumerate(got["repo"])}


def replay(log_, n_samples: int = 120) -> tuple[list, dict, Any]:
    """Push the schedule through the real intake and processor under a stepped clock, reading the online store at
    sampled instants; returns (pushes, {(repo, T): online answer}, store)."""
    from skewless.feast_ext.clock import serving_clock
    from skewless.ops.feast_ops import feature_store
    from skewless.stream import intake
    from skewless.stream.processor import Processor

    pushes = replay_events()
    samples = sample_instants(pushes, n_samples)
    store = feature_store()
    service = store.get_feature_service(NEXT_WEEK_COMMITS_LIVE_SERVICE)
    now = [pushes[0].at]
    recorded: dict[tuple[str, datetime], dict[str, Any]] = {}
    i = 0

    def read_until(limit: datetime, inclusive: bool) -> None:
        nonlocal i
        while i < len(samples) and (samples[i] < limit or (inclusive and samples[i] == limit)):
            now[0] = samples[i]
            for repo, values in _online(store, service).items():
                recorded[(repo, samples[i])] = values
            i += 1

    with serving_clock(lambda: now[0]), Processor(log_=log_, max_batch=50) as proc:
        for at, rows in ticks(pushes):
            read_until(at, inclusive=False)
            now[0] = at
            intake.publish(intake.events_of_table(intake.table_of_rows(rows, "replay"), "replay"), log_)
            proc.drain()
            read_until(at, inclusive=True)
        read_until(datetime.max.replace(tzinfo=timezone.utc), inclusive=True)
    return pushes, recorded, store


def check_replay(pushes, recorded, store) -> None:
    entity = pd.DataFrame({"repo": [r for r, _ in recorded], "event_timestamp": [t for _, t in recorded]})
    service = store.get_feature_service(NEXT_WEEK_COMMITS_LIVE_SERVICE)
    hist = store.get_historical_features(entity_df=entity, features=service).to_df()
    mismatches = []
    for row in hist.to_dict("records"):
        key = (row["repo"], pd.Timestamp(row["event_timestamp"]).to_pydatetime())
        offline = {f: _norm(row[f]) for f in FEATURES}
        online = recorded[key]
        ref = reference(pushes, key[0], key[1])
        if not (offline == online == ref):
            mismatches.append((key, online, offline, ref))
    assert len(hist) == len(recorded) >= 200
    assert not mismatches, f"{len(mismatches)} mismatch(es) of {len(hist)}; first: {mismatches[:2]}"
    # the replay exercised what it claims: late arrivals changed an answer, windows decayed between events
    late = [p for p in pushes if p.row.get("kind") != "retract"
            and p.at - datetime.fromisoformat(p.row["committed_at"]) > timedelta(hours=1)]
    assert late and any(v["commits_last_1h"] for v in recorded.values())
    assert any(v["commits_last_7d_live"] == 0 for v in recorded.values())


def test_replay_local(home, tmp_path):
    """Local profile (SQLite log, SQLite online store): 0 mismatches online vs historical vs the reference."""
    from skewless.stream.log import SqliteEventLog

    prepare_lake(tmp_path)
    with SqliteEventLog(config.profile().event_log_path) as log_:
        pushes, recorded, store = replay(log_)
        assert log_.pending() == 0
    check_replay(pushes, recorded, store)


def _nats_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
        return True
    except OSError:
        return False


def use_profile(monkeypatch, env: dict[str, str]) -> dict[str, str]:
    """Switch this process to the profile ``env`` describes (no other SKEWLESS_/FEAST_ variable left); returns
    the Feast variables it exported."""
    for k in list(os.environ):
        if k.startswith(("SKEWLESS_", "FEAST_")):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    feast_env = config.profile().feast_env()
    for k, v in feast_env.items():
        monkeypatch.setenv(k, v)
    return feast_env


@pytest.fixture
def production(tmp_path, monkeypatch):
    """The production profile on its own PostgreSQL database, Redis DB 9 and JetStream stream; cleaned up."""
    import redis
    import sqlalchemy as sa

    if not _nats_up():
        pytest.skip("no NATS JetStream on 127.0.0.1:4222 (.ci/run starts one; README 'Production profile')")
    db = f"skewless_fresh_{uuid.uuid4().hex[:8]}"
    stream = f"T_FRESH_{uuid.uuid4().hex[:8]}"
    env = dict(SKEWLESS_ENV="production", SKEWLESS_HOME=str(tmp_path / "home"),
               SKEWLESS_PG_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
               SKEWLESS_REDIS="127.0.0.1:6379,db=9", SKEWLESS_NATS=NATS_URL, SKEWLESS_STREAM=stream)
    use_profile(monkeypatch, env)
    redis.Redis(host="127.0.0.1", port=6379, db=9).flushdb()
    try:
        yield config.profile()
    finally:
        redis.Redis(host="127.0.0.1", port=6379, db=9).flushdb()
        _delete_stream(stream)
        engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        engine.dispose()


def _delete_stream(stream: str) -> None:
    import asyncio

    import nats

    async def go() -> None:
        nc = await nats.connect(NATS_URL, connect_timeout=2)
        try:
            await nc.jetstream().delete_stream(stream)
        except Exception:
            pass
        await nc.close()

    asyncio.run(go())


@pytest.mark.production
def test_replay_production(production, tmp_path):
    """Production profile (JetStream, Redis online store, PostgreSQL catalog and registry): 0 mismatches."""
    from skewless.stream import open_log

    prepare_lake(tmp_path)
    with open_log(production) as log_:
        pushes, recorded, store = replay(log_, n_samples=80)
        assert log_.pending() == 0
    check_replay(pushes, recorded, store)


def test_late_commit_not_in_earlier_training_row(home, tmp_path):
    """A commit made on Monday and pushed on Thursday is absent from Tuesday's online answer and training row, and
    present in both from Thursday; a plain event-time window would have counted it on Tuesday."""
    from skewless.feast_ext.clock import serving_clock
    from skewless.ops.feast_ops import feature_store
    from skewless.stream import intake
    from skewless.stream.log import SqliteEventLog
    from skewless.stream.processor import Processor

    prepare_lake(tmp_path)
    monday, tuesday, thursday = (datetime(2026, 8, d, 12, tzinfo=timezone.utc) for d in (3, 4, 6))
    row = {"repo": "acme/late", "sha": "ab" * 20, "author_id": "a_0123456789ab",
           "authored_at": monday.isoformat(), "committed_at": monday.isoformat(), "is_merge": False,
           "files_changed": 1, "lines_added": 1, "lines_deleted": 0, "languages": ["Python"]}
    store = feature_store()
    service = store.get_feature_service(NEXT_WEEK_COMMITS_LIVE_SERVICE)

    def online_7d() -> int:
        return store.get_online_features(features=service, entity_rows=[{"repo": "acme/late"}]).to_dict()[
            "commits_last_7d_live"][0]

    with SqliteEventLog(config.profile().event_log_path) as log_, Processor(log_=log_) as proc:
        with serving_clock(tuesday):
            assert online_7d() == 0
        with serving_clock(thursday):
            intake.publish(intake.events_of_table(intake.table_of_rows([row], "laptop"), "laptop"), log_)
            proc.drain()
            assert online_7d() == 1
    entity = pd.DataFrame({"repo": ["acme/late"] * 3, "event_timestamp": [tuesday, thursday, thursday + timedelta(hours=1)]})
    hist = store.get_historical_features(entity_df=entity, features=service).to_df()
    assert hist["commits_last_7d_live"].tolist() == [0, 1, 1]
    assert hist["seconds_since_last_commit"].isna().tolist() == [True, False, False]
    # the event time alone would put it in Tuesday's window
    assert monday < tuesday and tuesday - monday < timedelta(days=7)


# --- crash safety ---------------------------------------------------------------------------------------------
#: The instant both runs' online answers are read at: after every event of either run became known.
READ_AT = datetime.now(timezone.utc) + timedelta(days=1)


def _state(p: config.Profile) -> dict[str, Any]:
    """What a run leaves: the streamed repositories' commits, the versions (without their instants) in the lake and
    online, and the online answer at one instant after every event."""
    from skewless import lake
    from skewless.feast_ext.clock import serving_clock
    from skewless.lake.events import read_versions
    from skewless.ops.feast_ops import feature_store

    commits = lake.commits_table(p).scan().to_arrow().to_pylist()
    commits = sorted((r for r in commits if r["repo"] in REPLAY_REPOS), key=lambda r: (r["repo"], r["sha"]))
    versions = sorted((r["repo"], r["sha"], r["kind"], r["seq"], r["event_id"]) for r in read_versions(p).to_pylist())
    store = feature_store(p)
    online = store._get_provider().online_store
    held = online.read_live_versions(store.config, REPO_ACTIVITY_LIVE.name, list(REPLAY_REPOS))
    held = sorted((repo, v.sha, v.kind, v.seq, v.committed_us, v.author) for repo, vs in zip(REPLAY_REPOS, held)
                  for v in vs)
    with serving_clock(READ_AT):
        answer = _online(store, store.get_feature_service(NEXT_WEEK_COMMITS_LIVE_SERVICE))
    return {"commits": commits, "versions": versions, "online_versions": held, "answer": answer}


def _events_once() -> list[dict[str, Any]]:
    """The replay's events, stamped once (the same events go to the crashed and the clean run)."""
    from skewless.stream import intake

    out = []
    for _, rows in ticks(replay_events()):
        out += intake.events_of_table(intake.table_of_rows(rows, "replay"), "replay")
    return out


def _crash_loop(env: dict[str, str], kills: int, seed: int, between=None) -> int:
    """Run `skewless stream run` in a subprocess and SIGKILL it at a random point after it applied its first batch,
    ``kills`` times (``between(i)`` runs after each kill: restart a server); then drain with --once. Returns the
    number of kills made while events were still waiting (a run that finds nothing left ends the loop)."""
    import random
    import select
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(seed)
    cli = [sys.executable, "-m", "skewless.cli", "stream", "run", "--max-batch", "3", "--metrics-port", "0"]
    done = 0
    for i in range(kills):
        proc = subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # the first applied batch prints a line
        if not ready:  # nothing left to apply
            proc.kill()
            proc.wait(30)
            break
        line = proc.stdout.readline()
        if not line.startswith("processed"):
            proc.kill()
            raise AssertionError(f"the processor did not start: {line}{proc.stdout.read()[-2000:]}")
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        done += 1
        if between:
            between(i)
    out = subprocess.run(cli[:5] + ["--once"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return done


def _clean_run(p: config.Profile, events) -> dict[str, Any]:
    from skewless.stream import open_log
    from skewless.stream.processor import Processor

    with open_log(p) as log_:
        log_.publish(events)
        with Processor(log_=log_, max_batch=3) as proc:
            proc.drain()
        assert log_.pending() == 0
    return _state(p)


def test_crash_safety_local(home, tmp_path, monkeypatch):
    """SIGKILLed at random points five times, the processor ends with the state of a clean run: nothing lost,
    nothing counted twice."""
    from skewless.stream import open_log

    events = _events_once()
    prepare_lake(tmp_path)
    with open_log(config.profile()) as log_:
        log_.publish(events)
    env = {**os.environ}
    assert _crash_loop(env, kills=5, seed=3) == 5
    crashed = _state(config.profile())

    clean_home = tmp_path / "clean"
    monkeypatch.setenv("SKEWLESS_HOME", str(clean_home))
    for k, v in config.profile().feast_env().items():
        monkeypatch.setenv(k, v)
    (tmp_path / "clean-batch").mkdir()
    prepare_lake(tmp_path / "clean-batch")
    clean = _clean_run(config.profile(), events)
    assert crashed["versions"] and crashed["online_versions"]
    assert len(crashed["online_versions"]) == len(crashed["versions"])
    for part in ("commits", "versions", "online_versions", "answer"):
        assert crashed[part] == clean[part], part


# --- bad events -------------------------------------------------------------------------------------------------
def _bad_sources(tmp: Path) -> dict[str, Path]:
    """One Parquet file per rule `skewless ingest` refuses a call for."""
    good = pq.read_table(SAMPLE_COMMITS).slice(0, 5)
    out = {}

    def write(name: str, t: pa.Table) -> None:
        out[name] = tmp / f"{name}.parquet"
        pq.write_table(t, out[name])

    write("missing-column", good.drop_columns(["author_id"]))
    write("mistyped-column", good.set_column(good.schema.get_field_index("files_changed"), "files_changed",
                                             pa.array(["1"] * 5)))
    write("no-null", good.set_column(good.schema.get_field_index("author_id"), "author_id",
                                     pa.array([None, "a", "b", "c", "d"], pa.string())))
    write("full-sha", good.set_column(1, "sha", pa.array(["xyz"] + good["sha"].to_pylist()[1:])))
    write("non-negative", good.set_column(good.schema.get_field_index("lines_added"), "lines_added",
                                          pa.array([-1, 1, 1, 1, 1], pa.int32())))
    ts = good.schema.get_field_index("committed_at")
    future = datetime.now(timezone.utc) + timedelta(days=30)
    write("committed_at-not-in-future", good.set_column(ts, "committed_at", pa.array(
        [future] + good["committed_at"].to_pylist()[1:], pa.timestamp("us", tz="UTC"))))
    write("committed_at-after-1970", good.set_column(ts, "committed_at", pa.array(
        [datetime(1969, 1, 1, tzinfo=timezone.utc)] + good["committed_at"].to_pylist()[1:],
        pa.timestamp("us", tz="UTC"))))
    twice = pa.concat_tables([good.slice(0, 1), good.slice(0, 1)])
    twice = twice.set_column(twice.schema.get_field_index("lines_added"), "lines_added", pa.array([1, 2], pa.int32()))
    write("one-row-per-key", twice)
    (tmp / "not-parquet.parquet").write_bytes(b"not a parquet file")
    out["unreadable"] = tmp / "not-parquet.parquet"
    out["no-such-file"] = tmp / "missing.parquet"
    return out


def test_bad_events_refused_with_ingests_message(home, tmp_path):
    """Every kind of source `skewless ingest` refuses is refused by `skewless events push` with the same message;
    the log and the tables are unchanged."""
    from skewless import lake
    from skewless.lake.ingest import IngestError, ingest
    from skewless.stream import intake
    from skewless.stream import open_log

    for rule, path in _bad_sources(tmp_path).items():
        with pytest.raises(IngestError) as by_ingest:
            ingest([path])
        with pytest.raises(IngestError) as by_push:
            intake.push([path])
        assert str(by_push.value) == str(by_ingest.value), rule
        assert str(path) in str(by_push.value)
    with open_log(config.profile()) as log_:
        assert log_.pending() == 0
    assert not lake.catalog().table_exists(config.COMMITS_TABLE)
    bad_kind = tmp_path / "kind.jsonl"
    bad_kind.write_text('{"repo": "a/b", "sha": "' + "a" * 40 + '", "kind": "delete"}\n')
    with pytest.raises(IngestError, match="kind 'delete' is not one of add, retract"):
        intake.push([bad_kind])
    not_json = tmp_path / "bad.jsonl"
    not_json.write_text("{not json\n")
    with pytest.raises(IngestError, match="line 1 is not JSON"):
        intake.push([not_json])
    with open_log(config.profile()) as log_:
        assert log_.pending() == 0


# --- the webhook ------------------------------------------------------------------------------------------------
def _post(url: str, body: bytes, ctype: str = "application/json", headers: dict | None = None) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_webhook_refuses_bad_bodies_with_4xx_and_accepts_pushes(home):
    import json
    import threading

    from skewless.stream.log import SqliteEventLog
    from skewless.stream.webhook import make_server

    with SqliteEventLog(config.profile().event_log_path) as log_:
        server = make_server("127.0.0.1", 0, log_)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            commit = {"repo": "acme/web", "sha": "c" * 40, "author_id": "a_0123456789ab",
                      "authored_at": "2026-08-01T10:00:00+00:00", "committed_at": "2026-08-01T10:00:00+00:00",
                      "is_merge": False, "files_changed": 1, "lines_added": 2, "lines_deleted": 0,
                      "languages": ["Python"]}
            bad = [
                (b"{not json", "application/json", 400, "not JSON"),
                (b"[1, 2]", "application/json", 400, "expected"),
                (json.dumps({"commits": [{**commit, "sha": "nope"}]}).encode(), "application/json", 422,
                 "full lower-case hex"),
                (json.dumps({"commits": [{k: v for k, v in commit.items() if k != "committed_at"}]}).encode(),
                 "application/json", 422, "missing column(s) committed_at"),
                (json.dumps({"commits": [{**commit, "committed_at": "yesterday"}]}).encode(), "application/json",
                 422, "unparsable timestamp"),
                (json.dumps({"commits": [commit]}).encode(), "text/plain", 415, "application/json"),
            ]
            for body, ctype, status, words in bad:
                got, answer = _post(base + "/events", body, ctype)
                assert got == status and words in answer["error"], (body[:60], got, answer)
            got, answer = _post(base + "/github", json.dumps({"commits": []}).encode())
            assert got == 400 and "repository.full_name" in answer["error"]
            got, answer = _post(base + "/nowhere", b"{}")
            assert got == 404
            assert log_.pending() == 0  # nothing of a refused request was stored

            assert _post(base + "/events", json.dumps({"commits": [commit]}).encode()) == (202, {"accepted": 1})
            push = {"ref": "refs/heads/main", "repository": {"full_name": "acme/hooked"},
                    "commits": [{"id": "d" * 40, "timestamp": "2026-08-01T12:00:00+02:00",
                                 "author": {"email": "Dev@Example.com"}, "added": ["a.py"], "modified": ["b.go"],
                                 "removed": []}]}
            assert _post(base + "/github", json.dumps(push).encode(), headers={"X-GitHub-Event": "push"}) == (
                202, {"accepted": 1})
            events = [d.event for d in log_.fetch(10, 0)]
            assert [e["repo"] for e in events] == ["acme/web", "acme/hooked"]
            hooked = events[1]
            from skewless.lake.gitsource import author_id

            assert hooked["author_id"] == author_id("dev@example.com")
            assert hooked["committed_at"] == int(datetime(2026, 8, 1, 10, tzinfo=timezone.utc).timestamp()) * 10**6
            assert hooked["languages"] == ["Go", "Python"] and hooked["files_changed"] == 2
        finally:
            server.shutdown()
            server.server_close()


@contextlib.contextmanager
def _own_production(tmp_path: Path, name: str, monkeypatch) -> Iterator[tuple[dict[str, str], Any, Any]]:
    """A production deployment of our own: PostgreSQL database, redis-server and nats-server (JetStream) started
    for it, the lake prepared; yields (env for subprocesses, NatsServer, RedisServer); everything removed after."""
    from reliability.servers import NATS_SERVER, NatsServer, PgDatabase, RedisServer, base_env, postgres_available

    if NATS_SERVER is None or not postgres_available():
        pytest.skip("needs nats-server and PostgreSQL on 127.0.0.1:5432")
    pg, redis_ = PgDatabase(), RedisServer(tmp_path / f"{name}-redis").start()
    nats_ = NatsServer(tmp_path / f"{name}-nats").start()
    try:
        env = base_env()
        env.update(SKEWLESS_ENV="production", SKEWLESS_HOME=str(tmp_path / name), SKEWLESS_PG_URL=pg.url,
                   SKEWLESS_REDIS=redis_.connection_string, SKEWLESS_NATS=nats_.url,
                   SKEWLESS_STREAM="FRESH", SKEWLESS_STREAM_ACK_WAIT="2")
        env.update(use_profile(monkeypatch, env))
        (tmp_path / f"{name}-batch").mkdir()
        prepare_lake(tmp_path / f"{name}-batch")
        yield env, nats_, redis_
    finally:
        nats_.stop()
        redis_.stop()
        pg.drop()


def _clean_production(tmp_path: Path, monkeypatch, events) -> dict[str, Any]:
    with _own_production(tmp_path, "clean", monkeypatch):
        return _clean_run(config.profile(), events)


def _publish(events) -> None:
    from skewless.stream import open_log

    with open_log(config.profile()) as log_:
        log_.publish(events)


@pytest.mark.production
@pytest.mark.slow
def test_crash_safety_production(tmp_path, monkeypatch):
    """JetStream + Redis + PostgreSQL: the processor is SIGKILLed five times, the broker and Redis (which comes
    back EMPTY: no persistence) are restarted in between; the end state equals a clean run's."""
    from skewless.stream import open_log

    events = _events_once()
    with _own_production(tmp_path, "crashed", monkeypatch) as (env, nats_, redis_):
        _publish(events)

        def restart(i: int) -> None:
            if i == 1:
                nats_.restart()
            elif i == 3:
                redis_.restart()  # empty: the next processor rebuilds the live versions from the lake

        assert _crash_loop(env, kills=5, seed=5, between=restart) == 5
        with open_log(config.profile()) as log_:
            assert log_.pending() == 0
        crashed = _state(config.profile())
    clean = _clean_production(tmp_path, monkeypatch, events)
    assert crashed["versions"] and len(crashed["online_versions"]) == len(crashed["versions"])
    for part in ("commits", "versions", "online_versions", "answer"):
        assert crashed[part] == clean[part], part


def _effective(versions: list[tuple]) -> dict[tuple[str, str], str]:
    """(repo, sha) -> kind of its last-arrived version (seq order equals arrival order within one publish)."""
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for repo, sha, kind, seq, _ in versions:
        if (repo, sha) not in out or seq > out[(repo, sha)][0]:
            out[(repo, sha)] = (seq, kind)
    return {k: kind for k, (_, kind) in out.items()}


@pytest.mark.production
@pytest.mark.slow
def test_two_processors_on_one_stream_equal_one(tmp_path, monkeypatch):
    """Two `skewless stream run` processes share the stream's durable consumer (JetStream hands each event to one of
    them); one is SIGKILLed mid-stream and the other takes over the events it held. The lake and the online answers
    equal one processor's clean run; nothing is counted twice."""
    import select
    import signal
    import subprocess
    import sys
    import time

    from skewless.stream import open_log

    events = _events_once()
    with _own_production(tmp_path, "pair", monkeypatch) as (env, _, _):
        _publish(events)
        cli = [sys.executable, "-m", "skewless.cli", "stream", "run", "--max-batch", "3", "--metrics-port", "0"]
        procs = [subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        try:
            for proc in procs:  # both apply batches (other lines: warnings of concurrent Iceberg commits, retried)
                line, deadline = "", time.monotonic() + 120
                while not line.startswith("processed"):
                    assert select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0], \
                        "a processor applied no batch in 120 s"
                    line = proc.stdout.readline()
                    assert line, "a processor exited"
            time.sleep(1.0)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(30)
            deadline = time.monotonic() + 300
            with open_log(config.profile()) as log_:
                while log_.pending() and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert log_.pending() == 0, "the surviving processor did not take over"
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        pair = _state(config.profile())
    clean = _clean_production(tmp_path, monkeypatch, events)
    assert pair["commits"] == clean["commits"]
    assert pair["answer"] == clean["answer"]
    assert _effective(pair["versions"]) == _effective(clean["versions"])
    assert {v[3] for v in pair["versions"]} <= {e_seq for e_seq in range(1, len(events) + 1)}
    assert len({v[3] for v in pair["versions"]}) == len(pair["versions"]), "a log sequence landed twice"


def test_webhook_with_a_secret_takes_only_signed_requests(home):
    import hashlib
    import hmac
    import json
    import threading

    from skewless.stream.log import SqliteEventLog
    from skewless.stream.webhook import make_server

    secret = b"s3cret"
    with SqliteEventLog(config.profile().event_log_path) as log_:
        server = make_server("127.0.0.1", 0, log_, secret)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/github"
        push = {"repository": {"full_name": "acme/signed"},
                "commits": [{"id": "e" * 40, "timestamp": "2026-08-01T12:00:00+00:00",
                             "author": {"email": "a@b.c"}, "added": ["x.py"]}]}
        body = json.dumps(push).encode()
        good = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        try:
            got, answer = _post(url, body)
            assert got == 401 and "missing X-Hub-Signature-256" in answer["error"]
            got, answer = _post(url, body, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
            assert got == 401 and "does not match" in answer["error"]
            got, _ = _post(url, body + b" ", headers={"X-Hub-Signature-256": good})  # body changed after signing
            assert got == 401
            assert log_.pending() == 0
            assert _post(url, body, headers={"X-Hub-Signature-256": good}) == (202, {"accepted": 1})
            assert log_.pending() == 1
        finally:
            server.shutdown()
            server.server_close()


def test_landing_reads_the_same_rows_whether_key_lists_prune_files_or_filter_rows(home, monkeypatch):
    """``lake.events._stored`` applies an IN list longer than pyiceberg's pruning limit to the rows it read instead
    of binding it per data file (the streaming benchmark's hot path): the rows are the same either way, for repo
    and sha lists on either side of the limit, in two batches (two data files), with absent keys asked for."""
    from skewless.lake import events as lake_events
    from skewless.stream.intake import events_of_table

    t = pq.read_table(SAMPLE_COMMITS)
    repos = pc.unique(t["repo"]).to_pylist()[:3]
    rows = pa.concat_tables([t.filter(pc.equal(t["repo"], r)).slice(0, 20) for r in repos])
    sent = [{**e, "seq": i + 1} for i, e in enumerate(events_of_table(rows, "test"))]
    now = datetime.now(timezone.utc)
    lake_events.land(sent[:30], now)
    lake_events.land(sent[30:], now + timedelta(seconds=1))
    keys = {(e["repo"], e["sha"]) for e in sent[::2]} | {(repos[0], "0" * 40), ("nobody/none", sent[1]["sha"])}
    table = lake_events.events_table()

    def stored(limit: int) -> list:
        monkeypatch.setattr(lake_events, "PRUNING_IN_LIMIT", limit)
        got = lake_events._stored(table, keys, lake_events.EVENTS_ARROW_SCHEMA)
        return sorted(got.to_pylist(), key=lambda r: r["seq"])

    pruned = stored(200)  # both lists short: the scan's own filter
    assert pruned and {(r["repo"], r["sha"]) for r in pruned} >= {(e["repo"], e["sha"]) for e in sent[::2]}
    assert stored(10) == pruned  # 4 repos (an unknown one too) pruning files, 32 shas filtered after reading
    assert stored(0) == pruned  # both after reading


# --- a rebuilt online state holds only what a read from now on can need ---------------------------------------------

_H = 3_600_000_000  # an hour in microseconds


def _versions(draw_rows) -> list:
    from skewless.feast_ext.live import Version

    return [Version(f"s{sha}", known, seq, kind, committed if kind == "add" else 0, f"a{author}", arrived)
            for seq, (sha, kind, committed, known, arrived, author) in enumerate(draw_rows, start=1)]


def test_still_needed_keeps_every_answer_from_now_on():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from skewless.feast_ext.live import evaluate, still_needed

    now = 1_000 * _H
    row = st.tuples(st.integers(0, 12), st.sampled_from(["add", "add", "retract"]),
                    st.integers(now - 400 * _H, now + 2 * _H),  # committed: from beyond the 7-day window to the future
                    st.integers(now - 300 * _H, now + 3 * _H),  # known: some after now
                    st.integers(now - 300 * _H, now + 3 * _H), st.integers(0, 3))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(row, max_size=40), st.lists(st.integers(0, 200 * _H), min_size=1, max_size=5))
    def check(rows, later):
        versions = _versions(rows)
        kept = still_needed(versions, now)
        assert len(kept) <= len(versions)
        few = still_needed(versions, now, old_kept=1)
        for dt in later:
            at = now + dt
            full = evaluate(REPO_ACTIVITY_LIVE, versions, at)
            assert evaluate(REPO_ACTIVITY_LIVE, kept, at) == full
            windows_only = {k: v for k, v in evaluate(REPO_ACTIVITY_LIVE, few, at).items()
                            if k != "seconds_since_last_commit"}
            assert windows_only == {k: v for k, v in full.items() if k != "seconds_since_last_commit"}

    check()


def test_still_needed_drops_what_can_no_longer_count():
    from skewless.feast_ext.live import OLD_KEPT, still_needed

    now = 1_000 * _H
    history = _versions([(i, "add", now - 200 * _H - i * _H, now - 100 * _H, now - 100 * _H, 0)
                         for i in range(OLD_KEPT + 50)])  # all older than the 7-day window
    kept = still_needed(history, now)
    assert len(kept) == OLD_KEPT and max(v.committed_us for v in kept) == max(v.committed_us for v in history)
    corrected = _versions([(1, "add", now - _H, now - 2 * _H, now - 2 * _H, 0),
                           (1, "add", now - _H, now - _H, now - _H, 1),  # a correction: only it can decide now
                           (2, "add", now - _H, now - 2 * _H, now - 2 * _H, 0),
                           (2, "retract", 0, now - _H, now - _H, 0)])  # retracted: nothing left to count
    assert [(v.sha, v.author) for v in still_needed(corrected, now)] == [("s1", "a1")]
