"""The fresh path's consistency checks (issue 16, "Operate it"): the stream/lake reconciliation and the fetch-replay
check report 0 on a clean run, and each catches a real disagreement planted in the stores it reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow.compute as pc
from prometheus_client.parser import text_string_to_metric_families

from skewless.core import config
from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE
from test_fresh import prepare_lake

REPO = "acme/consistency"
OTHER = "acme/unseen"


def _row(i: int, when: datetime) -> dict:
    return {"repo": REPO, "sha": f"{i:02x}" * 20, "author_id": f"a_{i:012x}", "authored_at": when.isoformat(),
            "committed_at": when.isoformat(), "is_merge": False, "files_changed": 1, "lines_added": i,
            "lines_deleted": 0, "languages": ["Python"]}


def _events(rows: list[dict]) -> list[dict]:
    from skewless.stream import intake

    return intake.events_of_table(intake.table_of_rows(rows, "consistency-test"), "consistency-test")


def _metrics(p) -> dict[tuple[str, tuple], float]:
    from monitoring import exporter

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(exporter.render(p)) for s in fam.samples
            if s.name in exporter.CONSISTENCY_METRIC_NAMES}


def test_reconcile_and_fetch_replay_report_zero_when_clean_and_catch_planted_mismatches(home, tmp_path):
    from pyiceberg.expressions import EqualTo

    from serving import replay
    from serving.fetch import LoggedFetcher
    from skewless import lake
    from skewless.feast_ext.live import Version
    from skewless.lake.events import events_table, read_versions
    from skewless.ops import consistency
    from skewless.stream.log import SqliteEventLog
    from skewless.stream.processor import STREAM_VIEWS, Processor
    from skewless.stream.reconcile import reconcile

    prepare_lake(tmp_path)
    p = config.profile()
    now = datetime.now(timezone.utc)
    first = [_row(i, now - timedelta(minutes=10 * i)) for i in range(1, 4)]
    since = datetime.now(timezone.utc)
    with SqliteEventLog(p.event_log_path) as log_, Processor(log_=log_) as proc:
        log_.publish(_events(first))
        proc.drain()
        log_.publish(_events(first + [_row(9, now - timedelta(hours=2))]))  # 3 duplicates, 1 new commit
        proc.drain()
        log_.publish(_events([{"repo": REPO, "sha": first[0]["sha"], "kind": "retract"}]))
        proc.drain()
        log_.publish(_events([_row(20, now)]))  # published, not processed: in flight
        fetcher = LoggedFetcher(NEXT_WEEK_COMMITS_LIVE_SERVICE, p, proc.store)
        fetched = fetcher.fetch([REPO, OTHER])
        until = datetime.now(timezone.utc) + timedelta(seconds=1)

        # --- clean: both checks report 0 -------------------------------------------------------------------------
        clean = reconcile(until, p, log_)
        assert clean.ok, str(clean)
        assert (clean.events, clean.landed, clean.skipped_duplicates, clean.in_flight) == (8, 5, 3, 1), str(clean)
        consistency.record_reconciliation(clean.record(), p)
        checked = replay.check(since, until, NEXT_WEEK_COMMITS_LIVE_SERVICE, p, proc.store)
        assert checked.rows == 2 and checked.ok, str(checked)
        assert fetched[0].features["commits_last_1h"] == 2  # 20 and 30 minutes ago; the 10-minute one retracted
        assert all(f.ts >= since for f in fetched)
        consistency.record_replay(checked.record(), p)
        m = _metrics(p)
        assert m[("skewless_stream_reconcile_checked_events", ())] == 8
        assert m[("skewless_stream_reconcile_in_flight_events", ())] == 1
        assert {lb[0][1]: v for (n, lb), v in m.items() if n == "skewless_stream_reconcile_mismatches"} == {
            "missing": 0, "duplicated": 0, "orphaned": 0, "commits_mismatched": 0}
        ratios = {dict(lb)["feature"]: v for (n, lb), v in m.items() if n == "skewless_fetch_replay_mismatch_ratio"}
        assert ratios == {f: 0 for f in fetcher.feature_names}

        # --- the online store gains a commit the lake never had: the replay sees it ------------------------------
        at_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
        planted = Version("ff" * 20, at_us - 1, 10**9, "add", at_us - 60_000_000, "a_planted", at_us - 1)
        for view in STREAM_VIEWS:
            proc.online.write_live_versions(proc.store.config, view, {REPO: [planted]})
        fetcher.fetch([REPO])
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        tampered = replay.check(since, later, NEXT_WEEK_COMMITS_LIVE_SERVICE, p, proc.store)
        assert tampered.rows == 3 and not tampered.ok
        assert tampered.mismatches["commits_last_1h"] == 1 and tampered.mismatches["active_authors_last_24h"] == 1
        assert tampered.ratio("commits_last_1h") == 1 / 3
        consistency.record_replay(tampered.record(), p)
        ratio = _metrics(p)[("skewless_fetch_replay_mismatch_ratio", (
            ("feature", "commits_last_1h"), ("feature_service", NEXT_WEEK_COMMITS_LIVE_SERVICE),
            ("project", proc.store.project)))]
        assert ratio == 1 / 3

        # --- the lake loses a version, lands one twice, and abukix.commits loses a row ---------------------------
        versions = read_versions(p).to_pylist()
        lost = next(v for v in versions if v["sha"] == _row(9, now)["sha"])
        twice = next(v for v in versions if v["sha"] == first[2]["sha"])
        table = events_table(p)
        table.delete(EqualTo("seq", lost["seq"]))
        held = read_versions(p)
        table.append(held.filter(pc.equal(held["seq"], twice["seq"])))
        lake.commits_table(p).delete(EqualTo("sha", first[1]["sha"]))
        bad = reconcile(later, p, log_)
    assert bad.counts == {"missing": 1, "duplicated": 1, "orphaned": 0, "commits_mismatched": 1}, str(bad)
    assert any(first[1]["sha"][:12] in e and "missing" in e for e in bad.examples), bad.examples
    consistency.record_reconciliation(bad.record(), p)
    m = _metrics(p)
    assert m[("skewless_stream_reconcile_mismatches", (("kind", "missing"),))] == 1
    assert m[("skewless_stream_reconcile_mismatches", (("kind", "duplicated"),))] == 1
