"""Training of next_week_commits: labels (unit), snapshot pins, end to end through Feast and MLflow, reproducibility,
and the leakage drill on the sample."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from skewless import features, lake
from skewless.core import config, mlflow_home
from skewless.ops import feast_ops
from skewless.feast_ext import pinned
from skewless.lake import ingest, snapshots
from training import dataset, evaluate, labels, train

UTC = timezone.utc


def _commits(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"repo": [r for r, _ in rows],
                         "committed_at": pd.to_datetime([t for _, t in rows], utc=True, format="ISO8601")})


def _weeks(frame: pd.DataFrame, repo: str) -> dict[str, int]:
    own = frame[frame["repo"] == repo]
    return {f"{t:%Y-%m-%d}": int(n) for t, n in zip(own["event_timestamp"], own["label"])}


# --- labels (unit) ------------------------------------------------------------------------------------------------

def test_observed_weeks_partial_final_week_and_empty_weeks():
    # 2024-01-01 is a Monday. First commit Wed 01-03: the first full week starts 01-08. Last commit Thu 02-15: the
    # week of 02-12 is partial (excluded, with its commits); 02-05 ends exactly at 02-12 <= 02-15 (observed).
    f = labels.weekly_counts(_commits([
        ("a", "2024-01-03 10:00"), ("a", "2024-01-04 10:00"),            # partial first week: no example
        ("a", "2024-01-08 00:00"), ("a", "2024-01-14 23:59:59"),          # week 01-08: 2 (both bounds inside)
        ("a", "2024-01-29 00:00:00"), ("a", "2024-02-04 23:59:59"),       # week 01-29: 2; weeks 01-15, 01-22: 0
        ("a", "2024-02-12 09:00"), ("a", "2024-02-15 08:00"),             # final partial week: no example
    ]))
    assert _weeks(f, "a") == {"2024-01-08": 2, "2024-01-15": 0, "2024-01-22": 0, "2024-01-29": 2, "2024-02-05": 0}
    assert f["label"].dtype == np.int64
    assert str(f["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert (f["event_timestamp"].dt.dayofweek == 0).all()


def test_unobserved_weeks_after_a_repos_last_commit_are_absent_not_zero():
    f = labels.weekly_counts(_commits([
        ("long", "2024-01-01 12:00"), ("long", "2024-03-01 12:00"),
        ("short", "2024-01-01 00:00"), ("short", "2024-01-10 12:00"), ("short", "2024-01-15 06:00"),
    ]))
    # "short" starts exactly at Monday 00:00 (a full week) and ends 01-15: weeks 01-01 and 01-08 only.
    assert _weeks(f, "short") == {"2024-01-01": 1, "2024-01-08": 1}
    assert min(_weeks(f, "long")) == "2024-01-08" and max(_weeks(f, "long")) == "2024-02-19"
    assert sum(_weeks(f, "long").values()) == 0  # observed, without commits


def test_last_commit_on_a_monday_closes_the_previous_week():
    f = labels.weekly_counts(_commits([("r", "2024-01-01 05:00"), ("r", "2024-01-10 00:00"),
                                       ("r", "2024-01-22 10:00")]))
    assert _weeks(f, "r") == {"2024-01-08": 1, "2024-01-15": 0}


def test_a_repo_without_a_full_observed_week_has_no_example():
    f = labels.weekly_counts(_commits([("tiny", "2024-01-02 10:00"), ("tiny", "2024-01-12 10:00")]))
    assert f.empty and list(f.columns) == ["repo", "event_timestamp", "label"]


def test_labels_reject_bad_input():
    with pytest.raises(labels.LabelError, match="timezone-aware"):
        labels.weekly_counts(pd.DataFrame({"repo": ["r"], "committed_at": pd.to_datetime(["2024-01-01"])}))
    with pytest.raises(labels.LabelError, match="committed_at"):
        labels.weekly_counts(pd.DataFrame({"repo": ["r"]}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["x", "y", "z"]),
                          st.integers(min_value=0, max_value=120 * 86_400)), min_size=1, max_size=60))
def test_weekly_counts_match_a_brute_force_reference(events):
    origin = datetime(2024, 3, 6, 13, 0, tzinfo=UTC)  # a Wednesday
    rows = [(r, origin + timedelta(seconds=s)) for r, s in events]
    got = labels.weekly_counts(pd.DataFrame({"repo": [r for r, _ in rows],
                                             "committed_at": pd.to_datetime([t for _, t in rows], utc=True)}))
    expected = {}
    for repo in {r for r, _ in rows}:
        ts = sorted(t for r, t in rows if r == repo)
        last_day = datetime.combine(ts[-1].date(), datetime.min.time(), tzinfo=UTC)
        monday = datetime.combine(ts[0].date() - timedelta(days=ts[0].weekday()), datetime.min.time(), tzinfo=UTC)
        while monday < ts[0]:
            monday += timedelta(weeks=1)
        while monday + timedelta(weeks=1) <= last_day:
            expected[(repo, monday)] = sum(monday <= t < monday + timedelta(weeks=1) for t in ts)
            monday += timedelta(weeks=1)
    assert {(r, t.to_pydatetime()): n for r, t, n in got.itertuples(index=False)} == expected


def test_baselines_use_only_earlier_observed_weeks():
    f = pd.DataFrame({"repo": ["r"] * 6,
                      "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22",
                                                         "2024-01-29", "2024-02-05"], utc=True),
                      "label": [4, 0, 8, 2, 6, 1]})
    b = labels.label_baselines(f)
    assert b["last_week"].tolist() == [0.0, 4, 0, 8, 2, 6]
    assert b["mean_4w"].tolist() == [0.0, 4, 2, 4, 3.5, 4]


# --- snapshot pins ------------------------------------------------------------------------------------------------

def test_pins_are_validated():
    with pytest.raises(snapshots.SnapshotPinError, match="namespace.table"):
        with snapshots.pinned_snapshots({"repo_activity": 1}):
            pass
    with pytest.raises(snapshots.SnapshotPinError, match="integer"):
        with snapshots.pinned_snapshots({"features.repo_activity": "1"}):
            pass


# --- end to end on the sample -------------------------------------------------------------------------------------

def _last_day() -> date:
    col = lake.commits_table().scan(selected_fields=("committed_at",)).to_arrow()["committed_at"]
    return pc.max(col).as_py().astimezone(UTC).date()


def _load(paths: list[Path]) -> None:
    """ingest -> features build (through the newest commit's day) -> apply, in the active home."""
    ingest.ingest(paths)
    features.build(_last_day())
    feast_ops.apply()


@pytest.fixture(scope="module")
def sample_home(tmp_path_factory: pytest.TempPathFactory, sample_parquet: Path):
    """One fresh home (local profile) with the sample ingested, built and applied, shared by this module's tests
    that only read it (they add MLflow runs and a drill table, nothing a later test depends on)."""
    h = tmp_path_factory.mktemp("sample") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKEWLESS_ENV", "local")
        mp.setenv("SKEWLESS_HOME", str(h))
        mp.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for k, v in config.profile().feast_env().items():
            mp.setenv(k, v)
        h.mkdir(parents=True)
        _load([sample_parquet])
        yield h


def test_train_end_to_end_logs_and_registers(sample_home: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    result = train.train()
    p = config.profile()
    assert p.mlflow_tracking_uri == f"sqlite:///{sample_home / 'mlflow.db'}"
    client = MlflowClient(p.mlflow_tracking_uri, p.mlflow_tracking_uri)
    run = client.get_run(result.run_id)

    # metrics per split for the model and both baselines, equal to the returned table
    for split in ("train", "test"):
        for m in train.METRICS:
            assert run.data.metrics[f"{split}_{m}"] == pytest.approx(result.metrics.loc[(split, "model"), m])
            for b in labels.BASELINES:
                assert run.data.metrics[f"{split}_{m}_{b}"] == pytest.approx(result.metrics.loc[(split, b), m])
    assert run.data.params["cutoff"] == f"{result.cutoff:%Y-%m-%d}"
    assert run.data.params["feature_service"] == train.DEFAULT_SERVICE

    # the exact feature list is the service's (view:feature -> Feast type), as a tag, a param and a JSON artifact
    store = feast_ops.feature_store()
    names = dataset.feature_names(store.get_feature_service(train.DEFAULT_SERVICE))
    listed = {f"repo_activity:{n}": ("Float64" if n in ("mean_files_per_commit_last_30d", "days_since_last_commit")
                                     else "Int64") for n in names}
    assert len(names) == 6 and result.training_set.features == listed
    assert run.data.params["features"] == ",".join(listed)
    assert mlflow_home.recorded_features(run.data.tags) == listed
    assert list(json.loads(run.data.tags["features"])) == list(listed)  # in the service's order
    assert mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/feature_service.json") == {
        "feature_service": train.DEFAULT_SERVICE, "features": listed}
    assert run.info.artifact_uri.startswith(p.mlflow_artifacts.as_uri())

    # the snapshot of every table read, as tags: exactly the current snapshots of this home
    expected = {config.COMMITS_TABLE: lake.snapshot_id(lake.commits_table()),
                features.REPO_ACTIVITY.identifier: lake.snapshot_id(lake.load_table(features.REPO_ACTIVITY.identifier))}
    assert result.snapshots == expected
    for ident, snap in expected.items():
        assert run.data.tags[f"iceberg.snapshot.{ident}"] == str(snap)

    # registered, with the feature service as a model-version tag; the signature's columns are the features
    mv = client.get_model_version(train.MODEL_NAME, result.model_version)
    assert mv.run_id == result.run_id and mv.tags["feature_service"] == train.DEFAULT_SERVICE
    assert mlflow_home.recorded_features(mv.tags) == listed
    with train.mlflow_session(p):
        model = mlflow.pyfunc.load_model(f"models:/{train.MODEL_NAME}/{result.model_version}")
    assert "MLFLOW_TRACKING_URI" not in os.environ, "training leaked its tracking URI into the environment"
    assert model.metadata.get_input_schema().input_names() == names

    # behaviour: column order cannot matter; predictions are positive counts that follow recent activity
    frame = result.training_set.frame
    x = train.features_of(frame, names)
    pred = np.asarray(model.predict(x))
    np.testing.assert_allclose(np.asarray(model.predict(x[list(reversed(names))])), pred)
    assert (pred > 0).all()
    quiet, busy = x.copy().iloc[:1], x.copy().iloc[:1]
    quiet.loc[:, ["commits_last_7d", "commits_last_30d"]] = 0.0
    busy.loc[:, ["commits_last_7d", "commits_last_30d"]] = [60.0, 240.0]
    assert model.predict(busy)[0] > model.predict(quiet)[0]

    # the training rows are the observed weeks with Feast's point-in-time features
    assert len(frame) == len(labels.weekly_labels().frame)
    assert frame["commits_last_7d"].notna().all()


def test_train_cli_on_an_empty_home_says_what_to_run(home: Path):
    from skewless.cli import app

    r = CliRunner().invoke(app, ["train"])
    assert r.exit_code == 1 and "run `skewless ingest` first" in r.output


def test_train_cli_prints_run_and_metrics(sample_home: Path):
    from skewless.cli import app

    runner = CliRunner()
    for bad, why in (("2026-02-17", "not a Monday"), ("next week", "not a date"), ("2030-01-07", "leaves")):
        r = runner.invoke(app, ["train", "--cutoff", bad])
        assert r.exit_code == 1 and why in r.output, r.output
    r = runner.invoke(app, ["train", "--cutoff", "2026-03-02"])
    assert r.exit_code == 0, r.output
    assert "run id:" in r.output and "model version: next_week_commits " in r.output
    assert "weeks from 2026-03-02" in r.output
    for predictor in train.PREDICTORS:
        assert predictor in r.output


def test_train_chooses_the_service_and_records_its_exact_features(sample_home: Path):
    """`--service NAME`: the run and its version name the service and exactly its features; an unknown service (or one
    not keyed by repo) is refused, listing the registered services."""
    from feast import FeatureService

    from skewless.core.config import NEXT_WEEK_COMMITS_MODEL

    store = feast_ops.feature_store()
    v2 = FeatureService(name="next_week_commits_v2", tags={"model": NEXT_WEEK_COMMITS_MODEL},
                        features=[store.get_feature_view("repo_activity")[["commits_last_30d", "commits_last_7d"]]])
    store.apply([v2])
    try:
        result = train.train(service="next_week_commits_v2", cutoff="2026-03-02", register=False)
        p = config.profile()
        with train.mlflow_session(p) as (_, client, _):
            run = client.get_run(result.run_id)
        listed = {"repo_activity:commits_last_30d": "Int64", "repo_activity:commits_last_7d": "Int64"}
        assert result.feature_service == "next_week_commits_v2" and result.training_set.features == listed
        assert run.data.tags["feature_service"] == run.data.params["feature_service"] == "next_week_commits_v2"
        assert mlflow_home.recorded_features(run.data.tags) == listed
        assert run.data.params["features"] == "repo_activity:commits_last_30d,repo_activity:commits_last_7d"
        assert list(result.training_set.frame.columns[2:4]) == ["commits_last_30d", "commits_last_7d"]
    finally:
        store.delete_feature_service("next_week_commits_v2")

    from skewless.cli import app

    r = CliRunner().invoke(app, ["train", "--service", "next_week_commits_v9"])
    assert r.exit_code == 1, r.output
    assert "'next_week_commits_v9' is not registered" in r.output
    assert "author_profile_v1, next_week_commits_live_v1, next_week_commits_v1" in r.output
    r = CliRunner().invoke(app, ["train", "--service", "author_profile_v1"])
    assert r.exit_code == 1 and "keyed by author_id" in r.output, r.output


def test_training_set_is_rebuilt_identically_from_logged_snapshots(home: Path, sample_parquet: Path,
                                                                   tmp_path: Path):
    full = pq.read_table(sample_parquet)
    # First state: the commits before May 2026, minus every commit whose sha starts with "a" (they arrive late,
    # inside already built days, so the second build restates feature rows the first training read).
    early = full.filter(pc.and_(pc.less(full["committed_at"], pd.Timestamp("2026-05-01", tz="UTC")),
                                pc.invert(pc.starts_with(full["sha"], "a"))))
    first = tmp_path / "early.parquet"
    pq.write_table(early, first)
    _load([first])
    trained = train.train(register=False)
    logged = trained.training_set
    assert trained.model_version is None
    first_gate = evaluate.compare(trained.run_id)  # nothing registered yet: the candidate wins
    assert first_gate.better and first_gate.registered is None
    assert train.register(trained.run_id) == "1"

    _load([sample_parquet])  # the rest arrives: later weeks, and late commits inside the history
    current = dataset.build(train.DEFAULT_SERVICE)
    assert current.snapshots != logged.snapshots
    common = current.rows.merge(logged.rows, on=labels.KEYS, suffixes=("_now", "_then"))
    assert (common["commits_last_30d_now"] != common["commits_last_30d_then"]).any(), \
        "the late commits should have restated features of weeks the first training read"

    rebuilt = train.rebuild(trained.run_id)
    assert rebuilt.snapshots == logged.snapshots
    pd.testing.assert_frame_equal(rebuilt.rows.sort_values(labels.KEYS).reset_index(drop=True),
                                  logged.rows.sort_values(labels.KEYS).reset_index(drop=True), check_exact=True)


def test_a_pin_the_stock_duckdb_store_would_ignore_is_detected(sample_home: Path):
    store = feast_ops.feature_store()
    entity_df = pd.DataFrame({"repo": ["spf13/cobra"], "event_timestamp": [pd.Timestamp("2025-01-06", tz="UTC")]})
    service = store.get_feature_service(train.DEFAULT_SERVICE)
    table = lake.load_table(features.REPO_ACTIVITY.identifier)
    pins = {features.REPO_ACTIVITY.identifier: lake.snapshot_id(table)}
    pinnable = pinned.pinnable(store)
    assert pinned.offline_store_class(pinnable).honours_snapshot_pins
    with snapshots.pinned_snapshots(pins) as reads:
        pinnable.get_historical_features(entity_df=entity_df, features=service).to_df()
    assert reads.check() == pins
    if pinned.offline_store_class(store) is pinned.DuckDBOfflineStore:
        with snapshots.pinned_snapshots(pins) as reads:
            store.get_historical_features(entity_df=entity_df, features=service).to_df()
        with pytest.raises(snapshots.SnapshotPinError, match="does not honour"):
            reads.check()
    with snapshots.pinned_snapshots({features.REPO_ACTIVITY.identifier: 12345}):
        with pytest.raises(snapshots.SnapshotPinError, match="has no snapshot 12345"):
            pinnable.get_historical_features(entity_df=entity_df, features=service).to_df()


def test_weekly_gate_until_register_compare(sample_home: Path):
    """The weekly DAG's calls: a candidate bounded by its interval, compared, registered, then not re-promoted."""
    from mlflow.tracking import MlflowClient

    until = date(2026, 5, 31)
    candidate = train.train(until=until, register=False)
    frame = candidate.training_set.frame
    assert candidate.model_version is None
    assert (frame["event_timestamp"] + pd.Timedelta(weeks=1) <= pd.Timestamp(until, tz="UTC")).all()
    assert frame["event_timestamp"].max() == pd.Timestamp("2026-05-18", tz="UTC")

    version = train.register(candidate.run_id)
    p = config.profile()
    mv = MlflowClient(p.mlflow_tracking_uri, p.mlflow_tracking_uri).get_model_version(train.MODEL_NAME, version)
    assert mv.run_id == candidate.run_id and mv.tags["feature_service"] == train.DEFAULT_SERVICE
    assert {k: v for k, v in mv.tags.items() if k.startswith("iceberg.snapshot.")} == {
        f"iceberg.snapshot.{k}": str(v) for k, v in candidate.snapshots.items()}

    again = train.train(until=until, register=False)  # the same week re-run: same rows, same model
    gate = evaluate.compare(again.run_id)
    assert gate.registered_version == version and gate.n_rows == len(dataset.split(frame)[1])
    assert gate.registered == pytest.approx(gate.candidate) and not gate.better
    foreign = _foreign_run(p)
    with pytest.raises(train.TrainingError, match="not a training run"):
        train.register(foreign)


def _foreign_run(p: config.Profile) -> str:
    """A run in the training experiment that is not a training run."""
    with train.mlflow_session(p) as (mlflow, _, exp_id), mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_param("x", 1)
    return run.info.run_id


# --- the leakage drill on the sample ------------------------------------------------------------------------------

def test_leakage_drill_writes_its_report(sample_home: Path, tmp_path: Path):
    from skewless.drills import leakage as drills

    variant = features.build_variant(features.REPO_ACTIVITY, "authored_at", _last_day())
    assert variant == "features.repo_activity__by_authored_at"
    result = drills.run_leakage({"repo_activity": variant}, tmp_path / "reports")
    t = result.table.set_index("variant")
    assert list(t.index) == ["point_in_time", "latest_value", "authored_at", "baseline_last_week",
                             "baseline_mean_4w"]
    for m in train.METRICS:  # point-in-time and the baselines are scored on the same features both ways
        for v in ("point_in_time", "baseline_last_week", "baseline_mean_4w"):
            assert t.loc[v, f"offline_{m}"] == t.loc[v, f"honest_{m}"]
        assert t.loc["latest_value", f"offline_{m}"] != t.loc["latest_value", f"honest_{m}"]
    assert result.differs["point_in_time"] == 0.0
    assert result.differs["latest_value"] > 0.5 and 0.0 < result.differs["authored_at"] < 1.0
    md = result.markdown.read_text()
    assert "| latest_value |" in md and f"{t.loc['authored_at', 'honest_mae']:.3f}" in md
    assert result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not a drill variant"):
        features.build_variant(features.REPO_ACTIVITY, "committed_at", _last_day())


# --- fresh vs daily features on the same instants (issue 16: a model on fresh features) ---------------------------

def test_weekly_counts_with_an_offset_label_the_week_from_the_instant():
    rows = [("r", "2024-01-01 05:00"), ("r", "2024-01-04 11:00"), ("r", "2024-01-04 12:00"),
            ("r", "2024-01-11 11:59"), ("r", "2024-01-11 12:00"), ("r", "2024-01-30 10:00")]
    thursday_noon = labels.weekly_counts(_commits(rows), pd.Timedelta(days=3, hours=12))
    got = {f"{t:%Y-%m-%d %H:%M}": int(n) for t, n in zip(thursday_noon["event_timestamp"], thursday_noon["label"])}
    # the first instant at or after the first commit is Thu 01-04 12:00; [T, T+7d) ends by the last commit's day
    assert got == {"2024-01-04 12:00": 2, "2024-01-11 12:00": 1, "2024-01-18 12:00": 0}
    assert labels.weekly_counts(_commits(rows), pd.Timedelta(0)).equals(labels.weekly_counts(_commits(rows)))
    with pytest.raises(labels.LabelError, match="offset"):
        labels.weekly_counts(_commits(rows), pd.Timedelta(days=7))


def test_fresh_model_drill_compares_on_the_same_instants(sample_home: Path, tmp_path: Path):
    from skewless.drills import fresh_model
    from skewless.lake import events

    n_commits = lake.commits_table().scan(selected_fields=("sha",)).to_arrow().num_rows
    assert events.backfill() == n_commits
    assert events.backfill() == 0, "a second backfill wrote again"
    store = dataset.default_store()
    monday, _ = fresh_model.examples(store, fresh_model.GRIDS["monday"])
    # the same definition computed two ways agrees at a day boundary: the daily 7-day window (built per UTC day)
    # and the live one evaluated at Monday 00:00 from the backfilled versions
    assert len(monday) > 1000 and (monday["commits_last_7d"] == monday["commits_last_7d_live"]).all()
    midweek, _ = fresh_model.examples(store, fresh_model.GRIDS["midweek"])
    assert (midweek["event_timestamp"].dt.dayofweek == 3).all() and (midweek["event_timestamp"].dt.hour == 12).all()
    assert (midweek["commits_last_7d"] != midweek["commits_last_7d_live"]).any(), "mid-week, the windows moved"

    result = fresh_model.run_fresh_model(tmp_path / "reports")
    t = result.table
    assert set(t["grid"]) == {"monday", "midweek"}
    assert set(t["predictor"]) == {"daily", "fresh", "daily+fresh", "baseline_last_week", "baseline_mean_4w"}
    for grid, part in t.groupby("grid"):
        assert part["n_test"].nunique() == 1, f"{grid}: predictors scored on different instants"
    assert np.isfinite(t[["mae", "rmse", "poisson_deviance"]].to_numpy()).all()
    d = result.deltas
    assert ((d["ci_low"] <= d["minus_daily"]) & (d["minus_daily"] <= d["ci_high"])).all()
    md = result.markdown.read_text()
    assert "| midweek | daily+fresh |" in md and result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- issue 17: table evolution keeps pinned versions rebuildable; training refuses values older than asked --------

def test_a_pinned_training_set_is_rebuilt_after_its_table_evolved(home: Path, sample_parquet: Path, tmp_path: Path):
    """ADR 0019: a new column is added and backfilled in place; the snapshot a registered version pins stays."""
    import dataclasses

    import pyarrow as pa

    full = pq.read_table(sample_parquet)
    early = tmp_path / "early.parquet"
    pq.write_table(full.filter(pc.less(full["committed_at"], pd.Timestamp("2026-05-01", tz="UTC"))), early)
    _load([early])
    trained = train.train(register=False)
    new = features.Feature("commits_8_to_30d", pa.int64(), "commits with committed_at in [D-30d, D-7d)")
    evolved = dataclasses.replace(
        features.REPO_ACTIVITY, features=features.REPO_ACTIVITY.features + (new,),
        sql=f"SELECT *, commits_last_30d - commits_last_7d AS {new.name} FROM ({features.REPO_SQL}) ORDER BY ALL")
    assert features.build_table(evolved, _last_day()).added_columns == (new.name,)
    rebuilt = train.rebuild(trained.run_id)
    assert rebuilt.snapshots == trained.training_set.snapshots
    pd.testing.assert_frame_equal(rebuilt.rows.sort_values(labels.KEYS).reset_index(drop=True),
                                  trained.training_set.rows.sort_values(labels.KEYS).reset_index(drop=True),
                                  check_exact=True)


def test_training_refuses_weeks_after_the_last_built_day(home: Path, sample_parquet: Path):
    """Issue 17: features asked for after the last built day came back as that day's values, silently."""
    from skewless.feast_ext.retrieval import RetrievalError

    ingest.ingest([sample_parquet])
    features.build(date(2026, 6, 1))
    feast_ops.apply()
    with pytest.raises(RetrievalError, match="last built day 2026-06-01.*skewless features build"):
        dataset.build(train.DEFAULT_SERVICE)
