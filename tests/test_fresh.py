"""The fresh path (issue "Fresh features", ADR 0015/0016): what the online store answered at instant T is what
get_historical_features returns for T, late, duplicated, shuffled and retracted events included; crash safety;
bad events refused at the intake with ingest's messages."""

from __future__ import annotations

import math
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fresh_replay import REPLAY_REPOS, reference, replay_events, sample_instants, ticks
from skewless.core import config
from skewless.data import SAMPLE_COMMITS
from skewless.features.definitions import NEXT_WEEK_COMMITS_LIVE_SERVICE, REPO_ACTIVITY_LIVE

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
    for k in list(os.environ):
        if k.startswith(("SKEWLESS_", "FEAST_")):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k, v in config.profile().feast_env().items():
        monkeypatch.setenv(k, v)
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
    from skewless.stream.log import open_log

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
