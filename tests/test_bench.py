"""`skewless bench --quick`: the benchmark still runs end to end and every path returns the same thing.

Equality only — never timing (the report prints ratios; a test asserting them would fail on a busy machine).
"""

from __future__ import annotations

from pathlib import Path

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
