"""Incremental feature builds: later days add only what is new, late commits restate, reruns change nothing."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from skewless import features, lake
from skewless.core import config
from skewless.ops import feast_ops
from skewless.lake import ingest

LAST = date(2026, 8, 22)


def _rows(table_name: str) -> pd.DataFrame:
    t = lake.load_table(f"features.{table_name}").scan().to_arrow().to_pandas()
    key = "repo" if table_name == "repo_activity" else "author_id"
    return t.sort_values([key, "event_timestamp"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def full_build(tmp_path_factory, sample_parquet) -> dict[str, pd.DataFrame]:
    """The reference: one build of the whole sample through LAST in its own home."""
    home = tmp_path_factory.mktemp("full")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKEWLESS_ENV", "local")
        mp.setenv("SKEWLESS_HOME", str(home))
        ingest.ingest([sample_parquet])
        features.build(LAST)
        return {t.name: _rows(t.name) for t in features.TABLES}


def test_day_by_day_equals_one_build(home, sample_parquet, full_build):
    ingest.ingest([sample_parquet])
    features.build(date(2026, 8, 10))
    for day in pd.date_range("2026-08-11", LAST.isoformat()):
        features.build(day.date())
    for t in features.TABLES:
        pd.testing.assert_frame_equal(_rows(t.name), full_build[t.name])


def test_same_day_again_writes_nothing(home, sample_parquet):
    ingest.ingest([sample_parquet])
    first = features.build(LAST)
    again = features.build(LAST)
    assert [r.rows_written for r in again] == [0, 0]
    assert [r.snapshot_id for r in again] == [r.snapshot_id for r in first]
    earlier = features.build(date(2026, 1, 1))  # an earlier day is already built: nothing to do
    assert [r.snapshot_id for r in earlier] == [r.snapshot_id for r in first]


def test_late_commits_restate_built_days_and_the_online_store(home, sample_parquet, tmp_path, full_build):
    t = pq.read_table(sample_parquet)
    # Hold back every commit of one week in the middle of the history, as if that batch arrived late.
    ts = t["committed_at"]
    late_mask = pc.and_(pc.greater_equal(ts, pd.Timestamp("2026-03-02", tz="UTC")),
                        pc.less(ts, pd.Timestamp("2026-03-09", tz="UTC")))
    assert pc.sum(late_mask).as_py() > 10
    on_time = tmp_path / "on_time.parquet"
    late = tmp_path / "late.parquet"
    pq.write_table(t.filter(pc.invert(late_mask)), on_time)
    pq.write_table(t.filter(late_mask), late)

    ingest.ingest([on_time])
    features.build(LAST)
    feast_ops.apply()
    feast_ops.materialize(LAST)
    stale = _rows("repo_activity")
    assert not stale.equals(full_build["repo_activity"])

    ingest.ingest([late])
    results = features.build(LAST)
    assert all(r.restated_entities > 0 for r in results)
    for tb in features.TABLES:
        pd.testing.assert_frame_equal(_rows(tb.name), full_build[tb.name])

    feast_ops.materialize(LAST)
    store = feast_ops.feature_store()
    authors = sorted(set(t.filter(late_mask)["author_id"].to_pylist()))
    refs = [f"author_activity:{f.name}" for f in features.AUTHOR_ACTIVITY.features]
    online = store.get_online_features(features=refs, entity_rows=[{"author_id": a} for a in authors]).to_df()
    expected = (full_build["author_activity"].sort_values("event_timestamp").groupby("author_id").tail(1)
                .set_index("author_id").loc[authors, [f.name for f in features.AUTHOR_ACTIVITY.features]])
    got = online.set_index("author_id")[expected.columns].astype("int64")
    pd.testing.assert_frame_equal(got, expected.astype("int64"))


def test_build_before_ingest_says_what_to_run(home):
    with pytest.raises(lake.LakeError, match="skewless ingest"):
        features.build(LAST)


def test_materialize_beyond_the_built_day_is_refused(home, sample_parquet):
    ingest.ingest([sample_parquet])
    features.build(date(2026, 8, 1))
    feast_ops.apply()
    with pytest.raises(lake.LakeError, match="built through 2026-08-01"):
        feast_ops.materialize(LAST)


def test_two_homes_never_share_state(tmp_path, monkeypatch, sample_parquet):
    monkeypatch.setenv("SKEWLESS_ENV", "local")
    monkeypatch.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("SKEWLESS_HOME", str(a))
    ingest.ingest([sample_parquet])
    monkeypatch.setenv("SKEWLESS_HOME", str(b))
    with pytest.raises(lake.LakeError, match="does not exist"):
        lake.commits_table()
    assert config.profile().home == b.resolve()
    assert sorted(p.name for p in a.iterdir()) == ["catalog.db", "warehouse"]


def test_online_reads_survive_another_librarys_sqlite_timestamp_converter(home, sample_parquet):
    """IPython's history registers a process-global ISO ``timestamp`` converter; Feast's SQLite reads must survive."""
    import sqlite3

    ingest.ingest([sample_parquet])
    features.build(LAST)
    feast_ops.apply()
    feast_ops.materialize(LAST)
    sqlite3.register_converter("timestamp", lambda val: __import__("datetime").datetime.fromisoformat(val.decode()))
    store = feast_ops.feature_store()
    got = store.get_online_features(features=["repo_activity:commits_last_30d"],
                                    entity_rows=[{"repo": "spf13/cobra"}]).to_dict()
    assert got["commits_last_30d"][0] is not None


# --- schema evolution (ADR 0019) -----------------------------------------------------------------------------------
def _repo_with(extra: features.Feature, expr: str) -> features.FeatureTable:
    """repo_activity with one more feature, computed by ``expr`` over its other columns (a scratch definition)."""
    import dataclasses

    return dataclasses.replace(features.REPO_ACTIVITY, features=features.REPO_ACTIVITY.features + (extra,),
                               sql=f"SELECT *, {expr} AS {extra.name} FROM ({features.REPO_SQL}) ORDER BY ALL")


NEW = features.Feature("commits_8_to_30d", pa.int64(), "commits with committed_at in [D-30d, D-7d)")


def test_a_new_feature_evolves_the_table_and_backfills_its_whole_history(home, sample_parquet, full_build):
    """Before ADR 0019 a build said "wrote 0 rows" and the declared column stayed missing."""
    from skewless.lake.snapshots import pinned_snapshots

    ingest.ingest([sample_parquet])
    features.build(LAST)
    feast_ops.apply()
    before = lake.load_table("features.repo_activity")
    old_snapshot, old_rows = before.current_snapshot().snapshot_id, _rows("repo_activity")
    evolved = _repo_with(NEW, "commits_last_30d - commits_last_7d")

    result = features.build_table(evolved, LAST)
    assert result.added_columns == ("commits_8_to_30d",)
    assert result.backfilled_columns == ("commits_8_to_30d",)
    assert "added column(s) commits_8_to_30d" in str(result)
    rows = _rows("repo_activity")
    assert len(rows) == len(old_rows) and rows["commits_8_to_30d"].notna().all()
    assert (rows["commits_8_to_30d"] == rows["commits_last_30d"] - rows["commits_last_7d"]).all()
    pd.testing.assert_frame_equal(rows[list(full_build["repo_activity"].columns)], full_build["repo_activity"])
    assert features.build_table(evolved, LAST).rows_written == 0  # nothing left to do

    # every older snapshot still reads what it read, and a pin to it (a registered model version) still works
    table = lake.load_table("features.repo_activity")
    kept = table.scan(snapshot_id=old_snapshot).to_arrow().to_pandas()
    key = ["repo", "event_timestamp"]
    pd.testing.assert_frame_equal(kept.sort_values(key).reset_index(drop=True), old_rows)
    entity_df = pd.DataFrame({"repo": ["spf13/cobra"], "event_timestamp": [pd.Timestamp("2026-05-01", tz="UTC")]})
    store = feast_ops.feature_store()
    with pinned_snapshots({"features.repo_activity": old_snapshot}) as reads:
        got = store.get_historical_features(entity_df=entity_df,
                                            features=["repo_activity:commits_last_30d"]).to_df()
    assert reads.check()["features.repo_activity"] == old_snapshot
    want = old_rows[(old_rows.repo == "spf13/cobra") & (old_rows.event_timestamp == entity_df.event_timestamp[0])]
    assert got["commits_last_30d"].tolist() == want["commits_last_30d"].tolist()


def test_a_column_added_by_hand_without_history_is_refused_online_then_backfilled(home, sample_parquet,
                                                                                   monkeypatch):
    """The old README's step 3 (add the column with update_schema): materialization refuses its null history, the
    build computes it."""
    from pyiceberg.types import LongType

    from skewless.feast_ext.materialize import MaterializationRefused
    from skewless.features import definitions

    ingest.ingest([sample_parquet])
    features.build(date(2026, 8, 1))
    with lake.load_table("features.repo_activity").update_schema() as update:
        update.add_column("commits_8_to_30d", LongType())
    evolved = _repo_with(NEW, "commits_last_30d - commits_last_7d")
    monkeypatch.setattr(definitions, "REPO_ACTIVITY", evolved)
    feast_ops.apply()
    with pytest.raises(MaterializationRefused, match="repo_activity:commits_8_to_30d: .*written before its column "
                                                     "existed.*skewless features build"):
        feast_ops.materialize(date(2026, 8, 1))
    result = features.build_table(evolved, LAST)
    assert result.added_columns == () and result.backfilled_columns == ("commits_8_to_30d",)
    assert _rows("repo_activity")["commits_8_to_30d"].notna().all()


@pytest.mark.parametrize("change, column", [
    ("drop", "days_since_last_commit"),
    ("retype", "commits_last_7d"),
])
def test_a_dropped_or_retyped_column_is_refused_naming_it_and_the_path(home, sample_parquet, change, column):
    import dataclasses

    ingest.ingest([sample_parquet])
    features.build(date(2026, 8, 1))
    snapshot = lake.snapshot_id(lake.load_table("features.repo_activity"))
    base = features.REPO_ACTIVITY
    if change == "drop":
        changed = dataclasses.replace(base, features=tuple(f for f in base.features if f.name != column),
                                      sql=f"SELECT * EXCLUDE ({column}) FROM ({features.REPO_SQL})")
    else:
        changed = dataclasses.replace(base, features=tuple(
            dataclasses.replace(f, arrow_type=pa.float64()) if f.name == column else f for f in base.features))
    with pytest.raises(features.FeatureTableChangeError, match=rf"{column}\b.*{column}_v2") as refused:
        features.build_table(changed, LAST)
    assert "features.repo_activity" in str(refused.value)
    assert lake.snapshot_id(lake.load_table("features.repo_activity")) == snapshot  # nothing written


def test_materialize_refuses_a_declared_feature_without_a_column_then_serves_it(home, sample_parquet, monkeypatch):
    """Issue 17: apply and materialize succeeded and online served None for the new feature of every entity."""
    from skewless.feast_ext.materialize import MaterializationRefused
    from skewless.features import definitions

    ingest.ingest([sample_parquet])
    features.build(LAST)
    feast_ops.apply()
    feast_ops.materialize(LAST)
    evolved = _repo_with(NEW, "commits_last_30d - commits_last_7d")
    monkeypatch.setattr(definitions, "REPO_ACTIVITY", evolved)
    feast_ops.apply()
    with pytest.raises(MaterializationRefused, match="feature view repo_activity declares feature commits_8_to_30d "
                                                     "but Iceberg table features.repo_activity has no column .*"
                                                     "`skewless features build`"):
        feast_ops.materialize(LAST)
    store = feast_ops.feature_store()
    with pytest.raises(MaterializationRefused, match="commits_8_to_30d"):  # plain Feast goes through the engine
        store.materialize(start_date=features.day_start(LAST), end_date=features.day_start(LAST),
                          feature_views=["repo_activity"])
    features.build_table(evolved, LAST)
    feast_ops.materialize(LAST)
    repos = sorted(set(_rows("repo_activity")["repo"]))
    got = store.get_online_features(
        features=[f"repo_activity:{n}" for n in ("commits_8_to_30d", "commits_last_30d", "commits_last_7d")],
        entity_rows=[{"repo": r} for r in repos]).to_dict()
    assert None not in got["commits_8_to_30d"]
    assert got["commits_8_to_30d"] == [a - b for a, b in zip(got["commits_last_30d"], got["commits_last_7d"])]
