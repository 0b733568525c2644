"""`skewless status` findings: each mark of the pipeline that is off yields one line naming what handles it.

Unit tests on hand-made states (the command itself runs against real deployments in tests/test_runbooks.py,
whose production run checks that it reports an emptied online store).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

from skewless.ops import status
from skewless.ops.freshness import FreshnessSLO, ParityRecord, ViewStatus

NOW = datetime(2026, 8, 23, 1, 0, tzinfo=timezone.utc)
DAY = date(2026, 8, 23)
SLO = FreshnessSLO(max_age_seconds=26 * 3600, objective=0.99, window_days=28, schedule_seconds=86400)


def _view(**kw) -> ViewStatus:
    base = ViewStatus(project="skewless", feature_view="repo_activity", slo=SLO, observed_at=NOW,
                      online_newest_event=datetime(2026, 8, 23, tzinfo=timezone.utc), online_entities=6, entities=6,
                      built_through=DAY, materialized_through=DAY, last_materialization=NOW - timedelta(minutes=30),
                      parity=ParityRecord(NOW - timedelta(minutes=20), datetime(2026, 8, 23, tzinfo=timezone.utc), 6,
                                          {"commits_last_7d": 0}),
                      features=("commits_last_7d",))
    return replace(base, **kw)


def _status(view: ViewStatus | None = None, built_from: int = 1, commits: int = 1) -> status.Status:
    tables = {"repo_activity": status.TableState("features.repo_activity", True, 10, NOW, built_from, 10)}
    return status.Status("local", "/h", "feature_store.yaml", NOW,
                         status.TableState("abukix.commits", True, commits, NOW), tables, [view or _view()])


def test_a_healthy_deployment_has_no_findings():
    s = _status()
    assert status.findings(s) == []
    assert status.render(s).rstrip().endswith("findings:\n  - none")


def test_each_broken_mark_names_its_runbook():
    cases = {
        "materialization": (_view(materialized_through=DAY - timedelta(days=2)), "feast-materialization-stuck"),
        "no success": (_view(last_materialization=NOW - timedelta(hours=37)), "feast-materialization-stuck"),
        "unreadable": (_view(online_error="ConnectionError: refused"), "redis-online-store-stale"),
        "missing": (_view(online_entities=2), "redis-online-store-stale"),
        "behind": (_view(online_newest_event=datetime(2026, 8, 20, tzinfo=timezone.utc)), "redis-online-store-stale"),
        "stale": (_view(observed_at=NOW + timedelta(hours=26)), "feature-freshness-slo-violation"),
        "mismatch": (_view(parity=ParityRecord(NOW, NOW, 6, {"commits_last_7d": 3})), "online-offline-parity-failed"),
        "unchecked": (_view(parity=ParityRecord(NOW - timedelta(days=3), NOW, 6, {})), "online-offline-parity-failed"),
    }
    for case, (view, runbook) in cases.items():
        found = status.findings(_status(view))
        assert any(f"runbooks/{runbook}.md" in f for f in found), (case, found)


def test_a_pending_build_and_missing_pieces_name_the_command():
    assert any("a build is pending" in f for f in status.findings(_status(built_from=1, commits=2)))
    empty = status.Status("local", "/h", "y", NOW, status.TableState("abukix.commits", False),
                          {"repo_activity": status.TableState("features.repo_activity", False)}, [])
    assert status.findings(empty) == [
        "abukix.commits holds no commits: run `skewless ingest`",
        "features.repo_activity does not exist: run `skewless features build`",
        "no feature view is registered: run `skewless apply`",
    ]


def test_a_declared_feature_without_column_or_values_is_named_by_status_and_parity(home, sample_parquet,
                                                                                    monkeypatch):
    """Issue 17: after adding a feature to the definitions (and apply), status reported nothing while online served
    None for it; parity compared null with null."""
    import dataclasses

    import pyarrow as pa

    from skewless import features
    from skewless.features import definitions
    from skewless.lake import ingest
    from skewless.ops import feast_ops, parity

    last = date(2026, 8, 1)
    ingest.ingest([sample_parquet])
    features.build(last)
    feast_ops.apply()
    feast_ops.materialize(last)
    assert [p for v in status.read().views for p in v.feature_problems] == []
    new = features.Feature("commits_8_to_30d", pa.int64(), "commits with committed_at in [D-30d, D-7d)")
    evolved = dataclasses.replace(
        features.REPO_ACTIVITY, features=features.REPO_ACTIVITY.features + (new,),
        sql=f"SELECT *, commits_last_30d - commits_last_7d AS {new.name} FROM ({features.REPO_SQL}) ORDER BY ALL")
    monkeypatch.setattr(definitions, "REPO_ACTIVITY", evolved)
    monkeypatch.setattr(features, "TABLES", (evolved, features.AUTHOR_ACTIVITY))

    # declared, not built, not registered
    found = status.findings(status.read())
    assert any("commits_8_to_30d" in f and "has no column" in f and "skewless features build" in f
               for f in found), found
    # registered, not built: status and parity name it
    feast_ops.apply()
    found = status.findings(status.read())
    assert any("repo_activity declares feature commits_8_to_30d" in f and "skewless features build" in f
               for f in found), found
    [checked] = [r for r in parity.check(sample=20) if r.feature_view == "repo_activity"]
    assert not checked.ok and "commits_8_to_30d" in checked.without_values
    assert "no values: feature view repo_activity declares feature commits_8_to_30d" in parity.report([checked])
    # built (history backfilled), not yet materialized: online has no value for it
    features.build_table(evolved, last)
    found = status.findings(status.read())
    assert any("repo_activity:commits_8_to_30d: none of the" in f and "skewless materialize" in f
               for f in found), found
    feast_ops.materialize(last)
    assert [p for v in status.read().views for p in v.feature_problems] == []
    assert all(r.ok for r in parity.check(sample=20))
