"""The leakage drill: what a data scientist believes about next-week-commits vs how it really does.

The same model (:func:`training.train.make_model`) is trained three ways and every one is scored twice on the same
evaluation weeks (the time split of :mod:`training.dataset`):

``point_in_time``
    Features from Feast's point-in-time join as of each Monday (the platform's path).
``latest_value``
    What a naive notebook does: each repository's most recent feature row (from Feast, as of the last commit day)
    left-joined onto every week by repository only, ignoring time.
``authored_at``
    Features whose event time is ``authored_at`` instead of ``committed_at``: a rebased or long-lived commit counts
    in windows before it reached the history. The feature table is the drill-only variant built by
    :func:`skewless.features.build_variant` (same SQL); it is read through Feast's offline store with the registered
    view's definition pointed at that table (never registered, never served).

*Offline* metrics score the model on the evaluation weeks with the features it was trained with (what its author
sees); *honest* metrics score it on the evaluation weeks with point-in-time features (what production would see:
serving reads the online store, which holds exactly the point-in-time values). The label baselines need no
features, so their two scores are equal.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import pandas as pd

from training import dataset, train
from training.labels import BASELINES, KEYS, LABEL
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView

REPORT_MD = "leakage_drill.md"
REPORT_PNG = "leakage_drill.png"
VARIANTS = {
    "point_in_time": "Feast point-in-time features as of each Monday (the platform's path)",
    "latest_value": "each repo's latest feature row (Feast, as of the last commit day) joined on repo only",
    "authored_at": "features built with authored_at as the event time (drill-only table), point-in-time joined",
}


class DrillError(SkewlessError, RuntimeError):
    """The drill cannot run as asked (the message says why)."""


@dataclass(frozen=True)
class DrillResult:
    table: pd.DataFrame  #: one row per variant/baseline: offline and honest mae, rmse, poisson_deviance
    cutoff: pd.Timestamp
    n_train: int
    n_test: int
    n_repos: int
    snapshots: dict[str, int | None]
    differs: dict[str, float]  #: per variant: share of repo-weeks whose feature values differ from point-in-time
    markdown: Path
    png: Path


def latest_value_features(store: "FeatureStore", ts: dataset.TrainingSet) -> pd.DataFrame:
    """Each repository's feature row as of the last commit day (from Feast), keyed by repo only."""
    if ts.last_commit_day is None:
        raise DrillError("the training set has no last commit day")
    repos = sorted(ts.frame["repo"].unique())
    entity_df = pd.DataFrame({"repo": repos, "event_timestamp": ts.last_commit_day})
    latest = dataset.historical_features(store, entity_df, ts.feature_service)
    return latest.drop(columns=["event_timestamp"])


def _variant_view(fv: "FeatureView", identifier: str) -> "FeatureView":
    """A copy of a registered view reading the Iceberg table ``identifier`` instead (same catalog, same schema)."""
    from feast.infra.data_sources.contrib.iceberg_catalog.iceberg_source import IcebergSource

    src = fv.batch_source
    if not isinstance(src, IcebergSource):
        raise DrillError(f"feature view {fv.name} is not backed by an IcebergSource")
    namespace, table = identifier.split(".", 1)
    variant = copy.copy(fv)
    variant.batch_source = IcebergSource(
        name=f"{namespace}_{table}_drill_source", catalog_type=src.catalog_type, catalog_name=src.catalog_name,
        endpoint=src.endpoint or None, warehouse=src.warehouse, namespace=namespace, table=table,
        catalog_properties=dict(src.catalog_properties), timestamp_field=src.timestamp_field,
        created_timestamp_column=src.created_timestamp_column or None, field_mapping=dict(src.field_mapping),
        description="DRILL ONLY: leaks the future; never registered or served", owner=src.owner,
    )
    return variant


def variant_features(store: "FeatureStore", service: "FeatureService", entity_df: pd.DataFrame,
                     variants: Mapping[str, str]) -> pd.DataFrame:
    """Point-in-time features of ``service`` with some views read from other tables (view name -> identifier).

    Runs Feast's offline-store point-in-time join over the registered views, the named ones pointed at their
    variant tables; nothing is registered.
    """
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    unknown = set(variants) - {proj.name for proj in service.feature_view_projections}
    if unknown:
        raise DrillError(f"feature service {service.name} has no view(s) {', '.join(sorted(unknown))}")
    views, refs = [], []
    for proj in service.feature_view_projections:
        fv = store.get_feature_view(proj.name)
        if proj.name in variants:
            fv = _variant_view(fv, variants[proj.name])
        fv.projection = copy.copy(proj)
        views.append(fv)
        refs += [f"{proj.name_to_use()}:{f.name}" for f in proj.features]
    offline = get_offline_store_from_config(store.config.offline_store)
    job = offline.get_historical_features(config=store.config, feature_views=views, feature_refs=refs,
                                          entity_df=entity_df[KEYS].copy(), registry=store.registry,
                                          project=store.project, full_feature_names=False)
    out = job.to_df()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return out[KEYS + dataset.feature_names(service)]


def _with_features(frame: pd.DataFrame, feats: pd.DataFrame, names: tuple[str, ...], on: list[str]) -> pd.DataFrame:
    """``frame`` with its feature columns replaced by ``feats`` joined on ``on``."""
    out = frame.drop(columns=list(names)).merge(feats, on=on, how="left", validate="many_to_one")
    if len(out) != len(frame):
        raise DrillError("joining the variant features changed the number of rows")
    return out.sort_values(KEYS).reset_index(drop=True)


def _share_differing(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, ...]) -> float:
    """Share of rows (same keys, same order) where any feature differs; two nulls are equal."""
    x = a[list(names)].astype("float64").to_numpy()
    y = b[list(names)].astype("float64").to_numpy()
    same = (x == y) | (pd.isna(x) & pd.isna(y))
    return float((~same.all(axis=1)).mean()) if len(x) else 0.0


def run_leakage(variants: Mapping[str, str], out_dir: Path, cutoff: pd.Timestamp | str | None = None,
                store: "FeatureStore | None" = None) -> DrillResult:
    """Run the drill and write ``leakage_drill.md`` and ``leakage_drill.png`` into ``out_dir``.

    ``variants`` maps a feature view of the service to its authored_at variant table (built by
    :func:`skewless.features.build_variant`).
    """
    store = store or dataset.default_store()
    ts = dataset.build(train.DEFAULT_SERVICE, store=store)
    pit = ts.frame
    names = ts.feature_names
    service = dataset.service_of(store, ts.feature_service)
    frames = {
        "point_in_time": pit,
        "latest_value": _with_features(pit, latest_value_features(store, ts), names, ["repo"]),
        "authored_at": _with_features(pit, variant_features(store, service, pit, variants), names, KEYS),
    }
    _, pit_test, cut = dataset.split(pit, cutoff)
    rows = []
    n_train = 0
    for variant, frame in frames.items():
        train_part, test_part, _ = dataset.split(frame, cut)
        n_train = len(train_part)
        model = train.make_model(names)
        model.fit(train.features_of(train_part, names), train_part[LABEL].to_numpy(float))
        offline = train.scores(test_part[LABEL], model.predict(train.features_of(test_part, names)))
        honest = train.scores(pit_test[LABEL], model.predict(train.features_of(pit_test, names)))
        rows.append({"variant": variant, "kind": "model",
                     **{f"offline_{k}": v for k, v in offline.items()},
                     **{f"honest_{k}": v for k, v in honest.items()}})
    for b in BASELINES:
        s = train.scores(pit_test[LABEL], pit_test[b])
        rows.append({"variant": f"baseline_{b}", "kind": "baseline",
                     **{f"offline_{k}": v for k, v in s.items()}, **{f"honest_{k}": v for k, v in s.items()}})
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    differs = {v: _share_differing(pit, f, names) for v, f in frames.items()}
    result = DrillResult(table=table, cutoff=cut, n_train=n_train, n_test=len(pit_test),
                         n_repos=pit["repo"].nunique(), snapshots=ts.snapshots, differs=differs,
                         markdown=out_dir / REPORT_MD, png=out_dir / REPORT_PNG)
    result.markdown.write_text(markdown(result, variants))
    plot(result)
    return result


def markdown(result: DrillResult, variants: Mapping[str, str]) -> str:
    """The drill's report as Markdown (every number comes from ``result``)."""
    t = result.table
    lines = [
        f"# Leakage drill: {train.MODEL_NAME}",
        "",
        "Regenerate with `skewless drills leakage` (see `src/skewless/drills/leakage.py`). Same model, same evaluation weeks;",
        "**offline** = scored with the features it was trained with (what its author believes), **honest** =",
        "scored with point-in-time features (what serving sees).",
        "",
        f"- Evaluation: the weeks starting on or after {result.cutoff:%Y-%m-%d} ({result.n_test} repo-weeks); "
        f"training: {result.n_train} repo-weeks that end on or before it; {result.n_repos} repositories.",
        "- Read from: " + ", ".join(f"`{k}` snapshot {v}" for k, v in sorted(result.snapshots.items()))
        + "; authored_at variant table(s): " + ", ".join(f"`{v}`" for v in variants.values()) + ".",
        "- Poisson deviance floors predictions at "
        f"{train.DEVIANCE_FLOOR:g} (it is undefined at 0).",
        "",
        "| variant | training features | offline MAE | honest MAE | offline RMSE | honest RMSE "
        "| offline Poisson dev. | honest Poisson dev. |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in t.itertuples():
        what = VARIANTS.get(r.variant, "label-derived, no features")
        lines.append(f"| {r.variant} | {what} | {r.offline_mae:.3f} | {r.honest_mae:.3f} | {r.offline_rmse:.3f} "
                     f"| {r.honest_rmse:.3f} | {r.offline_poisson_deviance:.3f} | {r.honest_poisson_deviance:.3f} |")
    lines += ["", "## Reading", ""]
    by = t.set_index("variant")
    pit_honest = by.loc["point_in_time", "honest_mae"]
    for v in ("latest_value", "authored_at"):
        off, hon = by.loc[v, "offline_mae"], by.loc[v, "honest_mae"]
        gap = (hon - pit_honest) / pit_honest
        lines.append(
            f"- `{v}`: {result.differs.get(v, float('nan')):.1%} of all repo-weeks get feature values other than "
            f"the point-in-time ones. Its author's own (offline) MAE is {off:.3f} where production would see "
            f"{hon:.3f} ({'optimistic' if off < hon else 'pessimistic'} by {abs(hon - off) / hon:.1%}); in "
            f"production it is {abs(gap):.1%} {'worse' if gap > 0 else 'better'} than the point-in-time model "
            f"({pit_honest:.3f}).")
    lines.append("")
    return "\n".join(lines)


def plot(result: DrillResult) -> Path:
    """Bar chart of offline vs honest MAE and Poisson deviance per variant, saved as the drill's PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    t = result.table
    x = np.arange(len(t))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric, title in ((axes[0], "mae", "MAE (commits/week)"), (axes[1], "poisson_deviance",
                                                                          "mean Poisson deviance")):
        ax.bar(x - 0.2, t[f"offline_{metric}"], 0.4, label="offline (believed)", color="tab:orange")
        ax.bar(x + 0.2, t[f"honest_{metric}"], 0.4, label="honest (point-in-time)", color="tab:blue")
        ax.set_xticks(x, t["variant"], rotation=20, ha="right")
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"Leakage drill, evaluation from {result.cutoff:%Y-%m-%d} ({result.n_test} repo-weeks)")
    fig.tight_layout()
    fig.savefig(result.png, dpi=110)
    plt.close(fig)
    return result.png
