"""Serving-skew DRILL (``skewless drills skew``): replay a backtest window through the real predictor on a scratch
home with the honest reader and the skewed readers of :mod:`skewless.ops.online` side by side, then measure (1)
row-level parity with the skewed reader, (2) KS and PSI (:mod:`skewless.ops.distribution`) of the logged serving
features against the training set, (3) the accuracy drop against the true next-week commit counts, and write
``reports/skew_drill.md``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from skewless.core import config
from skewless.ops.distribution import KS_ALPHA, KS_MIN_STATISTIC, PSI_ALERT, DistributionCheck, distribution_checks
from skewless.ops.online import (AGE_PREFIX, DEFAULT_TZ_OFFSET_HOURS, OnlineReader, Skew, SkewedReader, SkewError,
                                 honest_reader)

log = logging.getLogger(__name__)

# --- the drill -----------------------------------------------------------------------------------------------------

DEFAULT_WEEKS = 26
DRILL_MARKER = ".skewless-skew-drill"
REPORT = config.PROJECT_ROOT / "reports" / "skew_drill.md"
COMMAND = "skewless drills skew"


def request_time(repo: str, day: datetime) -> datetime:
    """A deterministic request time within ``day`` for ``repo`` (uniform over the 24 hours across repositories)."""
    h = int(hashlib.sha256(f"{repo}|{day:%Y-%m-%d}".encode()).hexdigest()[:8], 16) / 2**32
    return day + timedelta(hours=24 * h)


@dataclass
class ModeResult:
    """What the drill measured for one reader (``honest`` or a skew)."""

    name: str
    parity: list = field(default_factory=list)  #: skewless.ops.parity.ViewParity per view
    distribution: list[DistributionCheck] = field(default_factory=list)  #: vs training-set rows, same examples
    drift: list[DistributionCheck] = field(default_factory=list)  #: vs the fit period's training rows
    served: int = 0
    errors: int = 0
    scored: int = 0
    mae: float = math.nan
    rmse: float = math.nan
    #: 95% paired-bootstrap interval of (this reader's MAE - the honest reader's MAE), same examples
    mae_delta_ci: tuple[float, float] = (math.nan, math.nan)

    @property
    def parity_ok(self) -> bool:
        return all(r.ok for r in self.parity)

    @property
    def flagged(self) -> list[str]:
        return [c.feature for c in self.distribution if c.flagged]


@dataclass
class DrillResult:
    """Everything the report shows."""

    source: list[Path]
    home: Path
    mondays: list[datetime]
    repos: int
    n_train: int
    n_evaluation: int
    model_version: str
    feature_names: list[str]
    modes: dict[str, ModeResult]
    seconds: float
    tz_offset_hours: float
    report: Path | None = None

    def markdown(self) -> str:
        """The drill report (``reports/skew_drill.md``)."""
        return _markdown(self)


def _drill_profile(home: Path | None) -> config.Profile:
    import os

    base = config.profile()
    home = (home or base.home / "drills" / "skew").expanduser().resolve()
    if home.exists() and any(home.iterdir()) and not (home / DRILL_MARKER).exists():
        raise SkewError(f"{home} is not empty and is not a skew-drill home: the drill wipes its home, so give it "
                        "an empty or new directory (--home)")
    p = config.profile({**os.environ, "SKEWLESS_ENV": "local", "SKEWLESS_HOME": str(home)})
    if p.mlflow_tracking_uri != f"sqlite:///{p.home / 'mlflow.db'}":
        raise SkewError("MLFLOW_TRACKING_URI is set: the drill trains and registers a model in its own scratch "
                        "home and must not touch that tracking server; unset it for the drill")
    return p


def run(source: Path | None = None, weeks: int = DEFAULT_WEEKS, home: Path | None = None,
        report: Path | None = REPORT, parity_sample: int = 200, tz_offset_hours: float = DEFAULT_TZ_OFFSET_HOURS,
        echo: Callable[[str], None] = print) -> DrillResult:
    """Run the serving-skew drill on a scratch local home and write the report (None: do not write it).

    ``home`` (default ``<SKEWLESS_HOME>/drills/skew``) is wiped and rebuilt: ingest ``source`` (default: the shared
    data when present, else the sample), build, apply, train and register the model on the weeks before the
    backtest (training's own code), then replay the last ``weeks`` observed Mondays: materialize the online store
    as of each Monday and serve every repository through the real predictor three times (honest,
    ``window_edge``, ``timezone``), each serving log tagged with its skew. Then parity with each reader, KS/PSI of
    the logged serving features against the training split, and MAE against the true next-week counts.
    """
    import shutil

    from serving import feature_log
    from serving.predictor import NextWeekCommitsPredictor
    from skewless import features, lake
    from skewless.ops import feast_ops, parity
    from skewless.lake import ingest
    from skewless.feast_ext.ttl import serving_clock
    from training import labels as labels_mod
    from training import train as training

    if weeks < 1:
        raise SkewError(f"--weeks must be at least 1, not {weeks}")
    t0 = time.perf_counter()
    p = _drill_profile(home)
    shutil.rmtree(p.home, ignore_errors=True)
    p.home.mkdir(parents=True)
    (p.home / DRILL_MARKER).write_text("scratch home of `skewless drills skew`; wiped on every run\n")
    config.activate(p)  # training and Feast resolve the active profile: this process now works in the drill home

    def step(msg: str) -> None:
        echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}")

    sources = [source] if source else config.commit_sources()
    step(str(ingest.ingest(sources)))
    labels = labels_mod.weekly_labels(p).frame
    if labels.empty:
        raise SkewError("no repository has an observed week: the drill needs labelled weeks")
    last_day = lake.newest_commit_day(p)
    for r in features.build(last_day, p):
        step(str(r))
    feast_ops.apply(p)
    mondays_all = sorted(labels["event_timestamp"].unique())
    if len(mondays_all) < weeks + 8:
        raise SkewError(f"{len(mondays_all)} observed Mondays cannot hold {weeks} backtest weeks and a training "
                        "period of at least 8 weeks; lower --weeks")
    mondays = [pd.Timestamp(m).to_pydatetime() for m in mondays_all[-weeks:]]
    cutoff = pd.Timestamp(mondays[0])
    trained = training.train(cutoff=cutoff, p=p)
    step(f"trained {training.MODEL_NAME} version {trained.model_version} on the weeks before {cutoff:%Y-%m-%d}")
    ts = training.rebuild(trained.run_id, p)
    fit_rows = ts.frame[ts.frame["event_timestamp"] + pd.Timedelta(weeks=1) <= cutoff]
    evaluation = ts.frame[ts.frame["event_timestamp"] >= cutoff]
    names = list(ts.feature_names)

    store = feast_ops.feature_store(p)
    skews = {"window_edge": Skew("window_edge"), "timezone": Skew("timezone", tz_offset_hours)}
    readers: dict[str, OnlineReader] = {"honest": honest_reader}
    readers.update({n: SkewedReader(s) for n, s in skews.items()})
    predictors = {n: NextWeekCommitsPredictor(training.MODEL_NAME, p=p, store=store, online_reader=r)
                  for n, r in readers.items()}
    repos = sorted(labels["repo"].unique())
    served: list[dict] = []
    for i, monday in enumerate(mondays):
        feast_ops.materialize(monday.date(), p)
        for pred in predictors.values():
            pred.refresh()
            if not pred.ready and not pred.load():
                raise SkewError(f"the predictor did not become ready: {pred.not_ready_reason}")
        for name, pred in predictors.items():
            # Replay: the serving clock (TTL expiry, and the "now" of the timezone skew) is the request time.
            if name == "timezone":
                outcomes = []
                for repo in repos:
                    with serving_clock(request_time(repo, monday)):
                        outcomes += pred.serve_repos([repo])
            else:
                with serving_clock(monday + timedelta(hours=12)):
                    outcomes = pred.serve_repos(repos)
            served += [{"mode": name, "event_timestamp": pd.Timestamp(monday), "repo": o.repo,
                        "prediction": o.prediction, "error": o.error} for o in outcomes]
        step(f"week {i + 1}/{len(mondays)}: online store as of {monday:%Y-%m-%d}, served {len(repos)} "
             f"repositories x {len(predictors)} readers")

    modes = {name: ModeResult(name) for name in readers}
    for name, reader in readers.items():
        # parity pins the serving clock to the day edge it checks: the timezone skew's "now" is that instant.
        modes[name].parity = parity.check(sample=parity_sample, p=p, store=store,
                                          online_reader=None if name == "honest" else reader)
    step("parity checked with each reader")

    # The serving log, read back: the features each reader actually served, keyed by the online store's day edge.
    log = feature_log.read(training.MODEL_NAME, p)
    log["mode"] = log["skew"].fillna("honest").map(lambda s: s.split(":")[0])
    log["event_timestamp"] = pd.to_datetime(log["as_of"], utc=True).astype(evaluation["event_timestamp"].dtype)
    keys = ["repo", "event_timestamp"]
    for name, res in modes.items():
        rows = log[(log["mode"] == name) & log["error"].isna()]
        # Skew test: the served rows of the labelled backtest examples against the training set's rows of the
        # same examples (same repositories, same Mondays: no drift between the two samples, only skew).
        res.distribution = distribution_checks(evaluation, rows.merge(evaluation[keys], on=keys), names)
        # Context: everything served against the period the model was fitted on (drift and skew mixed).
        res.drift = distribution_checks(fit_rows, rows, names)

    frame = pd.DataFrame(served).merge(labels, on=["repo", "event_timestamp"], how="left")
    for name, res in modes.items():
        part = frame[frame["mode"] == name]
        res.served, res.errors = len(part), int(part["error"].notna().sum())
    scored = frame.pivot_table(index=["repo", "event_timestamp"], columns="mode", values="prediction",
                               aggfunc="first").dropna()
    scored = scored.join(labels.set_index(["repo", "event_timestamp"])["label"], how="inner")
    honest_abs = (scored["honest"] - scored["label"]).abs().to_numpy() if len(scored) else np.empty(0)
    for name, res in modes.items():
        err = scored[name] - scored["label"]
        res.scored = len(scored)
        res.mae = float(err.abs().mean()) if len(scored) else math.nan
        res.rmse = float(np.sqrt((err ** 2).mean())) if len(scored) else math.nan
        if len(scored) and name != "honest":
            res.mae_delta_ci = paired_bootstrap_ci(err.abs().to_numpy() - honest_abs)
    result = DrillResult(source=sources, home=p.home, mondays=mondays, repos=len(repos), n_train=len(fit_rows),
                         n_evaluation=len(evaluation),
                         model_version=trained.model_version, feature_names=names, modes=modes,
                         seconds=time.perf_counter() - t0, tz_offset_hours=tz_offset_hours)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(result.markdown())
        result.report = report
    step("done")
    return result


def paired_bootstrap_ci(diffs: np.ndarray, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (resampling the examples)."""
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n, len(diffs)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if abs(v) and abs(v) < 10 ** -digits:
        return f"{v:.1e}"
    return f"{v:.{digits}f}"


def _distribution_table(r: DrillResult, attr: str) -> list[str]:
    out = ["| feature | " + " | ".join(f"{n}: KS D (p) | {n}: PSI" for n in r.modes) + " |",
           "|---|" + "---:|---:|" * len(r.modes)]
    for fi, feat in enumerate(r.feature_names):
        cells = []
        for m in r.modes.values():
            c = getattr(m, attr)[fi]
            mark = " **⚑**" if c.flagged else ""
            cells += [f"{_fmt(c.ks_statistic, 2)} ({_fmt(c.ks_pvalue, 3)})", f"{_fmt(c.psi)}{mark}"]
        out.append(f"| {feat} | " + " | ".join(cells) + " |")
    rows = {n: (getattr(m, attr)[0].n_reference, getattr(m, attr)[0].n_served) for n, m in r.modes.items()}
    out.append("| rows (reference / served) | " + " | ".join(f"{a} / {b} | " for a, b in rows.values()) + " |")
    return out


def _flags(checks: list[DistributionCheck]) -> str:
    return ", ".join(c.feature for c in checks if c.flagged) or "nothing"


def _markdown(r: DrillResult) -> str:
    honest = r.modes["honest"]
    skewed = [m for n, m in r.modes.items() if n != "honest"]
    src = ", ".join(f"`{s}`" for s in r.source)
    out = [
        "# Serving-skew drill",
        "",
        f"Regenerate with `{COMMAND}` (it writes this file; every number below comes from that run).",
        "",
        "## Setup",
        "",
        f"- Data: {src} — {r.repos} repositories, in a scratch local home (`{r.home}`) that the drill wipes.",
        f"- Model: `{config.NEXT_WEEK_COMMITS_MODEL}` version {r.model_version}, trained by `training.train` on the {r.n_train} "
        f"observed weeks that end before {r.mondays[0]:%Y-%m-%d} (Poisson gradient boosting on feature service "
        f"`{config.NEXT_WEEK_COMMITS_SERVICE}`).",
        f"- Backtest: the {len(r.mondays)} Mondays {r.mondays[0]:%Y-%m-%d} … {r.mondays[-1]:%Y-%m-%d} (the model's "
        "evaluation weeks). For each Monday the online store is materialized as of that day and every repository "
        "is served through the real predictor (`serving.predictor.NextWeekCommitsPredictor.serve_repos`, in "
        "process) once per reader; every answer goes to the serving log (`$SKEWLESS_HOME/serving_log/`).",
        "- Readers (definitions in `src/skewless/drills/skew.py`; switch `SKEWLESS_SERVING_SKEW`):",
        "  - `honest`: the online read, unchanged;",
        "  - `window_edge`: every view read as of the previous UTC day edge (D − 1 day): all trailing windows end "
        "one day early;",
        f"  - `timezone`: the serving side recomputes \"as of now\" on a host clock at local time "
        f"UTC{r.tz_offset_hours:+g} that it takes for UTC: the age features (`{AGE_PREFIX}*`) are re-anchored from "
        "the day edge to that \"now\"; request times are spread over each Monday.",
        f"- Wall time: {r.seconds:.0f} s.",
        "",
        "## 1. Row-level parity — `skewless.ops.parity.check(online_reader=...)`",
        "",
        "Share of sampled entities whose served value differs from the point-in-time offline value at the online "
        f"store's day edge ({r.mondays[-1]:%Y-%m-%d}).",
        "",
        "| view | feature | " + " | ".join(r.modes) + " |",
        "|---|---|" + "---:|" * len(r.modes),
    ]
    for vi, view in enumerate(honest.parity):
        for feat in sorted(view.mismatches):
            cells = [f"{m.parity[vi].ratio(feat):.2f}" for m in r.modes.values()]
            out.append(f"| {view.feature_view} | {feat} | " + " | ".join(cells) + " |")
    out.append("| **verdict** | | " + " | ".join("PARITY OK" if m.parity_ok else "**PARITY FAILED**"
                                                 for m in r.modes.values()) + " |")
    out += [
        "",
        "## 2. Distribution tests on the logged serving features",
        "",
        f"Flag (**⚑**): PSI ≥ {PSI_ALERT}, or KS p < {KS_ALPHA} with KS D ≥ {KS_MIN_STATISTIC}. PSI uses ten quantile "
        "bins of the reference plus a null bin.",
        "",
        "### 2a. Skew test: served features against the training set's rows of the same examples",
        "",
        "The served rows of the labelled backtest examples (read back from the serving log) against the training "
        f"set's rows for the same repositories and Mondays ({r.n_evaluation} rows, built by `training.dataset` "
        "through `get_historical_features`). Same population, same weeks: the honest reader must match exactly; "
        "anything flagged is skew.",
        "",
        *_distribution_table(r, "distribution"),
        "",
        "### 2b. Context: served features against the fit period",
        "",
        f"Everything served against the {r.n_train} rows the model was fitted on. This mixes drift (the backtest "
        "weeks are not the fit years) with skew, and the honest control shows how much of it is drift alone.",
        "",
        *_distribution_table(r, "drift"),
        "",
        "## 3. Accuracy against the true next-week commit counts",
        "",
        "MAE and RMSE over the same (repository, Monday) examples for every reader: those with an observed label "
        "(`training.labels`) and an answer from every reader.",
        "",
        "| reader | examples | MAE | RMSE | MAE vs honest | ΔMAE, 95% paired-bootstrap CI |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in r.modes.values():
        delta = "" if m is honest else (f"{(m.mae - honest.mae) / honest.mae:+.1%}" if honest.mae else "–")
        ci = "" if m is honest else f"[{m.mae_delta_ci[0]:+.3f}, {m.mae_delta_ci[1]:+.3f}]"
        out.append(f"| {m.name} | {m.scored} | {_fmt(m.mae)} | {_fmt(m.rmse)} | {delta} | {ci} |")
    out += ["", "## Summary", ""]
    out.append(f"- `honest`: parity {'OK' if honest.parity_ok else 'FAILED'}; the skew test flags "
               f"{_flags(honest.distribution)}; against the fit period it flags {_flags(honest.drift)} — drift "
               "alone, so a drift alarm on the training data cannot tell skew from drift.")
    for m in skewed:
        lo, hi = m.mae_delta_ci
        if lo > 0:
            acc = "accuracy is measurably worse"
        elif hi < 0:
            acc = "accuracy is measurably better (the skew happens to help this model on these weeks)"
        else:
            acc = "the accuracy change is within noise (its interval holds 0): label-based monitoring would not see it"
        pct = f" ({(m.mae - honest.mae) / honest.mae:+.1%})" if honest.mae else ""
        out.append(f"- `{m.name}`: parity {'misses it' if m.parity_ok else 'catches it row by row'}; the skew test "
                   f"flags {_flags(m.distribution)}; MAE {_fmt(honest.mae)} → {_fmt(m.mae)}{pct}: {acc}.")
    out.append("")
    return "\n".join(out)
