"""The Spark engine: same SQL, same Iceberg tables, same Feast retrieval as DuckDB (ADR 0008).

Pure tests (translation rules, catalog URL, yaml drift) always run. Tests marked ``spark`` start ONE Spark session
for the module (``local[2]``) over one SKEWLESS_HOME and skip, with the reason, when Java or a jar is missing.
"""

from __future__ import annotations

import contextlib
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from skewless import features
from skewless.core import config
from skewless.features.spark.dialect import TranslationError, to_spark

SAMPLE = config.PROJECT_ROOT / "src" / "skewless" / "data" / "sample_commits.parquet"
#: The first builds stop here; commits held back from before it arrive late and force restatements.
FIRST_DAY = date(2026, 8, 10)
LAST_DAY = date(2026, 8, 22)


# --- pure: the translation rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [features.REPO_SQL, features.AUTHOR_SQL], ids=["repo", "author"])
def test_feature_sql_translates_without_duckdb_only_constructs(sql):
    out = to_spark(sql).upper()
    assert not re.search(r"\bASOF\s+(LEFT\s+)?JOIN", out)
    for gone in ("EPOCH_US", "TO_DAYS", "GENERATE_SERIES", "UNNEST", "$UNTIL", "::"):
        assert gone not in out
    assert ":until" in to_spark(sql)


def test_division_is_double_division_as_in_duckdb():
    assert "CAST(a AS DOUBLE) / CAST(86400000000.0 AS DOUBLE)" in to_spark("SELECT a / 86400000000.0 FROM t")


def test_band_join_gets_a_bucket_key_and_keeps_its_condition():
    out = to_spark(features.REPO_SQL)
    assert "__band = FLOOR(UNIX_MICROS(d.d) / 2592000000000)" in out
    assert "c.committed_at >= d.d - INTERVAL '30' DAY" in out and "c.committed_at < d.d" in out
    untouched = "SELECT a.k, b.v FROM a LEFT JOIN b ON a.k = b.k AND b.t >= a.x - INTERVAL 30 DAY"  # one bound only
    assert "__band" not in to_spark(untouched)


def test_scalar_rules():
    out = to_spark("SELECT epoch_us(t.x) AS u, t.w - to_days(7 * t.n) AS g FROM t")
    assert "UNIX_MICROS(t.x)" in out and "MAKE_DT_INTERVAL(7 * t.n)" in out


@pytest.mark.parametrize("sql, problem", [
    ("SELECT a.k, x FROM a ASOF LEFT JOIN b ON a.k = b.k AND a.t > b.t", "qualify x"),
    ("SELECT a.k, b.v FROM a ASOF LEFT JOIN b ON a.k = b.k AND a.t < b.t", "latest b before a"),
    ("SELECT a.k, b.v FROM a ASOF JOIN b ON a.k = b.k AND a.t > b.t", "only ASOF LEFT JOIN"),
    ("SELECT a.k, b.v FROM a ASOF LEFT JOIN b ON a.k = b.k", "without an inequality"),
    ("SELECT a.k, b.v FROM (SELECT 1 AS k) AS a ASOF LEFT JOIN b ON a.k = b.k AND a.t > b.t", "FROM <table>"),
])
def test_asof_forms_without_an_exact_rule_are_refused(sql, problem):
    with pytest.raises(TranslationError, match=problem):
        to_spark(sql)


# --- pure: catalog URL and profile ---------------------------------------------------------------------------------

def test_jdbc_catalog_properties_from_the_profile(tmp_path):
    from skewless.features.spark import jdbc_catalog_properties

    local = config.profile({"SKEWLESS_HOME": str(tmp_path)})
    props = jdbc_catalog_properties(local)
    assert props["uri"] == f"jdbc:sqlite:{tmp_path / 'catalog.db'}"
    assert props["warehouse"] == (tmp_path / "warehouse").as_uri()
    prod = config.profile({"SKEWLESS_ENV": "production", "SKEWLESS_HOME": str(tmp_path),
                           "SKEWLESS_PG_URL": "postgresql+psycopg://alice:s3cret@db.internal:6543/lake"})
    props = jdbc_catalog_properties(prod)
    assert props["uri"] == "jdbc:postgresql://db.internal:6543/lake"
    assert (props["jdbc.user"], props["jdbc.password"]) == ("alice", "s3cret")


def test_engine_switch_is_decided_by_the_profile(tmp_path):
    base = {"SKEWLESS_HOME": str(tmp_path)}
    assert config.profile(base).engine == "duckdb"
    sp = config.profile({**base, "SKEWLESS_ENGINE": "Spark", "SKEWLESS_SPARK_MASTER": "local[2]"})
    assert (sp.engine, sp.spark_master, sp.feature_store_yaml.name) == ("spark", "local[2]", "feature_store.spark.yaml")
    prod = config.profile({**base, "SKEWLESS_ENV": "production", "SKEWLESS_ENGINE": "spark"})
    assert prod.feature_store_yaml.name == "feature_store.production.spark.yaml"
    assert sp.feast_env()["SKEWLESS_ENGINE"] == "spark"
    with pytest.raises(config.ProfileError, match="SKEWLESS_ENGINE='flink' is not an engine"):
        config.profile({**base, "SKEWLESS_ENGINE": "flink"})


@pytest.mark.parametrize("env", ["local", "production"])
def test_spark_yaml_differs_from_its_profile_yaml_only_in_the_offline_store(env):
    """Registry and online store must be the profile's own: the two yamls are one deployment, two engines. (A
    materialization engine, ``batch_engine``, belongs to its offline store, so it may differ too, as does Feast's
    coercion of naive entity timestamps, ``coerce_tz_aware``, which the Iceberg store does itself.)"""
    base = config.profile({"SKEWLESS_ENV": env})
    spark = config.profile({"SKEWLESS_ENV": env, "SKEWLESS_ENGINE": "spark"})
    a, b = (yaml.safe_load(p.feature_store_yaml.read_text()) for p in (base, spark))
    assert b.pop("offline_store") == {"type": "skewless.feast_ext.spark_offline.IcebergSparkOfflineStore"}
    # coerce_tz_aware: false lets the Iceberg store see (and report) naive timestamps; the Spark store keeps Feast's
    for key in ("offline_store", "batch_engine", "coerce_tz_aware"):
        a.pop(key, None)
    b.pop("batch_engine", None)
    assert a == b


def test_exact_ttl_rewrites_the_rendered_interval():
    from feast import Entity, FeatureView
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    from skewless.feast_ext.spark_offline import exact_ttl

    fv = FeatureView(name="v", entities=[Entity(name="e", join_keys=["e"])], ttl=timedelta(days=1, microseconds=-1),
                     source=SparkSource(name="s", table="t", timestamp_field="ts"))
    q = ("CREATE OR REPLACE TEMPORARY VIEW v__cleaned AS ( ... AND subquery.event_timestamp >= "
         "entity_dataframe.entity_timestamp - 86399 * interval '1' second ... )---EOS---SELECT 1")
    assert "- make_dt_interval(0, 0, 0, 86399.999999)" in exact_ttl(q, [fv])
    with pytest.raises(RuntimeError, match="no longer renders the TTL of v"):
        exact_ttl(q.replace("86399 * interval", "86399 * INTERVAL"), [fv])


# --- Spark: one session over one home for the rest of the module ---------------------------------------------------

def _missing() -> str | None:
    from skewless.features import spark as sk

    return sk.missing(config.profile({"SKEWLESS_HOME": "/nonexistent"}))


_MISSING = _missing()


def needs_spark(fn):
    """Mark a test as a Spark test; skip it, with the reason, when this machine cannot start the engine."""
    return pytest.mark.spark(pytest.mark.skipif(_MISSING is not None, reason=f"Spark engine: {_MISSING}")(fn))


def _split_sample(tmp: Path) -> tuple[Path, Path]:
    """The sample minus one repo's commits of the week before FIRST_DAY, and those commits (they arrive late)."""
    t = pq.read_table(SAMPLE)
    ts = t["committed_at"].type
    repo = sorted(set(t["repo"].to_pylist()))[0]
    start, end = (pa.scalar(features.day_start(d), ts) for d in (FIRST_DAY - timedelta(days=7), FIRST_DAY))
    late = pc.and_(pc.equal(t["repo"], repo),
                   pc.and_(pc.greater_equal(t["committed_at"], start), pc.less(t["committed_at"], end)))
    assert pc.sum(late).as_py() > 0, "the sample has no commit to hold back"
    first, second = tmp / "first.parquet", tmp / "late.parquet"
    pq.write_table(t.filter(pc.invert(late)), first)
    pq.write_table(t.filter(late), second)
    return first, second


def _use(mp: pytest.MonkeyPatch, p: config.Profile) -> None:
    for k, v in p.feast_env().items():
        mp.setenv(k, v)


#: A view over repo_activity's source with a finite TTL (the real views have none): exercises the TTL edges.
PROBE = "repo_activity_ttl_probe"


@contextlib.contextmanager
def _ttl_probe(p: config.Profile):
    """The probe view registered for the block (materialize would otherwise look for its own table)."""
    from feast import FeatureView, Field

    from skewless.ops import feast_ops

    store = feast_ops.feature_store(p)
    real = store.get_feature_view("repo_activity")
    store.apply([FeatureView(name=PROBE, entities=[store.get_entity("repo")],
                             ttl=timedelta(days=1, microseconds=-1),
                             schema=[Field(name=f.name, dtype=f.dtype) for f in real.features],
                             source=real.batch_source, online=False)])
    try:
        yield
    finally:
        store.delete_feature_view(PROBE)


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """Two homes fed the same commits in the same two steps (late commits in between): DuckDB builds one, Spark
    the other. The Spark home is then registered in Feast (its one registry serves both engines' yamls)."""
    from skewless.ops import feast_ops
    from skewless.lake import ingest
    from skewless.features import spark as sk

    tmp = tmp_path_factory.mktemp("spark")
    first, late = _split_sample(tmp)
    env = {"SKEWLESS_ENV": "local", "SKEWLESS_SPARK_MASTER": "local[2]"}
    profiles = {e: config.profile({**env, "SKEWLESS_HOME": str(tmp / e), "SKEWLESS_ENGINE": e})
                for e in ("duckdb", "spark")}
    # The Spark-built home queried through the DuckDB engine's yaml: the reference retrieval.
    reference = config.profile({**env, "SKEWLESS_HOME": str(tmp / "spark"), "SKEWLESS_ENGINE": "duckdb"})
    steps: dict[str, list] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
        for p in profiles.values():  # ingest and lake helpers read the active profile
            _use(mp, p)
            ingest.ingest([first])
            steps[p.engine] = [features.build(FIRST_DAY, p)]
            ingest.ingest([late])
            steps[p.engine].append(features.build(LAST_DAY, p))
        feast_ops.apply(reference)
        _use(mp, profiles["spark"])
        try:
            yield {"profiles": profiles, "steps": steps, "reference": reference}
        finally:
            sk.stop()


def _table(p: config.Profile, t: features.FeatureTable, snapshot_id: int | None = None) -> pa.Table:
    from skewless import lake

    rows = lake.load_table(t.identifier, p).scan(snapshot_id=snapshot_id).to_arrow()
    return rows.sort_by([(t.entity_key, "ascending"), ("event_timestamp", "ascending")])


@needs_spark
@pytest.mark.parametrize("table", features.TABLES, ids=lambda t: t.name)
def test_spark_build_equals_duckdb_build_row_for_row(lakes, table):
    a, b = (_table(lakes["profiles"][e], table) for e in ("duckdb", "spark"))
    assert b.num_rows > 0 and a.schema.equals(b.schema)
    assert a.equals(b)


@needs_spark
@pytest.mark.parametrize("table", features.TABLES, ids=lambda t: t.name)
def test_spark_build_is_incremental_with_the_same_restatements(lakes, table):
    i = features.TABLES.index(table)
    for d_step, s_step in zip(*(lakes["steps"][e] for e in ("duckdb", "spark"))):
        d, s = d_step[i], s_step[i]
        assert (d.built_through, d.rows_written, d.restated_entities) == (s.built_through, s.rows_written,
                                                                          s.restated_entities)
    assert lakes["steps"]["spark"][1][i].restated_entities > 0  # the late commits restated rows, as on DuckDB


def _entity_rows(p: config.Profile, table: features.FeatureTable, max_entities: int = 40) -> pd.DataFrame:
    """Entity rows at midnight, mid-day and the last half second of days across each entity's history, at noon of
    every day around the late commits, after the last built day (repo TTL expiry), before any row, and for an
    unknown entity; for at most ``max_entities`` entities (always the first, whose repo got late commits)."""
    rows = _table(p, table).select([table.entity_key, "event_timestamp"]).to_pandas()
    keys = sorted(rows[table.entity_key].unique())
    keys = keys[:: max(1, len(keys) // max_entities)]
    out = []
    for key, grp in rows[rows[table.entity_key].isin(keys)].groupby(table.entity_key):
        for d in grp["event_timestamp"].iloc[:: max(1, len(grp) // 4)].head(4):
            out += [(key, d), (key, d + timedelta(hours=12)), (key, d + timedelta(days=1, microseconds=-500_000))]
        out += [(key, features.day_start(FIRST_DAY) + timedelta(days=n, hours=12))
                for n in range(-9, (LAST_DAY - FIRST_DAY).days + 1)]
        out += [(key, grp["event_timestamp"].min() - timedelta(days=3)),
                (key, features.day_start(LAST_DAY) + timedelta(days=2, hours=1))]
    out.append(("nobody/nothing" if table.entity_key == "repo" else "a_000000000000", features.day_start(LAST_DAY)))
    df = pd.DataFrame(out, columns=[table.entity_key, "event_timestamp"])
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


def _retrieve(p: config.Profile, service: str, entity_df: pd.DataFrame, key: str) -> pd.DataFrame:
    from skewless.ops import feast_ops

    store = feast_ops.feature_store(p)
    df = store.get_historical_features(entity_df=entity_df.copy(), features=store.get_feature_service(service)).to_df()
    return df.sort_values([key, "event_timestamp"]).reset_index(drop=True)


@needs_spark
@pytest.mark.parametrize("table, service", [(features.REPO_ACTIVITY, "next_week_commits_v1"),
                                            (features.AUTHOR_ACTIVITY, "author_profile_v1")], ids=["repo", "author"])
def test_spark_retrieval_equals_duckdb_retrieval(lakes, table, service):
    spark_p, reference = lakes["profiles"]["spark"], lakes["reference"]
    entity_df = _entity_rows(spark_p, table)
    expected = _retrieve(reference, service, entity_df, table.entity_key)
    got = _retrieve(spark_p, service, entity_df, table.entity_key)
    assert len(got) == len(entity_df)
    names = [f.name for f in table.features]
    assert expected[names].notna().any().all() and expected[names].isna().any().all()  # values and nulls both occur
    pd.testing.assert_frame_equal(got[[table.entity_key, "event_timestamp", *names]],
                                  expected[[table.entity_key, "event_timestamp", *names]], check_dtype=True)


@needs_spark
def test_spark_retrieval_equals_duckdb_with_a_finite_ttl_and_two_views_at_once(lakes):
    from skewless.ops import feast_ops

    spark_p, reference = lakes["profiles"]["spark"], lakes["reference"]
    entity_df = _entity_rows(spark_p, features.REPO_ACTIVITY)
    refs = [f"{view}:{f.name}" for view in ("repo_activity", PROBE) for f in features.REPO_ACTIVITY.features]
    with _ttl_probe(reference):
        got, expected = (
            feast_ops.feature_store(p).get_historical_features(entity_df=entity_df.copy(), features=refs,
                                                               full_feature_names=True).to_df()
            .sort_values(["repo", "event_timestamp"]).reset_index(drop=True) for p in (spark_p, reference))
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    # The TTL really cut: some rows have repo_activity values and none from the probe (older than T - ttl) ...
    expired = expected["repo_activity__commits_last_7d"].notna() & expected[f"{PROBE}__commits_last_7d"].isna()
    assert expired.any()
    # ... and the last half second of a day still reads that day's row (1 day - 1 us, not whole seconds).
    last = entity_df["event_timestamp"].dt.strftime("%H:%M:%S.%f") == "23:59:59.500000"
    kept = expected.merge(entity_df[last], on=["repo", "event_timestamp"])[f"{PROBE}__commits_last_7d"].notna()
    assert kept.any()


@needs_spark
def test_spark_retrieval_honours_snapshot_pins(lakes):
    from skewless.ops import feast_ops
    from skewless.feast_ext.pinned import pinnable
    from skewless.lake.snapshots import pinned_snapshots

    spark_p, reference = lakes["profiles"]["spark"], lakes["reference"]
    first = lakes["steps"]["spark"][0][0].snapshot_id  # repo_activity as built through FIRST_DAY
    entity_df = _entity_rows(spark_p, features.REPO_ACTIVITY)
    pins = {features.REPO_ACTIVITY.identifier: first}
    with pinned_snapshots(pins) as reads:
        got = _retrieve(spark_p, "next_week_commits_v1", entity_df, "repo")
    assert reads.check() == pins
    with pinned_snapshots(pins):
        store = pinnable(feast_ops.feature_store(reference))
        expected = store.get_historical_features(entity_df=entity_df.copy(),
                                                 features=store.get_feature_service("next_week_commits_v1")).to_df()
    expected = expected.sort_values(["repo", "event_timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    current = _retrieve(spark_p, "next_week_commits_v1", entity_df, "repo")
    assert not current.equals(got)  # the late commits changed values: the pin really read the older snapshot


@needs_spark
def test_materialize_on_spark_matches_duckdb_offline_values(lakes):
    from skewless.ops import feast_ops, parity

    feast_ops.materialize(LAST_DAY, lakes["profiles"]["spark"])
    results = parity.check(sample=None, p=lakes["reference"])  # online (loaded by Spark) vs DuckDB offline
    assert results and all(r.ok for r in results), parity.report(results)


@needs_spark
def test_pyiceberg_and_spark_commit_to_each_others_tables(lakes):
    from skewless import lake
    from skewless.features import spark as sk

    p = lakes["profiles"]["spark"]
    spark = sk.session(p)
    spark.sql("CREATE TABLE skewless.features.spark_probe (k STRING, v BIGINT) USING iceberg")
    spark.sql("INSERT INTO skewless.features.spark_probe VALUES ('a', 1)")
    t = lake.catalog(p).load_table("features.spark_probe")
    assert t.scan().to_arrow().to_pylist() == [{"k": "a", "v": 1}]
    t.append(pa.table({"k": ["b"], "v": pa.array([2], pa.int64())}))  # pyiceberg commits while Spark is up
    assert [tuple(r) for r in spark.sql("SELECT k, v FROM skewless.features.spark_probe ORDER BY k").collect()] == [
        ("a", 1), ("b", 2)]
    lake.catalog(p).drop_table("features.spark_probe")


@needs_spark
def test_asof_rule_matches_duckdb_on_ties_nulls_and_misses(lakes):
    """Rule 1 against DuckDB's own ASOF JOIN: equal times (strict and inclusive), NULL keys and times, no match."""
    import duckdb

    from skewless.features import spark as sk

    a_rows = [("x", 1), ("x", 2), ("x", 5), ("y", 3), (None, 3), ("z", None)]
    b_rows = [("x", 2, 20), ("x", 2, 21), ("x", 4, 40), ("y", 3, None), (None, 1, 10), ("y", None, 99), ("z", 0, 0)]
    a = pa.table({"k": [r[0] for r in a_rows], "t": pa.array([r[1] for r in a_rows], pa.int64())})
    b = pa.table({"k": [r[0] for r in b_rows], "t": pa.array([r[1] for r in b_rows], pa.int64()),
                  "v": pa.array([r[2] for r in b_rows], pa.int64())})
    spark = sk.session(lakes["profiles"]["spark"])
    spark.createDataFrame(a_rows, schema="k STRING, t BIGINT").createOrReplaceTempView("a")
    spark.createDataFrame(b_rows, schema="k STRING, t BIGINT, v BIGINT").createOrReplaceTempView("b")
    for op in (">", ">="):
        sql = (f"SELECT a.k, a.t, b.t AS bt, b.v FROM a ASOF LEFT JOIN b ON a.k = b.k AND a.t {op} b.t "
               "ORDER BY a.k NULLS LAST, a.t NULLS LAST")
        con = duckdb.connect()
        con.register("a", a)
        con.register("b", b)
        expected = [tuple(r) for r in con.sql(sql).fetchall()]
        got = [tuple(r) for r in spark.sql(to_spark(sql)).collect()]
        # b's two rows at t=2 for key x tie: DuckDB may pick either v, so compare the matched time and v's set.
        norm = [(k, t, bt, v if bt != 2 else "20|21") for k, t, bt, v in expected]
        assert [(k, t, bt, v if bt != 2 else "20|21") for k, t, bt, v in got] == norm, (op, got, expected)


@needs_spark
def test_band_rule_matches_duckdb_at_the_edges(lakes):
    """Rule 5 against DuckDB: bounds met exactly, before 1970, across bucket edges, NULL times, no match."""
    import duckdb

    from skewless.features import spark as sk

    day = timedelta(days=1)
    t0 = datetime(2020, 1, 1)
    a_rows = [("x", t0), ("x", t0 + 30 * day), ("x", datetime(1969, 12, 20)), ("y", t0), ("z", t0), ("x", None)]
    b_rows = [("x", t0 - 30 * day, 1), ("x", t0 - 29 * day, 2), ("x", t0, 3), ("x", t0 - day, 4),
              ("x", t0 + 29 * day, 5), ("x", datetime(1969, 11, 25), 6), ("x", datetime(1969, 12, 19), 7),
              ("y", None, 8), (None, t0 - day, 9), ("x", t0 + 400 * day, 10)]
    sql = ("SELECT a.k, a.x, count(b.t) AS n, sum(b.v) AS s, min(b.v) AS lo FROM a LEFT JOIN b "
           "ON b.k = a.k AND b.t >= a.x - INTERVAL 30 DAY AND b.t < a.x GROUP BY a.k, a.x "
           "ORDER BY a.k NULLS LAST, a.x NULLS LAST")
    assert "__band" in to_spark(sql)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("a", pa.table({"k": [r[0] for r in a_rows], "x": pa.array([r[1] for r in a_rows], pa.timestamp("us"))}))
    con.register("b", pa.table({"k": [r[0] for r in b_rows], "t": pa.array([r[1] for r in b_rows], pa.timestamp("us")),
                                "v": pa.array([r[2] for r in b_rows], pa.int64())}))
    expected = [tuple(r) for r in con.sql(sql).fetchall()]
    spark = sk.session(lakes["profiles"]["spark"])
    utc = [(k, x.replace(tzinfo=timezone.utc) if x else None) for k, x in a_rows]
    spark.createDataFrame(utc, schema="k STRING, x TIMESTAMP").createOrReplaceTempView("a")
    spark.createDataFrame([(k, t.replace(tzinfo=timezone.utc) if t else None, v) for k, t, v in b_rows],
                          schema="k STRING, t TIMESTAMP, v BIGINT").createOrReplaceTempView("b")
    pdf = spark.sql(to_spark(sql)).toPandas()  # naive datetimes in the session zone, UTC

    def num(v):
        return None if pd.isna(v) else int(v)

    got = [(r.k, None if pd.isna(r.x) else r.x.to_pydatetime(), num(r.n), num(r.s), num(r.lo))
           for r in pdf.itertuples(index=False)]
    assert got == expected
