"""The stream processor's /metrics (issue 16, "Operate it"): a processor run in-process on a local home, its metrics
server on a free port, scraped over HTTP; the counts must be what the processor did, not what we expect it to do."""

from __future__ import annotations

import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from skewless.core import config
from test_fresh import prepare_lake

REPO = "acme/metrics"


def _row(i: int, when: datetime) -> dict:
    return {"repo": REPO, "sha": f"{i:02x}" * 20, "author_id": "a_0123456789ab", "authored_at": when.isoformat(),
            "committed_at": when.isoformat(), "is_merge": False, "files_changed": 1, "lines_added": i,
            "lines_deleted": 0, "languages": ["Python"]}


def _events(rows: list[dict]) -> list[dict]:
    from skewless.stream import intake

    return intake.events_of_table(intake.table_of_rows(rows, "metrics-test"), "metrics-test")


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the processor's /metrics, keyed by (sample name, sorted labels)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def _events_of(samples, outcome: str) -> float:
    return samples[("skewless_stream_events_total", (("outcome", outcome),))]


def test_metrics_count_what_the_processor_did(home, tmp_path):
    from skewless.stream.log import SqliteEventLog
    from skewless.stream.metrics import LAG_BUCKETS, SERIES_NAMES, StreamMetrics
    from skewless.stream.processor import Processor

    prepare_lake(tmp_path)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    first = [_row(i, now - timedelta(hours=i)) for i in range(1, 4)]
    started = time.time()
    metrics = StreamMetrics()
    port = metrics.serve(0, "127.0.0.1")
    try:
        with SqliteEventLog(config.profile().event_log_path) as log_, Processor(log_=log_, metrics=metrics) as proc:
            before = scrape(port)
            assert {n for n, _ in before} >= set(SERIES_NAMES)  # every series exists before the first event
            log_.publish(_events(first))
            proc.drain()
            # the same three commits again (new event ids, same values: duplicates) and one new commit
            log_.publish(_events(first + [_row(9, now)]))
            proc.drain()
            after = scrape(port)
            stats = proc.stats
    finally:
        metrics.close()

    assert (stats.versions, stats.duplicates, stats.redelivered, stats.events) == (4, 3, 0, 7)
    assert _events_of(after, "applied") == stats.versions
    assert _events_of(after, "duplicate") == stats.duplicates
    assert _events_of(after, "redelivered") == stats.redelivered
    assert after[("skewless_stream_batches_total", ())] == stats.batches == 2
    assert after[("skewless_stream_pending_events", ())] == 0
    assert all(v == 0 for (n, _), v in after.items() if n == "skewless_stream_errors_total")
    assert len([1 for n, _ in after if n == "skewless_stream_errors_total"]) == 4  # fetch, land, online, ack
    # one histogram observation per delivered event; the buckets are cumulative and hold the processor's own lags
    assert after[("skewless_stream_arrival_to_online_seconds_count", ())] == stats.events
    buckets = {float(dict(lb)["le"]): v for (n, lb), v in after.items()
               if n == "skewless_stream_arrival_to_online_seconds_bucket"}
    assert sorted(buckets) == sorted(LAG_BUCKETS) + [float("inf")]
    assert buckets[float("inf")] == stats.events
    counts = [buckets[b] for b in sorted(buckets)]
    assert counts == sorted(counts)
    assert after[("skewless_stream_arrival_to_online_seconds_sum", ())] == pytest.approx(sum(stats.lags), abs=1.0)
    last = after[("skewless_stream_last_applied_timestamp_seconds", ())]
    assert started <= last <= time.time()
    assert before[("skewless_stream_last_applied_timestamp_seconds", ())] <= last


def test_an_error_in_landing_is_counted_and_raised(home, tmp_path, monkeypatch):
    from skewless.stream import processor as processor_module
    from skewless.stream.log import SqliteEventLog
    from skewless.stream.metrics import StreamMetrics
    from skewless.stream.processor import Processor

    prepare_lake(tmp_path)

    def broken_land(*args, **kwargs):
        raise OSError("the lake is unreachable")

    monkeypatch.setattr(processor_module, "land", broken_land)
    metrics = StreamMetrics()
    port = metrics.serve(0, "127.0.0.1")
    try:
        with SqliteEventLog(config.profile().event_log_path) as log_, Processor(log_=log_, metrics=metrics) as proc:
            log_.publish(_events([_row(1, datetime.now(timezone.utc))]))
            with pytest.raises(OSError, match="the lake is unreachable"):
                proc.drain()
            assert log_.pending() == 1  # not acknowledged: the restarted processor gets it again
            samples = scrape(port)
    finally:
        metrics.close()
    errors = {dict(lb)["stage"]: v for (n, lb), v in samples.items() if n == "skewless_stream_errors_total"}
    assert errors == {"fetch": 0, "land": 1, "online": 0, "ack": 0}
    assert samples[("skewless_stream_batches_total", ())] == 0
    assert samples[("skewless_stream_pending_events", ())] == 1  # the batch in hand counts as pending
    assert samples[("skewless_stream_arrival_to_online_seconds_count", ())] == 0


def test_processor_run_refuses_a_taken_metrics_port(home):
    """Two processors on one host with the same --metrics-port: the second says so instead of running unwatched."""
    import socket

    from skewless.core.errors import SkewlessError
    from skewless.stream import processor

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SkewlessError, match="--metrics-port"):
            processor.run(once=True, metrics_port=taken.getsockname()[1])
