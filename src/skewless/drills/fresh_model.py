"""Fresh vs daily features for next-week-commits, on the same backtest instants (issue "Fresh features in
production", ``skewless drills fresh-model``).

Models of the same kind (:func:`training.train.make_model`, Poisson gradient boosting) are trained on the same
examples and scored on the same evaluation instants; only their features differ — ``daily``, ``fresh`` and
``daily+fresh`` (both services' features: the fresh service holds short windows only, so this is the model a team
would actually run on fresh features):

``daily``
    the daily feature service (``next_week_commits_v1``): the feature rows built per UTC day, point-in-time joined
    (as of T, the newest day row at or before T: commits through the previous midnight);
``fresh``
    the fresh service (``next_week_commits_live_v1``): windows ending at T, evaluated from the commit versions known
    at T (ADR 0016) — what the stream processor serves online.

Instants: ``monday`` (Monday 00:00 UTC, the production model's grid: there both services see the same commits)
and ``midweek`` (Thursday 12:00 UTC, where the daily rows are 12 h old and the fresh windows are not). Labels are
the commits in ``[T, T + 7d)`` over observed weeks (:func:`training.labels.weekly_counts` with an offset), split
in time at one Monday for both grids. The difference of each metric (model - daily) gets a 95% interval from a
bootstrap over evaluation weeks (rows of one week move together: they share the week's activity).

The history's commit versions are backfilled (:func:`skewless.lake.events.backfill`): known at their committed_at,
since the lake does not record when a batch-ingested commit became known. That is the fresh path at zero delay;
the stream processor's real delay (sub-second, see BENCHMARKS.md) is far below the 12 h the grid measures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE, NEXT_WEEK_COMMITS_SERVICE
from skewless.core.errors import SkewlessError
from skewless.lake import snapshots
from training import dataset, train
from training import labels as labels_mod
from training.labels import BASELINES, KEYS, LABEL

if TYPE_CHECKING:
    from feast import FeatureStore

REPORT_MD = "fresh_model.md"
REPORT_PNG = "fresh_model.png"
#: The backtest grids: name -> offset from Monday 00:00 UTC.
GRIDS: dict[str, pd.Timedelta] = {"monday": pd.Timedelta(0), "midweek": pd.Timedelta(days=3, hours=12)}
#: The feature services compared: name -> feature service.
SERVICES: dict[str, str] = {"daily": NEXT_WEEK_COMMITS_SERVICE, "fresh": NEXT_WEEK_COMMITS_LIVE_SERVICE}
#: The models: name -> the services whose features it is trained on (the last one: what fresh features add to the
#: daily ones, since the fresh service holds short windows only).
MODELS: dict[str, tuple[str, ...]] = {"daily": ("daily",), "fresh": ("fresh",), "daily+fresh": ("daily", "fresh")}
BOOTSTRAP = 1_000


class DrillError(SkewlessError, RuntimeError):
    """The comparison cannot run as asked (the message says why)."""


@dataclass(frozen=True)
class FreshResult:
    table: pd.DataFrame  #: grid, predictor, n_test, mae, rmse, poisson_deviance
    deltas: pd.DataFrame  #: grid, model, metric, model - daily, ci_low, ci_high (95%, bootstrap over weeks)
    cutoff: pd.Timestamp
    n_train: dict[str, int]
    n_repos: int
    features: dict[str, tuple[str, ...]]
    snapshots: dict[str, int | None]
    markdown: Path | None = None  #: where :func:`run_fresh_model` wrote the report
    png: Path | None = None


def backfill_history() -> int:
    """Give the live view the lake's batch-ingested history (:func:`skewless.lake.events.backfill`, idempotent):
    the fresh service has no history otherwise. Returns the versions written."""
    from skewless.lake import events

    return events.backfill()


def examples(store: "FeatureStore", offset: pd.Timedelta) -> tuple[pd.DataFrame, dict[str, tuple[str, ...]]]:
    """Labels on the grid ``offset`` with both services' features and the label baselines, one row per instant."""
    frame = labels_mod.weekly_labels(offset=offset).frame
    if frame.empty:
        raise DrillError("no repository has an observed week: ingest commits first")
    names: dict[str, tuple[str, ...]] = {}
    for model, service in SERVICES.items():
        names[model] = tuple(dataset.feature_names(dataset.service_of(store, service)))
        feats = dataset.historical_features(store, frame, service)
        clash = set(names[model]) & (set(frame.columns) - set(KEYS))
        if clash:
            raise DrillError(f"services {', '.join(SERVICES.values())} share feature name(s) {sorted(clash)}")
        frame = frame.merge(feats, on=KEYS, how="left", validate="one_to_one")
    frame = frame.merge(labels_mod.label_baselines(frame[KEYS + [LABEL]]), on=KEYS, how="left",
                        validate="one_to_one")
    return frame.sort_values(KEYS).reset_index(drop=True), names


def _week_bootstrap(test: pd.DataFrame, err: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, tuple]:
    """95% intervals of mean(err fresh) - mean(err daily) per metric, resampling evaluation weeks."""
    weeks, inv = np.unique(test["event_timestamp"].to_numpy(), return_inverse=True)  # one instant per week
    out = {}
    for metric, d in err.items():
        sums = np.bincount(inv, weights=d, minlength=len(weeks))
        counts = np.bincount(inv, minlength=len(weeks)).astype(float)
        draws = rng.integers(0, len(weeks), size=(BOOTSTRAP, len(weeks)))
        boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        out[metric] = (float(d.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
    return out


def _row_errors(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row absolute error, squared error and Poisson deviance (means of these are the metrics)."""
    p = np.maximum(pred, train.DEVIANCE_FLOOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / p), 0.0)
    return {"mae": np.abs(y - pred), "squared_error": (y - pred) ** 2, "poisson_deviance": 2 * (term - y + p)}


def compare(cutoff: pd.Timestamp | str | None = None, store: "FeatureStore | None" = None,
            seed: int = 0) -> FreshResult:
    """Train and score every model of :data:`MODELS` on both grids (nothing written)."""
    store = store or dataset.default_store()
    rng = np.random.default_rng(seed)
    rows, deltas, n_train = [], [], {}
    with snapshots.pinned_snapshots() as reads:
        frames = {grid: examples(store, off) for grid, off in GRIDS.items()}
    read = reads.check()
    names = frames["monday"][1]
    cut = dataset.default_cutoff(frames["monday"][0]) if cutoff is None else dataset.monday(cutoff)
    for grid, (frame, _) in frames.items():
        train_part, test_part, _ = dataset.split(frame, cut)
        n_train[grid] = len(train_part)
        y = test_part[LABEL].to_numpy(float)
        errs = {}
        for model, services in MODELS.items():
            feats = tuple(n for svc in services for n in names[svc])
            m = train.make_model(feats)
            m.fit(train.features_of(train_part, feats), train_part[LABEL].to_numpy(float))
            pred = m.predict(train.features_of(test_part, feats))
            rows.append({"grid": grid, "predictor": model, "n_test": len(test_part), **train.scores(y, pred)})
            errs[model] = _row_errors(y, pred)
        for b in BASELINES:
            rows.append({"grid": grid, "predictor": f"baseline_{b}", "n_test": len(test_part),
                         **train.scores(y, test_part[b])})
        for model in MODELS:
            if model == "daily":
                continue
            diff = {k: errs[model][k] - errs["daily"][k] for k in errs["daily"]}
            for metric, (d, lo, hi) in _week_bootstrap(test_part, diff, rng).items():
                deltas.append({"grid": grid, "model": model, "metric": metric, "minus_daily": d, "ci_low": lo,
                               "ci_high": hi})
    return FreshResult(table=pd.DataFrame(rows), deltas=pd.DataFrame(deltas), cutoff=cut, n_train=n_train,
                       n_repos=int(frames["monday"][0]["repo"].nunique()), features=names, snapshots=read)


def run_fresh_model(out_dir: Path, cutoff: pd.Timestamp | str | None = None,
                    store: "FeatureStore | None" = None, seed: int = 0) -> FreshResult:
    """:func:`compare`, then write ``fresh_model.md`` and ``fresh_model.png`` to ``out_dir``."""
    result = compare(cutoff, store, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = dataclasses.replace(result, markdown=out_dir / REPORT_MD, png=out_dir / REPORT_PNG)
    result.markdown.write_text(markdown(result))
    plot(result, result.png)
    return result


def _verdict(model: str, lo: float, hi: float) -> str:
    if hi < 0:
        return f"{model} is better (the interval is below 0)"
    if lo > 0:
        return "daily is better (the interval is above 0)"
    return "no difference shown (the interval holds 0)"


def markdown(r: FreshResult) -> str:
    """The report (every number comes from ``r``)."""
    lines = [
        "# Fresh vs daily features: next-week-commits",
        "",
        "Regenerate with `skewless drills fresh-model` (see `src/skewless/drills/fresh_model.py` for the method).",
        "Same model kind, same examples, same evaluation instants; only the features differ:",
        f"**daily** = `{SERVICES['daily']}` ({', '.join(r.features['daily'])}), **fresh** = `{SERVICES['fresh']}` "
        f"({', '.join(r.features['fresh'])}), **daily+fresh** = both services' features.",
        "",
        f"- Grids: `monday` = Monday 00:00 UTC (the production model's), `midweek` = Thursday 12:00 UTC. Evaluation: "
        f"instants from {r.cutoff:%Y-%m-%d}; training: {r.n_train['monday']} / {r.n_train['midweek']} instants "
        f"whose label week ends by then; {r.n_repos} repositories.",
        "- Read from: " + ", ".join(f"`{k}` snapshot {v}" for k, v in sorted(r.snapshots.items())) + ".",
        "- The history's versions are backfilled as known at their committed_at (the lake does not record when a "
        "batch-ingested commit became known): the fresh path at zero delay.",
        "",
        "| grid | predictor | evaluation instants | MAE | RMSE | Poisson dev. |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for x in r.table.itertuples():
        lines.append(f"| {x.grid} | {x.predictor} | {x.n_test} | {x.mae:.3f} | {x.rmse:.3f} | "
                     f"{x.poisson_deviance:.3f} |")
    lines += ["", "## Each model minus daily (95% interval, bootstrap over evaluation weeks)", "",
              "| grid | model | metric | model - daily | 95% interval | reading |", "|---|---|---|---:|---|---|"]
    for x in r.deltas.itertuples():
        lines.append(f"| {x.grid} | {x.model} | {x.metric} | {x.minus_daily:+.3f} | [{x.ci_low:+.3f}, "
                     f"{x.ci_high:+.3f}] | {_verdict(x.model, x.ci_low, x.ci_high)} |")
    lines += ["", "(`squared_error` is the mean squared error, RMSE's square: differences of RMSE have no per-row "
              "form.)", ""]
    return "\n".join(lines)


def plot(r: FreshResult, path: Path | None = None):
    """MAE and Poisson deviance per predictor, per grid: saved to ``path``, else returned (a notebook shows it)."""
    import matplotlib

    if path is not None:  # a file, not a notebook's inline figure
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    grids = list(GRIDS)
    preds = list(dict.fromkeys(r.table["predictor"]))
    x = np.arange(len(preds))
    for ax, metric, title in ((axes[0], "mae", "MAE (commits/week)"),
                              (axes[1], "poisson_deviance", "mean Poisson deviance")):
        for i, grid in enumerate(grids):
            t = r.table[r.table["grid"] == grid].set_index("predictor").reindex(preds)
            ax.bar(x + (i - 0.5) * 0.4, t[metric], 0.4, label=grid)
        ax.set_xticks(x, preds, rotation=20, ha="right")
        ax.set_title(title)
        ax.legend(title="instants")
    fig.suptitle(f"Fresh vs daily features, evaluation from {r.cutoff:%Y-%m-%d}")
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
