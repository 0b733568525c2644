"""Benchmark data: real feature rows built by the pipeline, scaled up to the benchmark's sizes.

Nothing here is random noise: the seed is ``features.repo_activity`` built by the real pipeline (ingest →
``features.build``) from the shared commit history (or the shipped sample when it is absent). Scaling clones those
rows under new entity names:

* the **history table** (point-in-time joins): whole repository histories cloned, each clone shifted back by a
  whole number of weeks (weekday patterns kept), until the table holds ``feature_rows`` rows;
* the **materialization table**: ``mat_entities`` entities, each the last ``mat_days`` consecutive daily rows of a
  randomly chosen (repository, day) of the seed, shifted so that every entity's newest row is on the seed's last day;
  materialized through a benchmark-only 10-feature view (the issue's "1M entities x 10 features"): the six
  ``repo_activity`` features plus four ratios derived from them in the same row (:func:`wide_table`);
* **entity rows**: (repo, T) with T uniform within ``[-3 days, +4 days]`` of a random table row (so before the first
  row, inside the TTL and expired all occur), 1% unknown repositories, and a ``row_id``.

Every function takes its sizes and seed explicitly; the same arguments give the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless.features import REPO_ACTIVITY

_DAY_US = 86_400 * 1_000_000
_WEEK_US = 7 * _DAY_US


@dataclass(frozen=True)
class Sizes:
    """The sizes of one benchmark run."""

    name: str
    feature_rows: int
    entity_rows: tuple[int, ...]  # the scaling curve; the last one is the headline size
    mat_entities: int
    mat_days: int = 3
    stock_nottl_max_rows: int = 100_000  # stock Feast without TTL above this: attempted once, under the caps
    ceiling_variants: tuple[str, ...] = ("resp", "redis-py")
    mat_batch_size: int = 50_000  # the streaming engine's batch_size
    sample_seed: bool = False  # seed from the shipped sample instead of the shared commit history
    # --- the streaming section (skewless.bench.streaming) ---
    stream_events: int = 200_000  # events of the full-speed (throughput) runs, broker and processor
    stream_rate: int = 5_000  # events/s of the fixed-rate (latency) runs: the goal
    stream_seconds: float = 30.0  # duration of the fixed-rate runs
    stream_repos: int = 1_000  # repositories the events are spread over (versions per repository = events / this)
    stream_entity_rows: int = 1_000_000  # entity rows of the live-vs-daily training retrieval
    stream_reads: int = 500  # get_online_features calls per path and entities-per-call size
    stream_max_batch: int = 5_000  # the processor's --max-batch (its default)

    @property
    def headline(self) -> int:
        return self.entity_rows[-1]


FULL = Sizes("full", 10_000_000, (10_000, 30_000, 100_000, 300_000, 1_000_000), 1_000_000)
QUICK = Sizes("quick", 12_000, (1_000,), 2_000, stock_nottl_max_rows=1_000, ceiling_variants=("resp",),
              mat_batch_size=100, sample_seed=True, stream_events=1_500, stream_rate=300, stream_seconds=3.0,
              stream_repos=20, stream_entity_rows=2_000, stream_reads=60, stream_max_batch=500)


def seed_rows(seed_home_table: pa.Table) -> pa.Table:
    """The seed feature rows, sorted by (repo, event_timestamp), cast to the feature table's schema."""
    return seed_home_table.cast(REPO_ACTIVITY.arrow_schema).sort_by([("repo", "ascending"),
                                                                     ("event_timestamp", "ascending")])


def _shift(ts: pa.ChunkedArray | pa.Array, us: np.ndarray) -> pa.Array:
    """Timestamps moved back by ``us`` microseconds each."""
    raw = ts.cast(pa.int64()).to_numpy()
    return pa.array(raw - us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def history_table(seed: pa.Table, feature_rows: int, rng_seed: int = 20261122) -> pa.Table:
    """Whole seed histories cloned (``repo~0001``...) and shifted back by whole weeks, about ``feature_rows`` rows."""
    rng = np.random.default_rng(rng_seed)
    if feature_rows < seed.num_rows:  # fewer rows than the seed: the latest rows of every repository
        repos = pc.unique(seed["repo"])
        keep = max(1, feature_rows // len(repos))
        per_repo = [seed.filter(pc.equal(seed["repo"], r)) for r in repos.to_pylist()]
        seed = pa.concat_tables([t.slice(max(0, t.num_rows - keep)) for t in per_repo])
    clones = max(1, -(-feature_rows // seed.num_rows))
    parts = []
    for k in range(clones):
        weeks = 0 if k == 0 else int(rng.integers(0, 52))
        repo = pc.binary_join_element_wise(seed["repo"], pa.scalar(f"~{k:04d}"), "")
        shifted = _shift(seed["event_timestamp"].combine_chunks(), np.full(seed.num_rows, weeks * _WEEK_US))
        parts.append(seed.set_column(0, "repo", repo).set_column(1, "event_timestamp", shifted))
    table = pa.concat_tables(parts).slice(0, feature_rows) if clones * seed.num_rows > feature_rows \
        else pa.concat_tables(parts)
    return table.cast(REPO_ACTIVITY.arrow_schema).sort_by([("repo", "ascending"), ("event_timestamp", "ascending")])


#: The four derived features of the 10-feature materialization view: name -> (numerator, denominator); null where
#: the denominator is 0 or null.
WIDE_FEATURES = {
    "share_of_30d_commits_in_last_7d": ("commits_last_7d", "commits_last_30d"),
    "lines_per_commit_last_7d": ("lines_changed_last_7d", "commits_last_7d"),
    "commits_per_author_last_30d": ("commits_last_30d", "active_authors_last_30d"),
    "files_per_day_since_last_commit": ("mean_files_per_commit_last_30d", "days_since_last_commit"),
}
WIDE_SCHEMA = pa.schema(list(REPO_ACTIVITY.arrow_schema) + [pa.field(n, pa.float64()) for n in WIDE_FEATURES])


def wide_table(table: pa.Table) -> pa.Table:
    """``table`` (repo_activity rows) with the four :data:`WIDE_FEATURES` appended: ten features per row."""
    for name, (num, den) in WIDE_FEATURES.items():
        d = pc.cast(table[den], pa.float64())
        d = pc.if_else(pc.equal(d, 0.0), pa.scalar(None, pa.float64()), d)
        table = table.append_column(name, pc.divide(pc.cast(table[num], pa.float64()), d))
    return table.cast(WIDE_SCHEMA)


def materialization_table(seed: pa.Table, entities: int, days: int, rng_seed: int = 20261123) -> pa.Table:
    """``entities`` entities x ``days`` consecutive daily rows, newest row of each on the seed's last day."""
    rng = np.random.default_rng(rng_seed)
    repo = seed["repo"].combine_chunks()
    ts = seed["event_timestamp"].combine_chunks().cast(pa.int64()).to_numpy()
    # A seed row can end a window if the `days - 1` rows before it belong to the same repository.
    same = np.ones(len(ts), dtype=bool)
    codes = pc.dictionary_encode(repo).indices.to_numpy()
    for back in range(1, days):
        prev = np.roll(codes, back)
        same &= (prev == codes) & (np.arange(len(ts)) >= back)
    ends = np.flatnonzero(same)
    chosen = rng.choice(ends, size=entities, replace=True)
    last = int(ts.max())
    idx = (chosen[:, None] - np.arange(days - 1, -1, -1)[None, :]).ravel()
    shift = np.repeat(ts[chosen] - last, days)
    names = pc.binary_join_element_wise(pc.take(repo, pa.array(np.repeat(chosen, days))),
                                        pa.array([f"~m{i:07d}" for i in range(entities) for _ in range(days)]), "")
    table = seed.take(pa.array(idx))
    table = table.set_column(0, "repo", names).set_column(1, "event_timestamp", _shift(table["event_timestamp"], shift))
    return table.cast(REPO_ACTIVITY.arrow_schema)


def entity_rows(history: pa.Table, rows: int, rng_seed: int = 20261124) -> pa.Table:
    """Entity rows (repo, event_timestamp, row_id) around random rows of the history table (see module docstring)."""
    rng = np.random.default_rng(rng_seed)
    pick = rng.integers(0, history.num_rows, size=rows)
    repo = pc.take(history["repo"], pa.array(pick)).combine_chunks()
    unknown = rng.random(rows) < 0.01
    if unknown.any():
        names = repo.to_pylist()
        for i in np.flatnonzero(unknown):
            names[i] = f"unknown/repo~{i}"
        repo = pa.array(names, pa.string())
    base = history["event_timestamp"].combine_chunks().cast(pa.int64()).to_numpy()[pick]
    offset = rng.integers(-3 * _DAY_US, 4 * _DAY_US, size=rows)
    ts = pa.array(base + offset, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table({"repo": repo, "event_timestamp": ts, "row_id": pa.array(np.arange(rows, dtype=np.int64))})


def last_day(table: pa.Table) -> date:
    """The UTC day of the newest row."""
    return pc.max(table["event_timestamp"]).as_py().date()


def write(table: pa.Table, path: Path) -> Path:
    """Write a Parquet file (zstd), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path
