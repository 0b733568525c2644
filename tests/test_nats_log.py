"""The production event log, :class:`skewless.stream.nats_log.NatsEventLog`, against a real NATS JetStream server.

Uses the server on 127.0.0.1:4222 when one is listening (``.ci/run`` starts it), else starts its own
``nats-server -js`` (the Debian package nats-server), else skips. Every test has its own stream, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from skewless.stream.nats_log import EventLogError, NatsEventLog

pytestmark = pytest.mark.timeout(120)

NATS_SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists()
                                              else None)


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, store: Path) -> subprocess.Popen:
    assert NATS_SERVER
    proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"nats-server on port {port} did not start")
        time.sleep(0.05)
    return proc


def _stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _delete_stream(url: str, stream: str) -> None:
    import nats
    import nats.js.errors

    async def go():
        # nats-py retries a first connect that fails, even without allow_reconnect: the deadline bounds it.
        nc = await asyncio.wait_for(nats.connect(url, allow_reconnect=False, connect_timeout=2), timeout=3)
        try:
            await nc.jetstream().delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await nc.close()

    try:
        asyncio.run(go())
    except Exception:  # the server of a test (test_server_restart) is gone already: its store dir goes with the tmp dir
        pass


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory):
    if _listening(4222):
        yield "nats://127.0.0.1:4222"
        return
    if NATS_SERVER is None:
        pytest.skip("no NATS server on 127.0.0.1:4222 and no nats-server binary (apt-get install nats-server)")
    port = _free_port()
    proc = _start_server(port, tmp_path_factory.mktemp("nats-store"))
    yield f"nats://127.0.0.1:{port}"
    _stop_server(proc)


@pytest.fixture
def open_nats(nats_url):
    """Opens NatsEventLogs on a fresh stream (the same one within a test); closes them and deletes the stream."""
    stream = f"T_{uuid.uuid4().hex[:10]}"
    opened: list[NatsEventLog] = []
    urls = {nats_url}

    def make(url: str = nats_url, **kw) -> NatsEventLog:
        log = NatsEventLog(url, stream, **kw)
        opened.append(log)
        urls.add(url)
        return log

    make.stream = stream  # type: ignore[attr-defined]
    yield make
    for log in opened:
        log.close()
    for url in urls:
        _delete_stream(url, stream)


def _events(n: int, prefix: str = "e") -> list[dict]:
    return [{"event_id": f"{prefix}{i}", "repo": f"owner{i % 3}/repo.{i % 5}", "commit": f"{i:040x}", "n": i}
            for i in range(n)]


def _drain(log: NatsEventLog, want: int, timeout: float = 10.0) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += log.fetch(10_000, timeout=0.5)
    return got


def test_publish_fetch_ack_roundtrip(open_nats):
    log = open_nats()
    assert log.pending() == 0
    assert log.fetch(10, timeout=0.2) == []
    events = _events(50)
    log.publish(events)
    assert log.pending() == 50
    got = log.fetch(1_000, timeout=2)
    assert [d.seq for d in got] == sorted(d.seq for d in got) and len({d.seq for d in got}) == 50
    assert [d.event for d in got] == events  # one publisher: stream order is publish order
    assert log.pending() == 50  # delivered is not acknowledged
    log.ack(got)
    assert log.pending() == 0
    assert log.fetch(10, timeout=0.3) == []
    assert "JetStream stream" in log.where and open_nats.stream in log.where


def test_history_reads_everything_consumes_nothing(open_nats):
    """history(): every stored event with its sequence, the settled ones up to the ack floor; the durable consumer
    neither gets nor loses anything, and the ephemeral reader is gone afterwards."""
    import asyncio

    import nats as nats_client

    log = open_nats()
    events = _events(30)
    log.publish(events)
    first = _drain(log, 30)
    log.ack(first[:20])
    held = log.history()
    assert [d.event for d in held.events] == events and [d.seq for d in held.events] == [d.seq for d in first]
    assert held.settled == frozenset(d.seq for d in first[:20])
    assert (held.first_seq, held.last_seq) == (first[0].seq, first[-1].seq)
    assert log.pending() == 10  # the 10 delivered, unacknowledged events are still the consumer's

    async def consumers() -> list[str]:
        nc = await nats_client.connect(log.url)
        try:
            return [c.name for c in await nc.jetstream().consumers_info(open_nats.stream)]
        finally:
            await nc.close()

    assert asyncio.run(consumers()) == [log.durable]


def test_duplicate_publish_is_stored_once(open_nats):
    log = open_nats()
    events = _events(10)
    log.publish(events)
    log.publish([events[3]])
    log.publish(events)  # a whole batch retried
    log.publish([dict(events[0])] * 3)  # the same event_id several times in one batch
    assert log.pending() == 10
    got = _drain(log, 10, timeout=3)
    assert sorted(d.event["event_id"] for d in got) == sorted(e["event_id"] for e in events)
    log.ack(got)
    assert log.pending() == 0


def test_unacked_event_is_redelivered_with_the_same_seq(open_nats):
    first = open_nats(ack_wait=1.0)
    first.publish(_events(5))
    got = first.fetch(100, timeout=2)
    assert len(got) == 5
    first.ack(got[:2])
    unacked = {d.seq: d.event for d in got[2:]}
    first.close()  # the processor "crashes" with 3 events unacknowledged

    second = open_nats(ack_wait=1.0)  # a restarted processor: same durable consumer
    again = _drain(second, 3, timeout=5)
    assert {d.seq: d.event for d in again} == unacked  # same sequence numbers, acked ones not among them
    second.ack(again)
    time.sleep(1.3)  # past ack_wait: nothing acknowledged comes back
    assert second.fetch(100, timeout=0.5) == []
    assert second.pending() == 0


def test_in_progress_holds_off_redelivery(open_nats):
    log = open_nats(ack_wait=1.0)
    log.publish(_events(3))
    got = log.fetch(10, timeout=2)
    assert len(got) == 3
    for _ in range(4):  # 2 s of work on a 1 s ack_wait
        time.sleep(0.5)
        log.in_progress(got)
    assert log.fetch(10, timeout=0.3) == []
    log.ack(got)
    assert log.pending() == 0


@pytest.mark.skipif(NATS_SERVER is None, reason="needs the nats-server binary (apt-get install nats-server)")
def test_server_restart(open_nats, tmp_path):
    port, store = _free_port(), tmp_path / "store"
    url = f"nats://127.0.0.1:{port}"
    proc = _start_server(port, store)
    try:
        log = open_nats(url, op_timeout=2.0)
        events = _events(200)
        log.publish(events)
        first = log.fetch(50, timeout=2)
        log.ack(first)

        _stop_server(proc)
        t0 = time.monotonic()
        with pytest.raises(EventLogError, match="127.0.0.1"):
            log.publish(_events(5, prefix="down"))
        assert time.monotonic() - t0 < 10  # an error, not a hang
        with pytest.raises(EventLogError):
            log.pending()

        proc = _start_server(port, store)  # same port, same store dir
        rest = _drain(log, 150, timeout=15)
        seen = {d.event["event_id"] for d in first + rest}
        assert {e["event_id"] for e in events} <= seen  # nothing published before the outage is lost
        assert not {d.event["event_id"] for d in rest} & {d.event["event_id"] for d in first}  # acks survived
        log.ack(rest)
        log.publish(_events(5, prefix="after"))  # and the log works again
        assert len(_drain(log, 5, timeout=5)) >= 5
    finally:
        _stop_server(proc)


def test_unreachable_server_raises_quickly():
    log = NatsEventLog(f"nats://127.0.0.1:{_free_port()}", "T_nowhere", connect_timeout=1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(EventLogError, match="nats-server -js"):
            log.publish(_events(1))
        assert time.monotonic() - t0 < 5
    finally:
        log.close()


def test_throughput_20k(open_nats, capsys):
    log = open_nats()
    events = _events(20_000)
    t0 = time.perf_counter()
    log.publish(events)
    publish_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    while n < len(events):
        got = log.fetch(10_000, timeout=1)
        assert got
        log.ack(got)
        n += len(got)
    consume_s = time.perf_counter() - t0
    assert n == len(events) and log.pending() == 0
    with capsys.disabled():
        print(f"\nNatsEventLog 20,000 events: publish {len(events) / publish_s:,.0f} events/s, "
              f"fetch+ack {n / consume_s:,.0f} events/s")
