"""Monitoring: the exporter against a real (local) pipeline, the alert rules under promtool, the dashboard's queries.

The exporter tests build a small home once (shipped sample, built and materialized through 2026-08-20) and read it
through :mod:`skewless.ops.freshness` and :mod:`monitoring.exporter`; expected values come from the pipeline's own
state (Iceberg tables, Feast registry), never from constants.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from datetime import date, datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from skewless.core import config

MONITORING = config.PROJECT_ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERTS_TEST = MONITORING / "alerts_test.yaml"
DASHBOARD = MONITORING / "dashboards" / "skewless.json"
DAY = date(2026, 8, 20)
#: Alert name -> runbook name, agreed with the runbook author (runbooks/<name>.md).
RUNBOOKS = {
    "FeastMaterializationStuck": "feast-materialization-stuck",
    "RedisOnlineStoreStale": "redis-online-store-stale",
    "FeatureFreshnessSLOViolation": "feature-freshness-slo-violation",
    "OnlineOfflineParityFailed": "online-offline-parity-failed",
    "SkewlessMetricsAbsent": "skewless-metrics-absent",
    "StreamFreshnessSLOViolation": "stream-freshness-slo-violation",
    "StreamProcessorStalled": "stream-processor-stalled",
    "StreamProcessorAbsent": "stream-processor-absent",
    "StreamLakeReconciliationFailed": "stream-lake-reconciliation-failed",
    "FetchReplayConsistencyFailed": "fetch-replay-consistency-failed",
}
#: Series Prometheus itself produces (the dashboard annotates firing alerts from ALERTS).
PROMETHEUS_BUILTIN = {"ALERTS"}


# --- PromQL metric names ------------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, keywords, labels or durations."""
    names = set(re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", expr))
    expr = re.sub(r"label_values\([^)]*\)", " ", expr)
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', " ", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges, subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for name in re.findall(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", expr):
        if name not in _KEYWORDS and not re.fullmatch(r"(?i)inf|nan", name):
            names.add(name)
    return names


def test_promql_metric_names_parser():
    """The parser the dashboard test relies on: metrics found; functions, labels, strings, ranges ignored."""
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, model) (rate(skewless_predictor_request_seconds_bucket'
        '[$__rate_interval])))') == {"skewless_predictor_request_seconds_bucket"}
    assert promql_metric_names(
        '1 - avg_over_time(skewless:freshness_bad:bool{project="$project", feature_view=~"a|b"}[$window]) '
        '/ on(project, feature_view) group_left() skewless:freshness_error_budget:ratio') == {
        "skewless:freshness_bad:bool", "skewless:freshness_error_budget:ratio"}
    assert promql_metric_names("(time() - x_seconds) > bool on(project) 1.5e3 * y_total offset 5m") == {
        "x_seconds", "y_total"}
    assert promql_metric_names('label_values(skewless_freshness_slo_seconds{project="$project"}, feature_view)') == {
        "skewless_freshness_slo_seconds"}


def _rule_groups() -> list[dict]:
    return yaml.safe_load(ALERTS.read_text())["groups"]


def _recorded_names() -> set[str]:
    return {r["record"] for g in _rule_groups() for r in g["rules"] if "record" in r}


def _predictor_names() -> set[str]:
    """Series names of the predictor's metric families (serving/metrics.py), as Prometheus stores them."""
    from serving.metrics import metrics

    m = metrics()
    out = set()
    for family in (fam for c in (m.request_seconds, m.feature_fetch_seconds, m.instances_total)
                   for fam in c.describe()):
        if family.type == "histogram":
            out |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        elif family.type == "counter":
            out.add(family.name + "_total")
        else:
            out.add(family.name)
    return out


# --- alert rules ----------------------------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus'; `make tools` installs it)")


@needs_promtool
def test_alert_rules_are_valid():
    out = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_alert_rules_unit_tests():
    """promtool runs monitoring/alerts_test.yaml: materialization stops, Redis loses keys, parity fails..."""
    out = subprocess.run([PROMTOOL, "test", "rules", ALERTS_TEST.name], capture_output=True, text=True,
                         cwd=MONITORING)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_its_runbook():
    alerts = [r for g in _rule_groups() for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} == set(RUNBOOKS)
    for a in alerts:
        assert a["annotations"]["runbook_url"] == f"runbooks/{RUNBOOKS[a['alert']]}.md", a["alert"]
        assert (config.PROJECT_ROOT / a["annotations"]["runbook_url"]).is_file(), a["annotations"]["runbook_url"]
        assert a["labels"]["severity"] in {"page", "ticket"}
        assert a["annotations"]["summary"] and a["annotations"]["description"]


def test_alert_rules_read_only_exported_series():
    """Every series the rules read is exported by the exporter, the stream processor, or recorded by the rules."""
    from monitoring.exporter import CONSISTENCY_METRIC_NAMES, METRIC_NAMES
    from skewless.stream.metrics import SERIES_NAMES

    known = set(METRIC_NAMES) | set(CONSISTENCY_METRIC_NAMES) | set(SERIES_NAMES) | _recorded_names()
    for g in _rule_groups():
        for r in g["rules"]:
            unknown = promql_metric_names(r["expr"]) - known
            assert not unknown, f"{r.get('alert') or r.get('record')} reads unknown series {unknown}"


# --- dashboard ------------------------------------------------------------------------------------------------------

def _dashboard_queries(dash: dict) -> list[str]:
    queries = []

    def walk(panels):
        for p in panels:
            queries.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if v.get("type") == "query":
            queries.append(q["query"] if isinstance(q, dict) else q)
    queries.extend(a["expr"] for a in dash.get("annotations", {}).get("list", []) if a.get("expr"))
    return queries


def test_dashboard_queries_name_real_metrics():
    """Each PromQL query of the dashboard reads series the exporter, the predictor or the rules really produce."""
    from monitoring.exporter import METRIC_NAMES

    dash = json.loads(DASHBOARD.read_text())
    queries = _dashboard_queries(dash)
    known = set(METRIC_NAMES) | _predictor_names() | _recorded_names() | PROMETHEUS_BUILTIN
    used = set()
    for q in queries:
        names = promql_metric_names(q)
        assert names, f"query reads no metric: {q}"
        assert not names - known, f"dashboard query reads series nobody exports: {names - known} in {q}"
        used |= names
    # Freshness, parity and serving are all on the dashboard.
    assert {"skewless_online_newest_event_timestamp_seconds", "skewless_parity_mismatch_ratio",
            "skewless_predictor_request_seconds_bucket", "skewless_feature_fetch_seconds_bucket"} <= used
    alerts_named = set(re.findall(r"[A-Z]\w+", " ".join(a["expr"] for a in dash["annotations"]["list"]))) - {"ALERTS"}
    assert alerts_named <= set(RUNBOOKS), alerts_named - set(RUNBOOKS)


# --- SLO declarations -----------------------------------------------------------------------------------------------

def test_slo_of_reads_tags_and_names_bad_ones():
    from skewless.ops.freshness import FreshnessError, slo_of

    good = {"freshness_slo_seconds": "3600", "freshness_objective": "0.995", "freshness_window_days": "7",
            "schedule": "hourly"}
    slo = slo_of(SimpleNamespace(name="v", tags=good))
    assert (slo.max_age_seconds, slo.objective, slo.window_seconds, slo.schedule_seconds) == (3600, 0.995,
                                                                                               7 * 86400, 3600)
    cases = [({**good, "freshness_objective": "1"}, "freshness_objective"),
             ({**good, "freshness_slo_seconds": "soon"}, "freshness_slo_seconds='soon' is not a number"),
             ({**good, "freshness_window_days": "-3"}, "must be a positive number"),
             ({**good, "schedule": "fortnightly"}, "schedule='fortnightly'"),
             ({k: v for k, v in good.items() if k != "freshness_slo_seconds"}, "declares no tag 'freshness_slo_seconds'")]
    for tags, message in cases:
        with pytest.raises(FreshnessError, match=re.escape(message)) as e:
            slo_of(SimpleNamespace(name="v", tags=tags))
        assert "feature view v" in str(e.value)


# --- the exporter on a real pipeline --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built_home(tmp_path_factory, sample_parquet):
    """A local home with the sample ingested, built and materialized through DAY (module-scoped: ~15 s)."""
    mp = pytest.MonkeyPatch()
    h = tmp_path_factory.mktemp("monitoring") / "home"
    mp.setenv("SKEWLESS_ENV", "local")
    mp.setenv("SKEWLESS_HOME", str(h))
    mp.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
    for k, v in config.profile().feast_env().items():
        mp.setenv(k, v)
    from skewless import features
    from skewless.ops import feast_ops
    from skewless.lake import ingest

    ingest.ingest([sample_parquet])
    features.build(DAY)
    feast_ops.apply()
    feast_ops.materialize(DAY)
    yield h
    mp.undo()


def _parse(text: str) -> dict[str, dict[tuple, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _view(name: str, **extra) -> tuple:
    return tuple(sorted({"project": "skewless", "feature_view": name, **extra}.items()))


def test_status_reads_the_online_store_and_the_declared_slo(built_home):
    from skewless import lake
    from skewless.ops import feast_ops, freshness

    store = feast_ops.feature_store()
    statuses = {s.feature_view: s for s in freshness.status(store=store)}
    assert set(statuses) == {fv.name for fv in feast_ops.batch_views(store)}  # the live view: stream SLO (metrics)
    for name, s in statuses.items():
        fv = store.get_feature_view(name)
        key = fv.entity_columns[0].name
        offline = lake.load_table(f"features.{name}").scan().to_arrow().to_pandas()
        assert s.slo.max_age_seconds == float(fv.tags["freshness_slo_seconds"])
        assert s.slo.objective == float(fv.tags["freshness_objective"])
        assert s.slo.window_days == float(fv.tags["freshness_window_days"])
        assert s.built_through == s.materialized_through == DAY
        assert s.materialization_lag_seconds == 0
        assert s.entities == s.online_entities == offline[key].nunique()
        # Newest online value = newest offline row materialized (rows up to DAY): the event time, not a job time.
        newest = offline[offline.event_timestamp <= datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)]
        assert s.online_newest_event == newest.event_timestamp.max().to_pydatetime()
        assert s.online_error is None and s.parity is None and s.last_materialization is None


def test_lag_records_and_exporter_round_trip(built_home, tmp_path):
    """Build a day ahead (lag), record materialization and a skewed parity check, read it all back as metrics."""
    from monitoring import exporter
    from skewless import features
    from skewless.ops import freshness, parity

    features.build(date(2026, 8, 21))
    at = datetime(2026, 8, 21, 0, 30, tzinfo=timezone.utc)
    freshness.record_materialization(at=at)

    def skewed(store, refs, rows):  # a serving-side skew on one feature of repo_activity
        df = store.get_online_features(features=refs, entity_rows=rows).to_df()
        if "commits_last_7d" in df:
            df.loc[df.index[:2], "commits_last_7d"] = df["commits_last_7d"].iloc[:2] + 1
        return df

    results = parity.check(sample=None, online_reader=skewed)
    freshness.record_parity(results, at=at)

    reader = freshness.FreshnessReader()
    path, text = exporter.write_textfile(tmp_path / "skewless.prom", reader=reader)
    assert path.read_text() == text
    m = _parse(text)
    described = {f.name for f in exporter.SkewlessCollector(reader).describe()}
    assert set(m) == described == set(exporter.METRIC_NAMES)
    for r in results:
        v = _view(r.feature_view)
        assert m["skewless_materialization_lag_seconds"][v] == 86400  # built 08-21, materialized 08-20
        assert m["skewless_built_through_timestamp_seconds"][v] == features.day_start(date(2026, 8, 21)).timestamp()
        assert m["skewless_materialized_through_timestamp_seconds"][v] == features.day_start(DAY).timestamp()
        assert m["skewless_materialization_last_success_timestamp_seconds"][v] == at.timestamp()
        assert m["skewless_parity_last_check_timestamp_seconds"][v] == at.timestamp()
        assert m["skewless_parity_checked_entities"][v] == r.entities
        assert m["skewless_online_store_up"][v] == 1
        for feature in r.mismatches:
            assert m["skewless_parity_mismatch_ratio"][_view(r.feature_view, feature=feature)] == r.ratio(feature)
    assert m["skewless_parity_mismatch_ratio"][_view("repo_activity", feature="commits_last_7d")] > 0
    assert m["skewless_parity_mismatch_ratio"][_view("repo_activity", feature="commits_last_30d")] == 0
    with pytest.raises(exporter.ExporterError, match=r"\.prom"):
        exporter.write_textfile(tmp_path / "skewless.txt", reader=reader)

    # The HTTP endpoint serves the same families; print what a scrape costs.
    server, _ = exporter.start(port=0, reader=reader)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=30).read().decode()
            timings.append(time.perf_counter() - t0)
    finally:
        server.shutdown()
    scraped = _parse(body)
    assert set(scraped) == set(exporter.METRIC_NAMES)
    assert scraped["skewless_online_newest_event_timestamp_seconds"] == m[
        "skewless_online_newest_event_timestamp_seconds"]
    print(f"\nexporter scrape over HTTP (sample home, 2 views): min {min(timings) * 1000:.1f} ms, "
          f"max {max(timings) * 1000:.1f} ms over {len(timings)} scrapes")


def test_online_store_lost_or_unreadable(built_home):
    """Unreadable online DB: up = 0 and no online series; emptied online table: no entity and no newest value."""
    import sqlite3

    from monitoring import exporter
    from skewless.ops import freshness

    db = Path(built_home) / "feast" / "online_store.db"
    saved = db.with_suffix(".saved")
    shutil.copy(db, saved)
    v = _view("repo_activity")
    try:
        db.unlink()
        db.mkdir()  # a directory where SQLite expects its file: every read fails
        m = _parse(exporter.render(reader=freshness.FreshnessReader()))
        assert m["skewless_online_store_up"][v] == 0
        assert v not in m.get("skewless_online_newest_event_timestamp_seconds", {})
        assert v not in m.get("skewless_online_entities", {})
        assert m["skewless_freshness_slo_seconds"][v] > 0  # the view's other series are still exported
        db.rmdir()
        shutil.copy(saved, db)
        with sqlite3.connect(db) as con:  # the store answers but lost repo_activity's keys
            con.execute("DELETE FROM skewless_repo_activity")
        m = _parse(exporter.render(reader=freshness.FreshnessReader()))
        assert m["skewless_online_store_up"][v] == 1
        assert m["skewless_online_entities"][v] == 0 < m["skewless_offline_entities"][v]
        assert v not in m.get("skewless_online_newest_event_timestamp_seconds", {})
        assert m["skewless_online_entities"][_view("author_activity")] > 0
    finally:
        if db.is_dir():
            db.rmdir()
        shutil.move(saved, db)


def test_cli_monitor_export(built_home, tmp_path):
    from typer.testing import CliRunner

    from skewless.cli import app

    runner = CliRunner()
    out = tmp_path / "m.prom"
    r = runner.invoke(app, ["monitor", "export", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "skewless_freshness_slo_seconds" in out.read_text()
    r = runner.invoke(app, ["monitor", "export", "--out", str(tmp_path / "m.txt")])
    assert r.exit_code == 1 and "only reads files ending in .prom" in r.output
