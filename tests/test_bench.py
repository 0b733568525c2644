"""`skewless bench --quick`: the benchmark still runs end to end and every path returns the same thing.

Equality only — never timing (the report prints ratios; a test asserting them would fail on a busy machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from skewless import bench
from skewless.bench import report

REDIS_DB = 5  # this test's Redis database: checked empty by the benchmark, flushed after each path


def test_quick_bench_paths_agree(tmp_path: Path) -> None:
    lines: list[str] = []
    try:
        results, files = bench.run(True, tmp_path / "work", tmp_path / "out", redis_db=REDIS_DB, echo=lines.append)
    finally:
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    summary = report.summary(results)

    # Historical retrieval: raw ASOF JOIN, skewless store and stock Feast return identical rows, both TTL cases.
    assert {h["case"] for h in summary["historical"].values()} == {"ttl", "nottl"}
    for key, h in summary["historical"].items():
        assert sorted(h["compared"]) == ["raw", "skewless", "stock"], key
        assert h["identical"] is True, results["historical"][key]["same"]["detail"]
        assert all(b["runs"] >= 1 for b in h["best"].values())
    rows = results["data"]["hist"]["rows"]
    assert rows >= bench.QUICK.feature_rows * 0.99

    # Materialization: the ceiling, the streaming engine, the stock engine and the killed-then-rerun engine leave the
    # same Redis state, and the kill really interrupted a run.
    m = results["materialization"]
    assert set(m["identical"]) >= {"ceiling_resp", "skewless", "stock", "kill_rerun"}
    assert all(m["identical"].values()), m["identical"]
    assert m["skewless"]["digest"]["keys"] == results["data"]["mat"]["entities"]
    kill = m["kill_rerun"]
    assert not kill["killed"]["ok"] and kill["killed"]["error"].startswith("killed on purpose")
    assert 0 < kill["keys_at_kill"] < results["data"]["mat"]["entities"]

    # Online reads were measured through the feature service, and the report names every goal.
    assert results["online"]["ok"]
    text = files["markdown"].read_text()
    for heading in ("get_historical_features over Iceberg", "Materialization into Redis", "Online reads", "Goals"):
        assert heading in text
    assert files["json"].exists()
    assert "plot" in files and files["plot"].stat().st_size > 10_000


def test_unknown_section_is_refused_by_name(tmp_path: Path) -> None:
    """``--only``: a section that does not exist is named in the error before any data is built."""
    import pytest

    from skewless.bench.runner import Bench, BenchError

    b = Bench(bench.QUICK, tmp_path, "127.0.0.1", 6379, REDIS_DB, 1, 1000.0, 10.0, lambda m: None)
    with pytest.raises(BenchError, match="'online'"):
        b.run(("historical", "online"))
    assert not (tmp_path / "data.json").exists() and not (tmp_path / "seed").exists(), \
        "nothing is prepared for a refused run"


#: The streaming section at its smallest: a few hundred events, a 2-second fixed-rate run, a few reads.
TINY_STREAM = dict(stream_events=400, stream_rate=150, stream_seconds=2.0, stream_repos=8, stream_entity_rows=300,
                   stream_reads=10, stream_max_batch=150)


@pytest.mark.production
def test_streaming_section_reports_ratios_of_measured_numbers(tmp_path: Path) -> None:
    """``--only streaming`` at tiny size: every path finishes, every event is applied once, every probe commit
    becomes visible online, the report's ratios are the quotients of the figures measured in the run (no timing is
    asserted), and the section's own deployment (database, streams, Redis keys) is gone afterwards."""
    import asyncio
    import dataclasses

    import nats
    import sqlalchemy as sa

    sizes = dataclasses.replace(bench.QUICK, **TINY_STREAM)
    try:
        results, files = bench.run(True, tmp_path / "work", tmp_path / "out", redis_db=REDIS_DB, sizes=sizes,
                                   sections=("streaming",), echo=lambda m: None)
    finally:
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    st = results["streaming"]
    assert "data" not in results, "the streaming section alone builds no scaled feature tables"
    for key in ("broker_throughput", "processor_throughput", "broker_latency", "processor_latency", "sqlite_log",
                "online"):
        assert st[key]["ok"], (key, st[key]["error"])
    n_rate = int(sizes.stream_rate * sizes.stream_seconds)
    bt, pt = st["broker_throughput"]["result"], st["processor_throughput"]["result"]
    bl, pl = st["broker_latency"]["result"], st["processor_latency"]["result"]
    assert bt["events"] == pt["events"] == sizes.stream_events
    assert bl["events"] == bl["latency"]["n"] == n_rate
    # every event applied once (new commits: one version each), nothing left pending, every probe seen online
    assert pt["versions"] == pt["events"] and pt["pending_after"] == 0
    assert pl["events"] == n_rate + pl["probes_sent"] and pl["versions"] == pl["events"] and pl["pending_after"] == 0
    assert pl["lag"]["n"] == pl["events"]
    assert pl["probes_sent"] >= 2 and pl["probes_seen"] == pl["probes_sent"] == pl["probe"]["n"], pl["probe_errors"]
    assert set(pt["stage_seconds"]) == {"fetch", "land", "online", "ack"}
    assert st["sqlite_log"]["result"]["events"] == sizes.stream_events
    tr = st["training"]
    for view in ("daily", "live"):
        assert tr[view]["ok"] and tr[view]["result"]["rows"] == sizes.stream_entity_rows, tr[view]["error"]
    assert tr["live"]["result"]["nonnull"] > 0, "the live view answered nothing for the streamed repositories"

    # the ratios are computed from the measured numbers
    s = report.summary(results)["streaming"]
    assert s["share_of_broker"] == pytest.approx(pt["events_per_s"] / bt["events_per_s"])
    on = st["online"]["result"]
    for b in (1, 100):
        assert s["read_ratio"][b] == pytest.approx(on[f"live_{b}"]["p99_ms"] / on[f"daily_{b}"]["p99_ms"])
        assert on[f"live_{b}"]["n"] == on[f"daily_{b}"]["n"] == sizes.stream_reads
    assert on["live_1_nonnull"] == 1 and on["live_100_nonnull"] == 100, "live reads answered for streamed repos"
    assert s["training_ratio"] == pytest.approx(tr["live"]["result"]["seconds"] / tr["daily"]["result"]["seconds"])
    assert set(s["goals"]) == {"stream_throughput", "stream_latency", "fresh_read", "fresh_training"}

    text = files["markdown"].read_text()
    for heading in ("The fresh path: stream processor vs the broker's own limit", "Online reads: live service vs daily",
                    "Training retrieval: live view vs daily view", "fresh path latency", "fresh online read"):
        assert heading in text
    assert "get_historical_features over Iceberg" not in text

    # the section's deployment is gone
    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                            {"d": st["database"]}).first() is None
    engine.dispose()

    async def streams() -> list[str]:
        nc = await nats.connect(st["nats"])
        try:
            return [i.config.name for i in await nc.jetstream().streams_info()]
        finally:
            await nc.close()

    assert not [x for x in asyncio.run(streams()) if x.startswith(st["stream"])]
