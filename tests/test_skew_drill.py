"""The serving-skew drill: the injected skews are caught (parity row by row, KS/PSI for the re-anchored ages), the
honest path passes, and the accuracy of every reader is measured on the same examples.

The drill runs once (module fixture) on the shipped sample with a short backtest; unit tests cover the switch and
the statistics.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from skewless.core import config
from skewless.drills import skew
from skewless.ops import distribution, online

SAMPLE = config.PROJECT_ROOT / "src" / "skewless" / "data" / "sample_commits.parquet"


# --- the switch --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("  ", None),
    ("window_edge", online.Skew("window_edge")),
    ("timezone", online.Skew("timezone", online.DEFAULT_TZ_OFFSET_HOURS)),
    ("TimeZone:-5.5", online.Skew("timezone", -5.5)),
])
def test_parse(value, expected):
    assert online.parse(value) == expected


@pytest.mark.parametrize("value, message", [
    ("window", "unknown skew mode 'window'"),
    ("window_edge:2", "window_edge takes no argument"),
    ("timezone:east", "'east' is not a UTC offset"),
    ("timezone:+15", "outside [-14, +14]"),
])
def test_parse_rejects_bad_values_naming_them(value, message):
    with pytest.raises(online.SkewError, match="SKEWLESS_SERVING_SKEW") as e:
        online.parse(value)
    assert message in str(e.value)


def test_switch_is_read_through_config(monkeypatch):
    monkeypatch.delenv("SKEWLESS_SERVING_SKEW", raising=False)
    assert online.reader_from_config() is online.honest_reader
    monkeypatch.setenv("SKEWLESS_SERVING_SKEW", "window_edge")
    assert config.serving_skew() == "window_edge"
    reader = online.reader_from_config()
    assert isinstance(reader, online.SkewedReader) and reader.skew == online.Skew("window_edge")
    monkeypatch.setenv("SKEWLESS_SERVING_SKEW", "nonsense")
    with pytest.raises(online.SkewError):
        online.reader_from_config()


# --- the statistics ------------------------------------------------------------------------------------------------

def test_psi_and_ks_of_identical_samples_are_zero():
    x = np.random.default_rng(0).poisson(5, 500).astype(float)
    assert distribution.psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert distribution.ks(x, x) == (0.0, 1.0)
    check = distribution.distribution_checks(pd.DataFrame({"f": x}), pd.DataFrame({"f": x}), ["f"])[0]
    assert not check.flagged


def test_psi_and_ks_flag_a_shift_and_a_null_rate_change():
    rng = np.random.default_rng(1)
    ref = rng.exponential(2.0, 2000)
    shifted = ref + 1.0
    assert distribution.psi(ref, shifted) > distribution.PSI_ALERT
    d, p = distribution.ks(ref, shifted)
    assert d > 0.2 and p < 1e-10
    nulls = ref.copy()
    nulls[:600] = np.nan  # same values where present, 30% nulls: only the null bin moves
    assert distribution.psi(ref, nulls) > distribution.PSI_ALERT
    resampled = rng.exponential(2.0, 2000)
    assert distribution.psi(ref, resampled) < 0.05  # same distribution, another sample: quiet


def test_psi_needs_data():
    with pytest.raises(online.SkewError):
        distribution.psi([], [1.0])


# --- the drill ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("skew-drill")
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_"))]:
            mp.delenv(k)
        # the drill exports its scratch profile into the process: register those keys so they are restored
        for k in config.profile({"SKEWLESS_HOME": str(tmp / "drill")}).feast_env():
            mp.setenv(k, "")
        mp.delenv("SKEWLESS_ENV")
        mp.delenv("SKEWLESS_ENGINE", raising=False)
        mp.setenv("SKEWLESS_HOME", str(tmp / "base"))
        result = skew.run(source=SAMPLE, weeks=4, home=tmp / "drill", report=tmp / "skew_drill.md",
                          parity_sample=60, echo=lambda m: None)
        yield result


def test_parity_catches_both_injected_skews_and_passes_the_honest_reader(drill):
    modes = drill.modes
    assert modes["honest"].parity_ok
    assert not modes["window_edge"].parity_ok
    assert not modes["timezone"].parity_ok
    repo = {v.feature_view: v for v in modes["timezone"].parity}["repo_activity"]
    # timezone re-anchors the ages only, every one of them; the window counts stay exact
    assert repo.ratio("days_since_last_commit") == 1.0
    assert {f for f, n in repo.mismatches.items() if n} == {"days_since_last_commit"}
    edge = {v.feature_view: v for v in modes["window_edge"].parity}["repo_activity"]
    assert edge.ratio("days_since_last_commit") > 0


def test_distribution_test_flags_the_timezone_skew_and_the_honest_reader_passes(drill):
    honest, tz = drill.modes["honest"], drill.modes["timezone"]
    assert honest.distribution and all(c.n_served == c.n_reference > 0 for c in honest.distribution)
    # same examples, same values: KS D and PSI are exactly zero for the honest reader
    assert all(c.ks_statistic == 0 and c.psi == pytest.approx(0, abs=1e-12) for c in honest.distribution)
    assert honest.flagged == []
    assert "days_since_last_commit" in tz.flagged
    assert set(tz.flagged) <= {"days_since_last_commit"}


def test_serving_log_is_what_the_distribution_test_read(drill):
    from serving import feature_log

    log = feature_log.read("next_week_commits", config.profile({"SKEWLESS_HOME": str(drill.home)}))
    assert set(log["skew"].fillna("honest")) == {"honest", "window_edge", "timezone:+10"}
    per_mode = log.groupby(log["skew"].fillna("honest")).size()
    assert (per_mode == drill.repos * len(drill.mondays)).all()
    assert set(log["as_of"]) == {m.date().isoformat() for m in drill.mondays}


def test_accuracy_is_measured_on_the_same_examples(drill):
    scored = {m.scored for m in drill.modes.values()}
    assert len(scored) == 1 and scored.pop() > 0
    for m in drill.modes.values():
        assert math.isfinite(m.mae) and math.isfinite(m.rmse) and m.rmse >= m.mae
    # the skews change the predictions, so the errors differ from the honest reader's
    honest = drill.modes["honest"]
    for name in ("window_edge", "timezone"):
        m = drill.modes[name]
        assert m.mae != honest.mae
        lo, hi = m.mae_delta_ci
        assert lo <= m.mae - honest.mae <= hi


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(3)
    worse = rng.normal(1.0, 1.0, 400)
    lo, hi = skew.paired_bootstrap_ci(worse)
    assert 0.8 < lo < 1.0 < hi < 1.2
    lo, hi = skew.paired_bootstrap_ci(rng.normal(0.0, 1.0, 400))
    assert lo < 0 < hi


def test_report_is_written_with_every_section(drill):
    text = drill.report.read_text()
    for heading in ("## 1. Row-level parity", "### 2a. Skew test", "### 2b. Context", "## 3. Accuracy"):
        assert heading in text
    assert "PARITY FAILED" in text and "PARITY OK" in text
    assert f"`{skew.COMMAND}`" in text


def test_timezone_reader_uses_the_serving_clock():
    """The 'now' of the timezone skew is the serving clock, so a replay pins both TTL and skew."""
    from skewless.feast_ext.ttl import serving_clock

    reader = online.SkewedReader(online.Skew("timezone", 10))
    at = datetime(2026, 8, 3, 6, tzinfo=timezone.utc)
    with serving_clock(at):
        assert reader.clock() == at
    assert abs(reader.clock() - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_drill_refuses_a_home_it_did_not_create(tmp_path, monkeypatch):
    (tmp_path / "precious.txt").write_text("keep me")
    monkeypatch.setenv("SKEWLESS_HOME", str(tmp_path / "base"))
    with pytest.raises(online.SkewError, match="not a skew-drill home"):
        skew.run(source=SAMPLE, weeks=4, home=tmp_path, report=None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
