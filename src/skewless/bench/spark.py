"""Measure the DuckDB and Spark engines on the same commits: wall time and peak memory (BENCHMARKS.md, "Spark").

    python -m skewless.bench.spark --data ../shared/data/commits/commits.parquet --scale 10 --work /tmp/bench

For each engine, in a fresh SKEWLESS_HOME under ``--work``: ingest (not measured), then two measured steps, each a
separate process started with the CLI so that start-up (Python imports; for Spark the JVM) is included:

``build``     ``skewless features build --until DAY --engine E`` (both feature tables, from nothing);
``retrieve``  ``get_historical_features`` of ``next_week_commits_v1`` for ``--entities`` random (repo, time) rows.

Peak memory is the largest sum of RSS over the measured process and all its descendants (the Spark JVM is a
child of the Python driver), sampled every 0.2 s; a step above ``--cap-gb`` is stopped and reported DNF. ``--scale N`` makes N copies of every repository (``<repo>~k``)
and author (``<author_id>~k``), the same commits otherwise: N times the rows and entities, same per-entity shape.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless.core.config import NEXT_WEEK_COMMITS_SERVICE
from skewless.core.errors import SkewlessError

SKEWLESS = str(Path(sys.executable).with_name("skewless"))


def scaled(src: Path, factor: int, out: Path) -> Path:
    """``src`` with ``factor`` copies of every repository and author (copy 0 is the original)."""
    if factor == 1:
        return src
    t = pq.read_table(src)
    parts = [t]
    for k in range(1, factor):
        parts.append(t.set_column(t.schema.get_field_index("repo"), "repo", pc.binary_join_element_wise(
            t["repo"], pa.scalar(f"{k}"), "~")).set_column(t.schema.get_field_index("author_id"), "author_id",
                                                           pc.binary_join_element_wise(t["author_id"],
                                                                                       pa.scalar(f"{k}"), "~")))
    pq.write_table(pa.concat_tables(parts), out, compression="zstd")
    return out


class OverCap(SkewlessError, RuntimeError):
    """The measured process tree went over the RSS cap and was stopped (reported as DNF)."""


def measure(cmd: list[str], env: dict[str, str], cap_bytes: int | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS of its process tree in bytes, stdout). Raises on failure, and
    :class:`OverCap` after stopping the tree when its RSS exceeds ``cap_bytes`` (the machine is shared)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        if cap_bytes is not None and peak > cap_bytes:
            for p in reversed(procs):
                with contextlib.suppress(psutil.Error):
                    p.kill()
            proc.wait()
            raise OverCap(f"{' '.join(cmd)}: over {cap_bytes / 2**30:.0f} GiB after {time.perf_counter() - start:.0f} s")
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, peak, out


def retrieve(entities: int, seed: int = 0) -> None:
    """Child step: historical retrieval of the repo service for random entity rows (prints rows and non-nulls)."""
    import random

    import pandas as pd

    from skewless import lake
    from skewless.features.definitions import REPO_ACTIVITY
    from skewless.ops import feast_ops

    t = lake.load_table(REPO_ACTIVITY.identifier).scan(selected_fields=("repo", "event_timestamp")).to_arrow()
    repos = sorted(set(t["repo"].to_pylist()))
    lo, hi = pc.min(t["event_timestamp"]).as_py(), pc.max(t["event_timestamp"]).as_py()
    rng = random.Random(seed)
    span = int((hi - lo).total_seconds())
    df = pd.DataFrame({"repo": [rng.choice(repos) for _ in range(entities)],
                       "event_timestamp": [lo + timedelta(seconds=rng.randrange(span)) for _ in range(entities)]})
    store = feast_ops.feature_store()
    out = store.get_historical_features(entity_df=df, features=store.get_feature_service(NEXT_WEEK_COMMITS_SERVICE)
                                        ).to_df()
    print(len(out), int(out["commits_last_30d"].notna().sum()))


def _offline_store_type(env: dict[str, str]) -> str:
    import yaml

    from skewless.core.config import profile

    return yaml.safe_load(profile(env).feature_store_yaml.read_text())["offline_store"]["type"]


def run(data: Path, scale: int, until: date, engines: list[str], work: Path, entities: int,
        master: str, cap_bytes: int | None = None) -> list[dict]:
    """Ingest, build and retrieve with every engine; one result row per (engine, step)."""
    work.mkdir(parents=True, exist_ok=True)
    source = scaled(data, scale, work / f"commits_x{scale}.parquet")
    rows = []
    for engine in engines:
        home = work / f"{engine}-x{scale}"
        shutil.rmtree(home, ignore_errors=True)
        env = {**os.environ, "SKEWLESS_ENV": "local", "SKEWLESS_HOME": str(home), "SKEWLESS_ENGINE": engine,
               "SKEWLESS_SPARK_MASTER": master}
        env.pop("FEAST_FS_YAML_FILE_PATH", None)
        measure([SKEWLESS, "ingest", str(source)], env)
        try:
            wall, peak, out = measure([SKEWLESS, "features", "build", "--until", until.isoformat(), "--engine",
                                       engine], env, cap_bytes)
        except OverCap as e:
            rows.append({"engine": engine, "scale": scale, "step": "build", "seconds": None, "peak_rss": None,
                         "result": f"DNF: {e}"})
            continue
        rows.append({"engine": engine, "scale": scale, "step": "build", "seconds": wall, "peak_rss": peak,
                     "result": " / ".join(line.split(", snapshot")[0] for line in out.strip().splitlines())})
        measure([SKEWLESS, "apply"], env)
        step = f"retrieve {entities} rows"
        try:
            wall, peak, out = measure([sys.executable, "-m", "skewless.bench.spark", "--retrieve", str(entities)],
                                      env, cap_bytes)
        except OverCap as e:
            rows.append({"engine": engine, "scale": scale, "step": step, "seconds": None, "peak_rss": None,
                         "result": f"DNF: {e}; offline store `{_offline_store_type(env)}`"})
            continue
        n, nonnull = out.split()
        rows.append({"engine": engine, "scale": scale, "step": step, "seconds": wall, "peak_rss": peak,
                     "result": f"{nonnull} of {n} rows with values; offline store `{_offline_store_type(env)}`"})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="commits Parquet file")
    ap.add_argument("--scale", type=int, default=1, help="copies of every repository and author (default 1)")
    ap.add_argument("--until", type=date.fromisoformat, default=date(2026, 8, 22))
    ap.add_argument("--engines", default="duckdb,spark")
    ap.add_argument("--work", type=Path, default=Path("/tmp/skewless-bench"))
    ap.add_argument("--entities", type=int, default=100_000, help="entity rows of the retrieval step")
    ap.add_argument("--master", default="local[*]", help="Spark master (SKEWLESS_SPARK_MASTER)")
    ap.add_argument("--cap-gb", type=float, default=14.0, help="stop a step whose process tree exceeds this RSS")
    ap.add_argument("--retrieve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.retrieve is not None:
        from skewless.core.config import activate

        activate()
        retrieve(args.retrieve)
        return
    if args.data is None or not args.data.exists():
        ap.error(f"--data {args.data} is not a file")
    if args.scale < 1:
        ap.error("--scale must be >= 1")
    started = datetime.now(timezone.utc)
    rows = run(args.data, args.scale, args.until, args.engines.split(","), args.work, args.entities, args.master,
               int(args.cap_gb * 2**30))
    print(f"# {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the "
          f"end; SPARK_CONF_DIR={os.environ.get('SPARK_CONF_DIR', '(unset)')}")
    print("| engine | scale | step | wall s | peak RSS MiB | result |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        wall = "DNF" if r["seconds"] is None else f"{r['seconds']:.1f}"
        rss = "-" if r["peak_rss"] is None else f"{r['peak_rss'] / 2**20:.0f}"
        print(f"| {r['engine']} | x{r['scale']} | {r['step']} | {wall} | {rss} | {r['result']} |")


if __name__ == "__main__":
    main()
