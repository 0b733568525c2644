"""The streaming section of ``skewless bench`` (issue 16 "Speed"): the fresh path against the broker's own limit,
measured in the same run.

Everything runs on the production profile (JetStream, Redis online store, PostgreSQL catalog and registry) in a
deployment of its own: a PostgreSQL database, a JetStream stream and the bench's (empty) Redis database, all
removed afterwards. One worker process per measured path (:mod:`skewless.bench.worker` runs the tasks below);
where a path needs a publisher next to its consumer, the worker starts it as a second process (two processes, as
in production: a pusher and the processor).

broker (the limit; plain nats-py, no skewless code)
    ``throughput``  a publisher at full speed (PubAcks gathered per 4,000, as the intake does) and a durable pull
                    consumer fetching up to 5,000 and acknowledging them on a throwaway stream; events/s from the
                    first publish to the last acknowledgement;
    ``latency``     the publisher at a fixed rate; publish -> delivered to the consumer, per message.
    (local) the SQLite event log: publish and fetch+ack rates of the embedded default's log.
ours
    ``throughput``  the same events published by the intake's log client at full speed, applied by one
                    ``skewless.stream.processor`` (land in Iceberg, write online, acknowledge); events/s from the
                    first publish to the last acknowledged batch;
    ``latency``     the publisher at the same fixed rate, plus a probe commit every 0.5 s in a repository of its own
                    that a thread of the publisher process polls through ``get_online_features`` (every 25 ms):
                    arrival -> visible online, per probe; and the processor's own arrival -> online written, per
                    event.
reads
    ``get_online_features`` of the live service against the daily service, the same entities per call (1, 100),
    alternated in one process.
training
    ``get_historical_features`` of the live view against the daily view on the same entity rows.

Speed is reported as ratios against references measured in the same run; nothing here asserts a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

#: One probe commit per this many seconds during the fixed-rate run.
PROBE_EVERY_S = 0.5
#: How often the probe polls the online store (seconds).
PROBE_POLL_S = 0.025
#: The probe's repository (a name no generated repository takes).
PROBE_REPO = "bench/probe"
#: Events per publish call of the fixed-rate publishers' ticks (at most; a tick sends what is due).
TICK_S = 0.02
RAW_FETCH = 5_000
RAW_PUBLISH_CHUNK = 4_000


# --- helpers shared by the tasks --------------------------------------------------------------------------------------
def percentiles(samples: list[float]) -> dict[str, Any]:
    """p50/p99/max (seconds) and the number of samples; ``n`` 0 and no figures for none."""
    if not samples:
        return {"n": 0}
    import numpy as np

    a = np.asarray(samples, dtype=float)
    return {"p50_s": float(np.percentile(a, 50)), "p99_s": float(np.percentile(a, 99)), "max_s": float(a.max()),
            "n": int(a.size)}


def _spawn(spec: dict[str, Any], spec_path: Path) -> subprocess.Popen:
    """A second worker process (a publisher) with this process's environment."""
    spec = {**spec, "result": str(spec_path.with_suffix(".result.json"))}
    Path(spec["result"]).unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1))
    log = open(spec_path.with_suffix(".log"), "w")
    return subprocess.Popen([sys.executable, "-m", "skewless.bench.worker", str(spec_path)], stdout=log,
                            stderr=subprocess.STDOUT)


def _child_result(proc: subprocess.Popen, spec_path: Path, timeout: float = 600.0) -> dict[str, Any]:
    proc.wait(timeout=timeout)
    result = spec_path.with_suffix(".result.json")
    if proc.returncode != 0 or not result.exists():
        tail = spec_path.with_suffix(".log").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"publisher {spec_path.name} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return json.loads(result.read_text())


def _read_events(path: str, start: int, n: int) -> list[dict[str, Any]]:
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            if i >= start + n:
                break
            if i >= start:
                out.append(json.loads(line))
    return out


def _stamp(e: dict[str, Any], i: int, now_us: int, spread_s: int) -> dict[str, Any]:
    """An event as sent now: arrival stamped now, committed (and authored) ``spread_s`` at most before it."""
    back = ((i * 2_654_435_761) % max(1, spread_s)) * 1_000_000 + 1_000
    return {**e, "arrived_at": now_us, "committed_at": now_us - back, "authored_at": now_us - back}


def _schedule(total: int, rate: Optional[float], send: Callable[[int, int], None],
              tick: Callable[[float], None] = lambda t: None) -> tuple[float, float]:
    """Call ``send(start, stop)`` for events [0, total): all at once in chunks (``rate`` None) or at ``rate`` per
    second in ticks of ``TICK_S``; ``tick(elapsed)`` before each tick. Returns (first send, last send) wall time."""
    first = time.time()
    if rate is None:
        for s in range(0, total, RAW_PUBLISH_CHUNK):
            send(s, min(total, s + RAW_PUBLISH_CHUNK))
        return first, time.time()
    t0 = time.monotonic()
    sent = 0
    while sent < total:
        elapsed = time.monotonic() - t0
        tick(elapsed)
        due = min(total, int(elapsed * rate) + 1)
        if due > sent:
            send(sent, due)
            sent = due
        time.sleep(max(0.0, TICK_S - (time.monotonic() - t0 - elapsed)))
    return first, time.time()


# --- the broker's own figures (no skewless code on these paths) -------------------------------------------------------
def _raw_subjects(stream: str, events: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    out = []
    for e in events:
        token = e["repo"].replace("~", "~7e").replace(".", "~2e").replace("/", "~")
        out.append((f"bench.{stream}.commits.{token}",
                    json.dumps(e, separators=(",", ":"), sort_keys=True).encode()))
    return out


def broker_publish(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain nats-py publisher: ``n`` messages at full speed or at ``rate``/s, stamped with their send time."""
    import asyncio

    import nats

    msgs = _raw_subjects(spec["stream"], _read_events(spec["events"], spec["start"], spec["n"]))

    async def main() -> dict[str, Any]:
        nc = await nats.connect(spec["nats"])
        js = nc.jetstream()
        loop = asyncio.get_running_loop()
        times: dict[str, float] = {}

        async def send(a: int, b: int) -> None:
            futures = []
            for k in range(a, b):
                subject, body = msgs[k]
                futures.append(await js.publish_async(subject, body, headers={
                    "Nats-Msg-Id": f"{spec['stream']}-{spec['start'] + k}", "Bench-Sent": repr(time.time())}))
            await asyncio.gather(*futures)

        def run_sync() -> None:
            def send_sync(a: int, b: int) -> None:
                asyncio.run_coroutine_threadsafe(send(a, b), loop).result()

            times["first"], times["last"] = _schedule(len(msgs), spec.get("rate"), send_sync)

        await loop.run_in_executor(None, run_sync)
        await nc.close()
        return {"sent": len(msgs), "first_publish": times["first"], "last_publish": times["last"]}

    return asyncio.run(main())


def broker_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """A durable pull consumer on a throwaway stream, with :func:`broker_publish` as its publisher process."""
    import asyncio

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

    stream, n = spec["stream"], spec["n"]

    async def main() -> dict[str, Any]:
        nc = await nats.connect(spec["nats"])
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"bench.{stream}.>"], storage=StorageType.FILE,
                                         retention=RetentionPolicy.LIMITS, duplicate_window=120.0))
        sub = await js.pull_subscribe(f"bench.{stream}.>", durable="bench", stream=stream, config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, max_ack_pending=100_000, ack_wait=30.0))
        spec_path = Path(spec["result"]).with_name(Path(spec["result"]).stem.removesuffix(".result") + ".pub.json")
        child = _spawn({**spec, "task": "broker_publish"}, spec_path)
        got, lat, last = 0, [], 0.0
        try:
            while got < n:
                try:
                    msgs = await sub.fetch(min(RAW_FETCH, n - got), timeout=1.0)
                except (asyncio.TimeoutError, nats.errors.TimeoutError):
                    msgs = []
                if not msgs:  # nothing came (nats-py may also answer a finished pull with no messages)
                    if child.poll() is not None and child.returncode != 0:
                        break
                    continue
                now = time.time()
                lat += [now - float(m.headers["Bench-Sent"]) for m in msgs]
                for m in msgs[:-1]:
                    await m.ack()
                await msgs[-1].ack_sync(timeout=30)
                last = time.time()
                got += len(msgs)
        finally:
            await js.delete_stream(stream)
            await nc.close()
        pub = _child_result(child, spec_path)
        seconds = last - pub["first_publish"]
        return {"events": got, "seconds": seconds, "events_per_s": got / seconds if seconds > 0 else None,
                "publish_seconds": pub["last_publish"] - pub["first_publish"], "latency": percentiles(lat),
                "rate": spec.get("rate")}

    return asyncio.run(main())


def sqlite_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """The local profile's log (SQLite): publish of ``n`` events in chunks, then fetch+ack of all of them."""
    from skewless.stream.log import SqliteEventLog

    events = _read_events(spec["events"], spec["start"], spec["n"])
    path = Path(spec["result"]).with_name("sqlite_raw.sqlite")
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    log = SqliteEventLog(path)
    t0 = time.perf_counter()
    for s in range(0, len(events), RAW_PUBLISH_CHUNK):
        log.publish(events[s:s + RAW_PUBLISH_CHUNK])
    t1 = time.perf_counter()
    got = 0
    while True:
        batch = log.fetch(RAW_FETCH, 0.0)
        if not batch:
            break
        log.ack(batch)
        got += len(batch)
    t2 = time.perf_counter()
    log.close()
    return {"events": got, "publish_per_s": len(events) / (t1 - t0), "consume_per_s": got / (t2 - t1),
            "seconds": t2 - t0}


# --- ours -------------------------------------------------------------------------------------------------------------
def _live_probe_ref() -> str:
    from skewless.features.definitions import REPO_ACTIVITY_LIVE

    shortest = min((f for f in REPO_ACTIVITY_LIVE.features if f.aggregation == "count"), key=lambda f: f.window)
    return f"{REPO_ACTIVITY_LIVE.name}:{shortest.name}"


def stream_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """The deployment's batch half (the shipped sample ingested and built, the Feast repository applied) and the
    bench's events: the sample's commits cloned into ``repos`` repositories under new shas, checked by the
    intake's rules (``events_of_table``), one JSON per line."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skewless import features, lake
    from skewless.core.config import SAMPLE_COMMITS
    from skewless.lake.ingest import ingest
    from skewless.ops import feast_ops
    from skewless.stream.intake import events_of_table

    ingest([SAMPLE_COMMITS])
    features.build(lake.newest_commit_day())
    feast_ops.apply()
    seed = pq.read_table(SAMPLE_COMMITS)
    n, repos = spec["n"], spec["repos"]
    pick = np.arange(n) % seed.num_rows
    rows = seed.take(pa.array(pick))
    names = [f"bench/r{i % repos:05d}" for i in range(n)]
    shas = [hashlib.sha1(f"{s}:{i}".encode()).hexdigest() for i, s in enumerate(rows["sha"].to_pylist())]
    rows = rows.set_column(rows.schema.get_field_index("repo"), "repo", pa.array(names))
    rows = rows.set_column(rows.schema.get_field_index("sha"), "sha", pa.array(shas))
    events = events_of_table(rows, "bench")
    probes = events_of_table(seed.slice(0, spec["probes"]).set_column(
        0, "repo", pa.array([PROBE_REPO] * spec["probes"])).set_column(
        1, "sha", pa.array([hashlib.sha1(f"probe:{i}".encode()).hexdigest() for i in range(spec["probes"])])),
        "bench-probe")
    with open(spec["events_path"], "w") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":"), sort_keys=True) + "\n")
    with open(spec["probes_path"], "w") as f:
        for e in probes:
            f.write(json.dumps(e, separators=(",", ":"), sort_keys=True) + "\n")
    return {"events": len(events), "repos": repos, "probes": len(probes), "commits": seed.num_rows}


def stream_publish(spec: dict[str, Any]) -> dict[str, Any]:
    """The intake's log client publishing the bench's events at full speed or at ``rate``/s (arrival stamped at
    send time); with ``probes``, a probe commit every ``PROBE_EVERY_S`` and a thread polling the online store."""
    import threading

    from skewless.core.config import profile
    from skewless.stream import open_log

    events = _read_events(spec["events"], spec["start"], spec["n"])
    probes = _read_events(spec["probes"], 0, 10**9) if spec.get("probes") else []
    spread = spec["spread_s"]
    sent_probes: list[float] = []
    seen: list[float] = []
    stop = threading.Event()
    poll_errors: list[str] = []

    def poll() -> None:
        from skewless.ops.feast_ops import feature_store

        store = feature_store()
        ref = _live_probe_ref()
        name = ref.split(":")[1]
        store.get_online_features(features=[ref], entity_rows=[{"repo": PROBE_REPO}]).to_dict()  # warm-up
        ready.set()
        while not stop.is_set() or len(seen) < len(sent_probes):
            try:
                count = store.get_online_features(features=[ref], entity_rows=[{"repo": PROBE_REPO}]).to_dict()[name][0]
            except Exception as e:  # reported, not hidden
                poll_errors.append(repr(e))
                return
            now = time.time()
            while count is not None and len(seen) < min(count, len(sent_probes)):
                seen.append(now - sent_probes[len(seen)])
            if stop.is_set() and time.time() > stop_at[0] + 120:
                return
            time.sleep(PROBE_POLL_S)

    ready = threading.Event()
    stop_at = [0.0]
    poller = None
    if probes:
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        ready.wait(120)
    with open_log(profile()) as log:
        def send(a: int, b: int) -> None:
            now_us = int(time.time() * 1_000_000)
            log.publish([_stamp(events[i], spec["start"] + i, now_us, spread) for i in range(a, b)])

        def tick(elapsed: float) -> None:
            if probes and len(sent_probes) < len(probes) and elapsed >= (len(sent_probes) + 1) * PROBE_EVERY_S:
                now = time.time()
                log.publish([_stamp(probes[len(sent_probes)], 0, int(now * 1_000_000), 0)])
                sent_probes.append(now)

        first, last = _schedule(len(events), spec.get("rate"), send, tick)
    stop_at[0] = time.time()
    stop.set()
    if poller is not None:
        poller.join(180)
    return {"sent": len(events) + len(sent_probes), "events": len(events), "probes": len(sent_probes),
            "first_publish": first, "last_publish": last, "probe_visible": percentiles(seen),
            "probes_seen": len(seen), "probe_errors": poll_errors[:3]}


def stream_process(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``skewless.stream.processor`` on the deployment's stream while :func:`stream_publish` runs in a second
    process; returns its throughput, arrival -> online lags and where its time went."""
    from skewless.core.config import profile
    from skewless.stream.processor import Processor

    p = profile()
    with Processor(p=p, max_batch=spec["max_batch"]) as proc:
        # Warm-up (untimed): connections, the consumer, the event table's first commit.
        warm = _read_events(spec["events"], spec["warm_start"], spec["warm_n"])
        now_us = int(time.time() * 1_000_000)
        proc.log.publish([_stamp(e, i, now_us, 60) for i, e in enumerate(warm)])
        proc.drain()
        proc.stats = type(proc.stats)()
        spec_path = Path(spec["result"]).with_name(Path(spec["result"]).stem.removesuffix(".result") + ".pub.json")
        child = _spawn({**spec["publisher"], "task": "stream_publish"}, spec_path)
        lags: list[float] = []
        batches: list[dict[str, float]] = []
        done = {"at": 0.0, "expected": None}
        land_before = [0.0]

        def on_batch(st) -> None:
            lags.extend(st.lags)
            st.lags.clear()
            land = st.stage_seconds.get("land", 0.0)
            batches.append({"events": st.events, "land_s": land - land_before[0]})
            land_before[0] = land
            done["at"] = time.time()

        def stop() -> bool:
            if done["expected"] is None and child.poll() is not None:
                done["expected"] = (_child_result(child, spec_path)["sent"])
            return done["expected"] is not None and proc.stats.events >= done["expected"]

        # the fetch wait of `skewless stream run` (its default): how long a batch may fill before it is applied
        stats = proc.run(stop=stop, on_batch=on_batch)
        pub = _child_result(child, spec_path)
        pending = proc.log.pending()
    seconds = done["at"] - pub["first_publish"]
    first_n = [b for b in batches[:3]]
    last_n = [b for b in batches[-3:]]
    per_event = [b["land_s"] / max(1, (b["events"] - prev["events"]))
                 for prev, b in zip([{"events": 0}] + batches[:-1], batches)]
    return {"events": stats.events, "versions": stats.versions, "batches": stats.batches, "pending_after": pending,
            "seconds": seconds, "events_per_s": stats.events / seconds if seconds > 0 else None,
            "publish_seconds": pub["last_publish"] - pub["first_publish"], "rate": spec["publisher"].get("rate"),
            "lag": percentiles(lags), "stage_seconds": stats.stage_seconds, "probe": pub["probe_visible"],
            "probes_sent": pub["probes"], "probes_seen": pub["probes_seen"], "probe_errors": pub["probe_errors"],
            "land_ms_per_event_first": 1000 * sum(per_event[:3]) / max(1, len(per_event[:3])),
            "land_ms_per_event_last": 1000 * sum(per_event[-3:]) / max(1, len(per_event[-3:])),
            "batch_sizes": [b["events"] for b in first_n + last_n]}


def stream_daily(spec: dict[str, Any]) -> dict[str, Any]:
    """The daily views built through today from the lake (which now holds the streamed commits) and materialized."""
    from datetime import datetime, timezone

    from skewless import features
    from skewless.ops import feast_ops

    today = datetime.now(timezone.utc).date()
    features.build(today)
    feast_ops.materialize(today)
    return {"until": today.isoformat()}


def stream_online(spec: dict[str, Any]) -> dict[str, Any]:
    """get_online_features of the live service against the daily service: the same entities per call, alternated."""
    import random

    from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE, NEXT_WEEK_COMMITS_SERVICE
    from skewless.ops.feast_ops import feature_store

    store = feature_store()
    services = {"daily": store.get_feature_service(NEXT_WEEK_COMMITS_SERVICE),
                "live": store.get_feature_service(NEXT_WEEK_COMMITS_LIVE_SERVICE)}
    names = spec["repos"]
    rng = random.Random(11)
    out: dict[str, Any] = {}
    for batch in (1, 100):
        times: dict[str, list[float]] = {k: [] for k in services}
        for i in range(spec["requests"] + 50):
            rows = [{"repo": rng.choice(names)} for _ in range(batch)]
            for key in (("daily", "live") if i % 2 else ("live", "daily")):
                t0 = time.perf_counter()
                got = store.get_online_features(features=services[key], entity_rows=rows).to_dict()
                if i >= 50:
                    times[key].append(time.perf_counter() - t0)
                if i == 50 and key == "live":
                    out[f"live_{batch}_nonnull"] = sum(v is not None for v in next(
                        v for k, v in got.items() if k != "repo"))
        for key, t in times.items():
            out[f"{key}_{batch}"] = {k.replace("_s", "_ms"): v * 1000 if k.endswith("_s") else v
                                     for k, v in percentiles(t).items()}
    return out


def stream_historical(spec: dict[str, Any]) -> dict[str, Any]:
    """get_historical_features of one view (``live`` or ``daily``) for the entity rows of ``entity_path``."""
    import pyarrow.parquet as pq

    from skewless.features.definitions import REPO_ACTIVITY, REPO_ACTIVITY_LIVE
    from skewless.bench.measure import measured
    from skewless.ops.feast_ops import feature_store

    view = REPO_ACTIVITY_LIVE if spec["view"] == "live" else REPO_ACTIVITY
    refs = [f"{view.name}:{f.name}" for f in view.features]
    store = feature_store()
    entity_df = pq.read_table(spec["entity_path"]).to_pandas()
    store.get_historical_features(entity_df=entity_df.head(10), features=refs).to_df()  # warm-up
    result: dict[str, Any] = {}
    with measured(result):
        out = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    result["rows"] = len(out)
    result["nonnull"] = int(out[refs[0].split(":")[1]].notna().sum())
    return result


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "broker_publish": broker_publish, "broker_raw": broker_raw, "sqlite_raw": sqlite_raw,
    "stream_prepare": stream_prepare, "stream_publish": stream_publish, "stream_process": stream_process,
    "stream_daily": stream_daily, "stream_online": stream_online, "stream_historical": stream_historical,
}


# --- the section, run by skewless.bench.runner.Bench ------------------------------------------------------------------
def run_section(bench: Any, client: Any, need: Callable[[Any], Any]) -> dict[str, Any]:
    """Run the streaming section in a deployment of its own (see the module docstring); returns its results.
    ``client``: the bench's (empty) Redis database; ``need(outcome)`` raises when a preparing step failed."""
    import shutil
    import uuid

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    s, echo = bench.sizes, bench.echo
    w = bench.workdir / "stream"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    host, port, db = bench.redis
    tag = uuid.uuid4().hex[:8]
    pg_db, stream = f"skewless_bench_{tag}", f"SKEWLESS_BENCH_{tag}"
    env = {"SKEWLESS_ENV": "production", "SKEWLESS_HOME": str(w / "home"), "SKEWLESS_PG_URL": f"{bench.pg}/{pg_db}",
           "SKEWLESS_REDIS": f"{host}:{port},db={db}", "SKEWLESS_NATS": bench.nats, "SKEWLESS_STREAM": stream}
    warm = min(500, s.stream_events)
    n_rate = int(s.stream_rate * s.stream_seconds)
    probes = int(s.stream_seconds / PROBE_EVERY_S) + 1
    events, probes_path = w / "events.jsonl", w / "probes.jsonl"
    out: dict[str, Any] = {"events": s.stream_events, "rate": s.stream_rate, "seconds": s.stream_seconds,
                           "repos": s.stream_repos, "max_batch": s.stream_max_batch, "stream": stream,
                           "database": pg_db, "nats": bench.nats}

    def run(label: str, spec: dict[str, Any]):
        return bench.runner.run(label, spec, w / "home", profile_env=env)

    from dataclasses import asdict

    try:
        echo(f"streaming: production profile of its own (PostgreSQL {pg_db}, Redis db {db}, JetStream {stream})")
        prep = need(run("stream prepare", {"task": "stream_prepare", "n": 2 * warm + s.stream_events + n_rate,
                                           "repos": s.stream_repos, "probes": probes, "events_path": str(events),
                                           "probes_path": str(probes_path)}))
        out["prepare"] = prep.result
        raw = {"task": "broker_raw", "nats": bench.nats, "events": str(events), "start": 0}
        echo(f"streaming: broker throughput, {s.stream_events:,} events (plain nats-py)")
        out["broker_throughput"] = asdict(run("broker throughput", {
            **raw, "stream": f"{stream}_RAW_T", "n": s.stream_events}))
        echo(f"streaming: processor throughput, {s.stream_events:,} events")
        start = warm
        streamed_from = time.time()
        proc = {"task": "stream_process", "events": str(events), "warm_n": warm, "max_batch": s.stream_max_batch}
        out["processor_throughput"] = asdict(run("processor throughput", {
            **proc, "warm_start": 0, "publisher": {"events": str(events), "start": start, "n": s.stream_events,
                                                   "spread_s": 30 * 86_400}}))
        echo(f"streaming: broker latency at {s.stream_rate:,}/s for {s.stream_seconds:g} s")
        out["broker_latency"] = asdict(run("broker latency", {
            **raw, "stream": f"{stream}_RAW_L", "n": n_rate, "rate": s.stream_rate}))
        echo(f"streaming: processor latency at {s.stream_rate:,}/s for {s.stream_seconds:g} s, probe every "
             f"{PROBE_EVERY_S:g} s")
        start += s.stream_events
        out["processor_latency"] = asdict(run("processor latency", {
            **proc, "warm_start": start, "publisher": {"events": str(events), "start": start + warm, "n": n_rate,
                                                       "rate": s.stream_rate, "spread_s": 60,
                                                       "probes": str(probes_path)}}))
        out["sqlite_log"] = asdict(run("SQLite log raw", {"task": "sqlite_raw", "events": str(events), "start": 0,
                                                          "n": s.stream_events}))
        echo("streaming: daily views built and materialized (untimed); online reads, live vs daily")
        need(run("stream daily build", {"task": "stream_daily"}))
        repos = [f"bench/r{i:05d}" for i in range(s.stream_repos)]
        out["online"] = asdict(run("online live vs daily", {"task": "stream_online", "repos": repos,
                                                             "requests": s.stream_reads}))
        # Instants from the first streamed event to an hour after the last: rows see part or all of the stream
        t_start, t_end = streamed_from, time.time() + 3600
        rng = np.random.default_rng(20261207)
        n = s.stream_entity_rows
        ts = rng.uniform(t_start, t_end, n)
        entity = pa.table({"repo": pa.array([repos[i] for i in rng.integers(0, len(repos), n)]),
                           "event_timestamp": pa.array((ts * 1_000_000).astype("int64")).cast(
                               pa.timestamp("us", tz="UTC"))})
        pq.write_table(entity, w / "entity_rows.parquet")
        out["training"] = {"entity_rows": n}
        for view in ("daily", "live"):
            echo(f"streaming: get_historical_features of the {view} view, {n:,} entity rows")
            out["training"][view] = asdict(run(f"training {view}", {
                "task": "stream_historical", "view": view, "entity_path": str(w / "entity_rows.parquet")}))
    finally:
        _cleanup(bench, client, pg_db, [stream, f"{stream}_RAW_T", f"{stream}_RAW_L"])
    return out


def _cleanup(bench: Any, client: Any, pg_db: str, streams: list[str]) -> None:
    """Remove the deployment: its PostgreSQL database, its JetStream streams, the Redis database's keys."""
    import asyncio

    import nats
    import sqlalchemy as sa

    client.flushdb()

    async def drop() -> None:
        nc = await nats.connect(bench.nats, connect_timeout=5)
        try:
            for name in streams:
                try:
                    await nc.jetstream().delete_stream(name)
                except Exception:  # never created, or already deleted by its path
                    pass
        finally:
            await nc.close()

    asyncio.run(drop())
    engine = sa.create_engine(f"{bench.pg}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)'))
    finally:
        engine.dispose()
