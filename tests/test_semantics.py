"""The real pipeline (ingest -> features.build -> Feast apply/materialize) returns the reference values.

One deployment per module (a module-scoped SKEWLESS_HOME): the shipped sample and every hand-made edge-case table
(disjoint repositories and author ids) are ingested together, built through 2026-08-22 (the sample's last day),
applied, and materialized twice: first through ``EARLY_DAY`` (the online values are captured then), then through
``UNTIL``. The tests then read through Feast:

(a) ``get_historical_features`` on ~300 seeded (repo, T) and ~300 (author, T) pairs of the sample;
(b) every hand-computed edge case;
(c) ``get_online_features`` for every repo and every author (sample and edge tables) as of ``UNTIL`` and as of
    ``EARLY_DAY``;
(d) the authored_at trap.

An entity with no commit strictly before D has no row in the spec: there Feast may answer null for every feature,
and a pipeline that emits a zero-history row (0 counts, null mean and days_since) is accepted as well.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import edge_cases
import reference
from homes import exported
from skewless.data import SAMPLE_COMMITS as SAMPLE
from skewless.core import config

UNTIL = dt.date(2026, 8, 22)  # the sample's last commit day
EARLY_DAY = dt.date(2025, 12, 15)  # a Monday, 5 days after encode/httpx's last commit
US = pd.Timedelta(microseconds=1)
DAY = pd.Timedelta(days=1)
END = reference.as_of_date(UNTIL) + DAY  # every T is < END
SEED = 20260822


@dataclass
class Deployment:
    home: Path
    commits: pd.DataFrame  # sample + edge tables: what the reference reads
    sample: pd.DataFrame  # the shipped sample only
    edge_cases: list = field(default_factory=list)
    early_online: dict[str, pd.DataFrame] = field(default_factory=dict)  # view -> online values as of EARLY_DAY

    def store(self):
        from skewless.ops import feast_ops

        return feast_ops.feature_store()


def _refs(view: str) -> list[str]:
    return [f"{view}:{n}" for n in reference.VIEWS[view][1]]


def _entities(commits: pd.DataFrame, view: str) -> list[str]:
    key = reference.VIEWS[view][0]
    return sorted(set(commits[key]))


def _online(store, commits: pd.DataFrame, view: str) -> pd.DataFrame:
    key = reference.VIEWS[view][0]
    rows = [{key: e} for e in _entities(commits, view)]
    return store.get_online_features(features=_refs(view), entity_rows=rows).to_df()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    root = tmp_path_factory.mktemp("semantics")
    home = root / "home"
    home.mkdir()
    edge_table, cases = edge_cases.all_cases()
    edge_path = root / "edge_cases.parquet"
    pq.write_table(edge_table, edge_path)
    sample = pd.read_parquet(SAMPLE)
    assert edge_cases.last_day(edge_table, cases) <= UNTIL
    assert not set(edge_table.column("author_id").to_pylist()) & set(sample["author_id"])
    assert not set(edge_table.column("repo").to_pylist()) & set(sample["repo"])
    commits = pd.concat([sample, edge_table.to_pandas()], ignore_index=True)

    dep = Deployment(home=home, commits=commits, sample=sample, edge_cases=cases)
    with exported(home):
        from skewless import features
        from skewless.ops import feast_ops
        from skewless.lake import ingest

        ingest.ingest([SAMPLE, edge_path])
        features.build(until=UNTIL)
        feast_ops.apply()
        feast_ops.materialize(until=EARLY_DAY)
        store = feast_ops.feature_store()
        for view in reference.VIEWS:
            dep.early_online[view] = _online(store, commits, view)
        feast_ops.materialize(until=UNTIL)
    return dep


# --- comparison ---------------------------------------------------------------------------------------------------
def _same(got, want) -> bool:
    if want is None or (not isinstance(want, (list, dict)) and pd.isna(want)):
        return got is None or bool(pd.isna(got))
    if got is None or pd.isna(got):
        return False
    if isinstance(want, float):
        return math.isclose(float(got), want, rel_tol=0.0, abs_tol=1e-9)
    return float(got) == float(want) and int(got) == int(want)


def _row_ok(got: dict, want: dict | None, view: str) -> bool:
    """Feature by feature: every feature of the view for "no row" and for the reference's own (whole) rows, the
    features a hand-computed edge case names otherwise."""
    names = reference.VIEWS[view][1]
    if want is None:  # no commit before D: null row, or a zero-history row
        alternatives = [{n: None for n in names}, reference.empty_history(view)]
        return any(all(_same(got[n], alt[n]) for n in names) for alt in alternatives)
    return all(_same(got[n], want[n]) for n in names if n in want)


def _describe(entity: str, t, got: dict, want: dict | None, view: str) -> str:
    names = reference.VIEWS[view][1]
    g = {n: (None if got[n] is None or pd.isna(got[n]) else got[n]) for n in names}
    return f"{view} {entity!r} @ {pd.Timestamp(t).isoformat()}: expected {want}, got {g}"


def _mismatches(got: pd.DataFrame, want: list[dict | None], entities: list[str], ts: list, view: str) -> list[str]:
    out = []
    for i, (entity, t, w) in enumerate(zip(entities, ts, want)):
        g = got.iloc[i].to_dict()
        if not _row_ok(g, w, view):
            out.append(_describe(entity, t, g, w, view))
    return out


def _report(bad: list[str], total: int) -> str:
    return f"{len(bad)} of {total} rows differ from the reference:\n" + "\n".join(bad[:25])


def historical(store, view: str, entities: list[str], ts: list) -> pd.DataFrame:
    """get_historical_features for (entity, T) pairs, returned in the pairs' order."""
    key = reference.VIEWS[view][0]
    entity_df = pd.DataFrame(
        {
            key: entities,
            "event_timestamp": pd.to_datetime(pd.Series(ts, dtype=object), utc=True).astype("datetime64[ns, UTC]"),
            "row_id": np.arange(len(entities), dtype=np.int64),
        }
    )
    out = store.get_historical_features(entity_df=entity_df, features=_refs(view)).to_df()
    assert len(out) == len(entity_df), "Feast returned a different number of rows than the entity_df"
    out = out.sort_values("row_id").reset_index(drop=True)
    assert out["row_id"].tolist() == list(range(len(entities)))
    assert out[key].tolist() == entities
    return out


def reference_values(commits: pd.DataFrame, view: str, entities: list[str], ts: list) -> list[dict | None]:
    key = reference.VIEWS[view][0]
    groups = {k: g for k, g in commits.groupby(key, sort=False)}
    return [reference.features(groups[e], view, e, t) for e, t in zip(entities, ts)]


# --- (entity, T) pairs on the sample -------------------------------------------------------------------------------
def _keep(pairs: list[tuple[str, pd.Timestamp]]) -> list[tuple[str, pd.Timestamp]]:
    return [(e, reference.as_utc(t)) for e, t in pairs if reference.as_utc(t) < END]


def repo_pairs(sample: pd.DataFrame, seed: int = SEED) -> list[tuple[str, pd.Timestamp]]:
    """~50 (repo, T) per repository: first days, window edges around commits, after the last commit, random."""
    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, pd.Timestamp]] = []
    for repo, g in sorted(sample.groupby("repo"), key=lambda kv: kv[0]):
        times = g["committed_at"].sort_values().reset_index(drop=True)
        first, last = times.iloc[0], times.iloc[-1]
        f, l = reference.day_of(first), reference.day_of(last)
        pairs += [(repo, first), (repo, f), (repo, f + DAY - US)]  # no commit before D yet
        pairs += [(repo, f + k * DAY) for k in (1, 2, 3, 5, 8)]  # the first days, at 00:00
        pairs += [(repo, f + k * DAY - US) for k in (2, 4, 9)]  # ... and at 23:59:59.999999
        pairs += [(repo, last + US)] + [(repo, l + k * DAY) for k in (1, 2, 7, 8, 30, 31, 45, 400)]
        pairs += [(repo, l + k * DAY - US) for k in (8, 32)] + [(repo, END - US), (repo, END - DAY)]
        for c in rng.choice(times.to_numpy(), size=5, replace=False):
            d = reference.day_of(c)
            for j, k in enumerate((0, 1, 7, 8, 30, 31)):
                pairs.append((repo, d + k * DAY + (DAY - US if j % 2 else pd.Timedelta(0))))
        span = int((END - (f - 3 * DAY)) / US)
        pairs += [(repo, f - 3 * DAY + int(x) * US) for x in rng.integers(0, span, size=8)]
    return _keep(pairs)


def author_pairs(sample: pd.DataFrame, seed: int = SEED) -> list[tuple[str, pd.Timestamp]]:
    """~300 (author, T): the busiest, all multi-repository and random authors, around Mondays and first commits."""
    rng = np.random.default_rng(seed + 1)
    counts = sample["author_id"].value_counts()
    multi = sample.groupby("author_id")["repo"].nunique()
    chosen = list(counts.index[:8]) + sorted(multi[multi > 1].index)
    rest = sorted(set(counts.index) - set(chosen))
    chosen += list(rng.choice(rest, size=10, replace=False))
    pairs: list[tuple[str, pd.Timestamp]] = []
    groups = dict(tuple(sample.groupby("author_id")))
    for a in chosen:
        times = groups[a]["committed_at"].sort_values().reset_index(drop=True)
        f = reference.day_of(times.iloc[0])
        pairs += [(a, times.iloc[0]), (a, f + DAY), (a, f + 2 * DAY - US)]
        for c in rng.choice(times.to_numpy(), size=min(2, len(times)), replace=False):
            m = reference.monday_on_or_before(reference.as_utc(c))
            pairs += [(a, m + 7 * DAY), (a, m + 8 * DAY), (a, m + 14 * DAY - US), (a, m + 14 * DAY),
                      (a, m + 21 * DAY + 12 * pd.Timedelta(hours=1))]
        pairs.append((a, END - US))
    return _keep(pairs)


# --- (a) historical features on the sample -------------------------------------------------------------------------
@pytest.mark.parametrize("view", [reference.REPO_VIEW, reference.AUTHOR_VIEW])
def test_historical_features_match_reference_on_sample(deployed: Deployment, view: str) -> None:
    pairs = repo_pairs(deployed.sample) if view == reference.REPO_VIEW else author_pairs(deployed.sample)
    assert 250 <= len(pairs) <= 400
    # The pairs cover both time-of-day extremes and the "no row yet" case.
    assert any(t == reference.day_of(t) for _, t in pairs)
    assert any(t == reference.day_of(t) + DAY - US for _, t in pairs)
    entities, ts = [e for e, _ in pairs], [t for _, t in pairs]
    want = reference_values(deployed.sample, view, entities, ts)
    assert any(w is None for w in want) and sum(w is not None for w in want) > 200
    with exported(deployed.home):
        got = historical(deployed.store(), view, entities, ts)
    bad = _mismatches(got, want, entities, ts, view)
    assert not bad, _report(bad, len(pairs))


# --- (b) hand-made edge cases ------------------------------------------------------------------------------------
@pytest.mark.parametrize("view", [reference.REPO_VIEW, reference.AUTHOR_VIEW])
def test_edge_cases_through_the_pipeline(deployed: Deployment, view: str) -> None:
    cases = [c for c in deployed.edge_cases if edge_cases.view_of(c[0]) == view]
    assert cases
    entities, ts, want = [c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases]
    with exported(deployed.home):
        got = historical(deployed.store(), view, entities, ts)
    bad = _mismatches(got, want, entities, ts, view)
    assert not bad, _report(bad, len(cases))
    # and every feature, named by the case or not, equals the reference's (itself checked against the cases)
    whole = reference_values(deployed.commits, view, entities, ts)
    bad = _mismatches(got, whole, entities, ts, view)
    assert not bad, "against the reference: " + _report(bad, len(cases))


# --- (c) online / offline parity ----------------------------------------------------------------------------------
@pytest.mark.parametrize("view", [reference.REPO_VIEW, reference.AUTHOR_VIEW])
def test_online_features_match_reference_as_of_until(deployed: Deployment, view: str) -> None:
    entities = _entities(deployed.commits, view)
    assert len(entities) >= (12 if view == reference.REPO_VIEW else 1150)
    with exported(deployed.home):
        got = _online(deployed.store(), deployed.commits, view)
    _check_online(deployed, view, got, entities, UNTIL)


@pytest.mark.parametrize("view", [reference.REPO_VIEW, reference.AUTHOR_VIEW])
def test_online_features_matched_reference_as_of_early_day(deployed: Deployment, view: str) -> None:
    """Captured right after materialize(until=EARLY_DAY), before the later materialization.

    Rows of later days are already built at that point, so this catches a materialization that loads a row
    stamped after DAY (e.g. an end bound of DAY + 1 day 00:00 used inclusively), which the as-of-UNTIL test
    cannot see: nothing is built after UNTIL.
    """
    _check_online(deployed, view, deployed.early_online[view], _entities(deployed.commits, view), EARLY_DAY)


def _check_online(deployed: Deployment, view: str, got: pd.DataFrame, entities: list[str], day: dt.date) -> None:
    key = reference.VIEWS[view][0]
    assert got[key].tolist() == entities, "online rows are not in the entity_rows order"
    t = reference.as_of_date(day)
    want = reference_values(deployed.commits, view, entities, [t] * len(entities))
    assert sum(w is not None for w in want) > 0.9 * len(entities) or day == EARLY_DAY
    bad = _mismatches(got.reset_index(drop=True), want, entities, [t] * len(entities), view)
    assert not bad, "online store as of " + str(day) + ": " + _report(bad, len(entities))


# --- (d) the authored_at trap -------------------------------------------------------------------------------------
@pytest.mark.parametrize("view", [reference.REPO_VIEW, reference.AUTHOR_VIEW])
def test_pipeline_buckets_by_committed_at_not_authored_at(deployed: Deployment, view: str) -> None:
    """A pipeline that used ``authored_at`` as the event time would be wrong on the sample.

    About 4% of the sample's commits landed more than 7 days after they were authored (apache/iceberg-python's
    history was imported in 2023 with author dates back to 2019; rebased and long-lived branches elsewhere). For
    (entity, T) pairs taken the day after such a commit landed and the day after it was authored, the reference
    computed with ``committed_at := authored_at`` differs from the true reference. This test asserts that such
    pairs exist (so the trap is real on this data) and that the pipeline returns the true value, never the
    authored_at one, on every one of them.
    """
    sample = deployed.sample
    key = reference.VIEWS[view][0]
    late = sample[sample["committed_at"] - sample["authored_at"] > pd.Timedelta(days=7)]
    rng = np.random.default_rng(SEED + 2)
    picked = late.iloc[sorted(rng.choice(len(late), size=60, replace=False))]
    pairs = []
    for _, c in picked.iterrows():
        for ts in (c["committed_at"], c["authored_at"]):
            d = reference.day_of(ts)
            pairs += [(c[key], d + DAY), (c[key], d + 8 * DAY - US)]
    pairs = _keep(pairs)
    entities, ts = [e for e, _ in pairs], [t for _, t in pairs]
    trap = sample.copy()
    trap["committed_at"] = trap["authored_at"]
    true = reference_values(sample, view, entities, ts)
    wrong = reference_values(trap, view, entities, ts)
    differ = [i for i, (a, b) in enumerate(zip(true, wrong)) if a != b]
    assert len(differ) >= 40, "the sample should show the authored_at trap on many (entity, T) pairs"
    entities = [entities[i] for i in differ]
    ts = [ts[i] for i in differ]
    true = [true[i] for i in differ]
    wrong = [wrong[i] for i in differ]
    with exported(deployed.home):
        got = historical(deployed.store(), view, entities, ts)
    bad = _mismatches(got, true, entities, ts, view)
    assert not bad, _report(bad, len(entities))
    names = reference.VIEWS[view][1]
    like_authored = [i for i in range(len(entities))
                     if wrong[i] is not None and all(_same(got.iloc[i][n], wrong[i][n]) for n in names)]
    assert not like_authored, "pipeline values equal the authored_at bucketing at rows " + str(like_authored[:10])
