"""The benchmark's orchestration: data, one worker process per measured path, equality checks, the report.

Every path runs in its own process (:mod:`skewless.bench.worker`), started by :class:`Runner`, which reads the
child's peak RSS from ``os.wait4`` and enforces a memory cap and a timeout (Feast's stock store can take 20 GB;
a path stopped by a cap is reported as "did not finish", with where it was stopped). Paths:

historical retrieval (``get_historical_features``), per TTL case and entity-row count
    ``raw``       one DuckDB ASOF JOIN over the table's Parquet files — the limit;
    ``skewless``  Feast SDK with :class:`~skewless.feast_ext.offline.IcebergOfflineStore`;
    ``stock``     Feast SDK with Feast's DuckDB offline store.
materialization into Redis
    ``ceiling``   the same hashes, pre-encoded, pipelined (raw protocol bytes; and through redis-py);
    ``skewless``  ``FeatureStore.materialize`` with the streaming engine and the Iceberg offline store;
    ``stock``     ``FeatureStore.materialize`` with Feast's local engine and DuckDB offline store;
    ``kill-rerun`` the skewless path killed part-way, then run again: must end in the same Redis state.
online reads
    ``get_online_features`` of the feature service against raw HMGETs of the same hashes.
materialization into a Redis Cluster (three masters started by the benchmark, when redis-server is installed)
    ``ceiling``   the same hashes, pre-encoded, grouped by master, pipelined to every master at once;
    ``skewless``  ``FeatureStore.materialize`` with the streaming engine into that cluster.

Retrieval results are compared row by row; Redis states are compared by a digest of every hash.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from skewless.core import config
from skewless.bench.data import Sizes
from skewless.features.definitions import REPO_ACTIVITY
from skewless.core.errors import SkewlessError

HIST_VIEW = REPO_ACTIVITY.name
TTL_VIEW = "repo_activity_ttl1d"
NOTTL_VIEW = "repo_activity_nottl"
MAT_VIEW = "repo_activity_wide"  # 10 features: the materialization size (bench.data.wide_table)
SERVICE = config.NEXT_WEEK_COMMITS_SERVICE
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_NATS = "nats://127.0.0.1:4222"
OFFLINE = {"skewless": "skewless.feast_ext.offline.IcebergOfflineStore", "stock": "duckdb"}
STREAMING = "skewless.feast_ext.materialize.StreamingComputeEngine"


class BenchError(SkewlessError, RuntimeError):
    """The benchmark cannot run as asked (busy Redis database, failed preparation...)."""


@dataclass
class Outcome:
    """One worker run."""

    label: str
    ok: bool
    wall_seconds: float
    peak_rss_mb: float
    result: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def seconds(self) -> Optional[float]:
        return self.result.get("seconds") if self.ok else None


def _proc_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


class Runner:
    """Starts workers with a profile home, caps and logs; keeps every outcome."""

    def __init__(self, workdir: Path, echo: Callable[[str], None], cap_mb: float, timeout_s: float) -> None:
        self.workdir = workdir
        self.echo = echo
        self.cap_mb = cap_mb
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        (workdir / "specs").mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def env(self, home: Path, profile_env: Optional[dict[str, str]] = None) -> dict[str, str]:
        """The worker's environment: the local profile in ``home``, or the profile ``profile_env`` describes."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_FS_YAML"))}
        wanted = {"SKEWLESS_ENV": "local", "SKEWLESS_HOME": str(home), **(profile_env or {})}
        env.update(config.profile(wanted).feast_env())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self, label: str, spec: dict[str, Any], home: Path, cap_mb: Optional[float] = None,
            timeout_s: Optional[float] = None, stop_when: Optional[Callable[[], bool]] = None,
            profile_env: Optional[dict[str, str]] = None) -> Outcome:
        """Run one worker; kill it past the cap/timeout, or when ``stop_when()`` turns true (a deliberate kill)."""
        slug = label.replace(" ", "_").replace("/", "_")
        spec_path = self.workdir / "specs" / f"{slug}.json"
        spec = {**spec, "result": str(spec_path.with_suffix(".result.json"))}
        Path(spec["result"]).unlink(missing_ok=True)
        spec_path.write_text(json.dumps(spec, indent=1, default=str))
        cap = cap_mb or self.cap_mb
        timeout = timeout_s or self.timeout_s
        log = open(self.workdir / "logs" / f"{slug}.log", "w")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "skewless.bench.worker", str(spec_path)],
                                env=self.env(home, profile_env), stdout=log, stderr=subprocess.STDOUT)
        reason, seen_mb = None, 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = _proc_rss_mb(proc.pid)
            seen_mb = max(seen_mb, rss)
            elapsed = time.perf_counter() - t0
            if reason is None:
                if rss > cap:
                    reason = f"stopped at {rss / 1000:.1f} GB RSS (cap {cap / 1000:.0f} GB) after {elapsed:.0f} s"
                elif elapsed > timeout:
                    reason = f"stopped after {elapsed:.0f} s (timeout) at {rss / 1000:.1f} GB RSS"
                elif stop_when is not None and stop_when():
                    reason = f"killed on purpose after {elapsed:.1f} s"
                if reason:
                    os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.01 if stop_when is not None else 0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        wall = time.perf_counter() - t0
        peak = max(usage.ru_maxrss * 1024 / 1e6, seen_mb)
        result_file = Path(spec["result"])
        ok = reason is None and proc.returncode == 0 and result_file.exists()
        result = json.loads(result_file.read_text()) if ok else {}
        error = reason
        if reason is None and not ok:
            tail = (self.workdir / "logs" / f"{slug}.log").read_text().strip().splitlines()[-3:]
            error = f"exit code {proc.returncode}: {' | '.join(tail)}"
        out = Outcome(label, ok, wall, peak, result, error)
        self.outcomes.append(out)
        shown = f"{result['seconds']:.2f} s timed" if ok and "seconds" in result else "done" if ok else error
        self.echo(f"  {label}: {shown}, peak RSS {peak:.0f} MB ({wall:.0f} s wall)")
        return out


# --- the benchmark ------------------------------------------------------------------------------------------------
def _yaml(workdir: Path, name: str, offline: str, engine: Any = None, redis: Optional[str] = None) -> Path:
    import yaml

    base = yaml.safe_load((config.FEATURE_REPO / "feature_store.yaml").read_text())
    base["offline_store"] = {"type": offline}
    if engine is not None:
        base["batch_engine"] = engine
    if redis is not None:
        # The production profile's online store, settings included (feature_store.production.yaml): Feast's Redis
        # store with TTL-aware reads, every materialized row written (skip_dedup). Stock and skewless share it.
        prod = yaml.safe_load((config.FEATURE_REPO / "feature_store.production.yaml").read_text())["online_store"]
        target = config.parse_redis(redis)
        base["online_store"] = {**prod, "redis_type": target.redis_type, "connection_string": target.connection_string}
    path = workdir / "yaml" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def redis_digest(client: Any) -> dict[str, Any]:
    """Number of keys and a digest of every hash (key, sorted fields and values) of a Redis database."""
    import hashlib

    per_key = _hash_digests(client)
    return {"keys": len(per_key), "digest": hashlib.sha1(b"".join(sorted(per_key))).hexdigest()}


def cluster_digest(nodes: list[Any]) -> dict[str, Any]:
    """:func:`redis_digest` over every master of a cluster (equal to it for the same hashes on one Redis), with the
    number of keys per master."""
    import hashlib

    per_key, spread = [], []
    for node in nodes:
        d = _hash_digests(node)
        spread.append(len(d))
        per_key += d
    return {"keys": len(per_key), "digest": hashlib.sha1(b"".join(sorted(per_key))).hexdigest(),
            "keys_per_master": spread}


def _hash_digests(client: Any) -> list[bytes]:
    import hashlib

    keys = list(client.scan_iter(count=10_000))
    per_key = []
    for s in range(0, len(keys), 10_000):
        chunk = keys[s:s + 10_000]
        pipe = client.pipeline(transaction=False)
        for k in chunk:
            pipe.hgetall(k)
        for k, h in zip(chunk, pipe.execute()):
            m = hashlib.sha1(k)
            for f in sorted(h):
                m.update(b"\x00" + f + b"\x01" + h[f])
            per_key.append(m.digest())
    return per_key


def _same_frames(paths: dict[str, Path]) -> dict[str, Any]:
    """Compare retrieval results (sorted by row_id): every path against the first."""
    import pandas as pd

    frames = {}
    for name, p in paths.items():
        df = pd.read_parquet(p).sort_values("row_id").reset_index(drop=True)
        for c in df.columns:
            if pd.api.types.is_numeric_dtype(df[c]) and c != "row_id":
                df[c] = df[c].astype("float64")
            elif pd.api.types.is_datetime64_any_dtype(df[c]):
                df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[us, UTC]")
        frames[name] = df
    names = list(frames)
    out: dict[str, Any] = {"compared": names, "identical": True, "detail": ""}
    ref = frames[names[0]]
    for other in names[1:]:
        try:
            pd.testing.assert_frame_equal(ref, frames[other][list(ref.columns)], check_exact=True)
        except (AssertionError, KeyError) as e:
            out["identical"] = False
            out["detail"] += f"{names[0]} vs {other}: {str(e)[:400]} "
    return out


#: The sections of a run, in order: get_historical_features (vs raw ASOF JOIN and stock), then materialization
#: (vs the Redis ceiling and stock) followed by online reads; then the fresh path against the broker's own limit
#: (:mod:`skewless.bench.streaming`).
SECTIONS = ("historical", "materialization", "streaming")
#: The sections that need the scaled feature tables (:meth:`Bench.prepare`).
TABLE_SECTIONS = ("historical", "materialization")


class Bench:
    """One benchmark run (see the module docstring); :meth:`run` returns the results dictionary."""

    def __init__(self, sizes: Sizes, workdir: Path, redis_host: str, redis_port: int, redis_db: int,
                 repeats: int, cap_mb: float, timeout_s: float, echo: Callable[[str], None],
                 cluster: bool = True, pg: str = DEFAULT_PG, nats: str = DEFAULT_NATS) -> None:
        self.sizes = sizes
        #: PostgreSQL server (no database) and NATS server of the streaming section's own deployment
        self.pg = pg.rstrip("/")
        self.nats = nats
        self.with_cluster = cluster
        self.workdir = workdir
        self.redis = (redis_host, redis_port, redis_db)
        self.repeats = repeats
        self.echo = echo
        self.runner = Runner(workdir, echo, cap_mb, timeout_s)
        self.results: dict[str, Any] = {}

    # --- data ---------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        w = self.workdir
        sources = [str(s) for s in ([config.SAMPLE_COMMITS] if self.sizes.sample_seed else config.commit_sources())]
        # the tables do not depend on the streaming section's sizes: changing those must not rebuild them
        sizes = {k: v for k, v in asdict(self.sizes).items() if not k.startswith("stream_")}
        stamp = {"sources": sources, "sizes": sizes, "views": [TTL_VIEW, NOTTL_VIEW, MAT_VIEW],
                 "mtimes": [os.path.getmtime(s) for s in sources if os.path.exists(s)]}
        stamp = json.loads(json.dumps(stamp))  # as stored: tuples of the sizes read back as lists
        stamp_path = w / "data.json"
        if stamp_path.exists() and json.loads(stamp_path.read_text()).get("stamp") == stamp:
            self.results["data"] = json.loads(stamp_path.read_text())["data"]
            self.echo("data: reusing " + str(w))
            return
        import shutil

        for d in ("seed", "hist", "mat"):
            shutil.rmtree(w / d, ignore_errors=True)
        self.echo(f"data: building the seed features from {', '.join(sources)}")
        seed = w / "seed_repo_activity.parquet"
        seed_out = self._need(self.runner.run("prepare seed", {"task": "prepare_seed", "sources": sources,
                                                                "seed_path": str(seed)}, w / "seed"))
        self.echo(f"data: scaling to {self.sizes.feature_rows:,} feature rows and {self.sizes.headline:,} entity rows")
        hist = self._need(self.runner.run("prepare hist", {
            "task": "prepare_home", "kind": "hist", "seed_path": str(seed), "feature_rows": self.sizes.feature_rows,
            "entity_rows": self.sizes.headline, "entity_path": str(w / "entity_rows.parquet"),
            "ttl_view": TTL_VIEW, "nottl_view": NOTTL_VIEW}, w / "hist"))
        mat = self._need(self.runner.run("prepare mat", {
            "task": "prepare_home", "kind": "mat", "seed_path": str(seed), "mat_entities": self.sizes.mat_entities,
            "mat_days": self.sizes.mat_days, "wide_view": MAT_VIEW}, w / "mat"))
        data = {"seed": seed_out.result, "hist": hist.result, "mat": mat.result}
        stamp_path.write_text(json.dumps({"stamp": stamp, "data": data}, indent=1))
        self.results["data"] = data

    def _need(self, o: Outcome) -> Outcome:
        if not o.ok:
            raise BenchError(f"{o.label} failed: {o.error} (log in {self.workdir / 'logs'})")
        return o

    # --- historical ---------------------------------------------------------------------------------------------
    def historical(self) -> None:
        w, hist = self.workdir, self.results["data"]["hist"]
        yamls = {k: _yaml(w, f"hist_{k}", v) for k, v in OFFLINE.items()}
        out: dict[str, Any] = {}
        for case, view in (("ttl", TTL_VIEW), ("nottl", NOTTL_VIEW)):
            meta = hist["views"][view]
            for n in self.sizes.entity_rows:
                self.echo(f"historical {case}, {n:,} entity rows x {hist['rows']:,} feature rows")
                base = {"task": "historical", "view": view, "n": n, "entity_path": str(w / "entity_rows.parquet"),
                        "features": meta["features"], "entity": meta["entity"], "ttl_us": meta["ttl_us"],
                        "table": REPO_ACTIVITY.identifier}
                runs: dict[str, list[Outcome]] = {"raw": [], "skewless": [], "stock": []}
                parquet: dict[str, Path] = {}
                reps = self.repeats if n == self.sizes.headline else 1
                for rep in range(reps):
                    for engine in ("raw", "skewless"):
                        target = w / "out" / f"{case}_{n}_{engine}.parquet"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        spec = {**base, "engine": engine, "out_parquet": str(target),
                                "yaml": str(yamls.get(engine, yamls["skewless"]))}
                        o = self.runner.run(f"hist {case} {n} {engine} #{rep + 1}", spec, w / "hist")
                        runs[engine].append(o)
                        if o.ok:
                            parquet[engine] = target
                if case == "ttl" or n <= self.sizes.stock_nottl_max_rows or n == self.sizes.headline:
                    target = w / "out" / f"{case}_{n}_stock.parquet"
                    spec = {**base, "engine": "stock", "out_parquet": str(target), "yaml": str(yamls["stock"])}
                    o = self.runner.run(f"hist {case} {n} stock", spec, w / "hist")
                    runs["stock"].append(o)
                    if o.ok:
                        parquet["stock"] = target
                same = _same_frames(parquet) if len(parquet) > 1 else {"compared": list(parquet), "identical": None}
                self.echo(f"  identical results ({', '.join(same['compared'])}): {same['identical']}")
                out[f"{case}/{n}"] = {"case": case, "n": n, "same": same,
                                      "runs": {k: [asdict(o) for o in v] for k, v in runs.items()}}
        self.results["historical"] = out

    # --- materialization and online reads -----------------------------------------------------------------------
    def _redis_client(self):
        import redis

        host, port, db = self.redis
        return redis.Redis(host=host, port=port, db=db, socket_timeout=30)

    def _redis_spec(self) -> dict[str, Any]:
        host, port, db = self.redis
        return {"redis_host": host, "redis_port": port, "redis_db": db}

    def materialization(self) -> None:
        w, mat = self.workdir, self.results["data"]["mat"]
        client = self._redis_client()
        host, port, db = self.redis
        if client.dbsize():
            raise BenchError(f"Redis {host}:{port} database {db} is not empty; the benchmark writes and flushes it — "
                             "choose an empty one with --redis-db")
        conn = f"{host}:{port},db={db}"
        engines = {"skewless": {"type": STREAMING, "batch_size": self.sizes.mat_batch_size}, "stock": "local"}
        yamls = {k: _yaml(w, f"mat_{k}", OFFLINE[k], engines[k], conn) for k in OFFLINE}
        meta = mat["views"][MAT_VIEW]
        start = datetime.fromisoformat(mat["first"]) - timedelta(days=1)
        end = datetime.fromisoformat(mat["last"]) + timedelta(days=1)
        base = {**self._redis_spec(), "task": "materialize", "view": MAT_VIEW, "start": start.isoformat(),
                "end": end.isoformat(), "entities": mat["entities"]}
        out: dict[str, Any] = {"entities": mat["entities"], "table_rows": mat["rows"],
                               "features": len(meta["features"])}

        def digest(label: str) -> dict[str, Any]:
            d = redis_digest(client)
            self.echo(f"  Redis state after {label}: {d['keys']:,} keys, digest {d['digest'][:12]}")
            client.flushdb()
            return d

        def run(label: str, spec: dict[str, Any], **kw: Any) -> Outcome:
            """A worker run, with the Redis server's CPU seconds during it."""
            before = client.info("cpu")
            o = self.runner.run(label, spec, w / "mat", **kw)
            after = client.info("cpu")
            o.result["redis_cpu_seconds"] = sum(after[k] - before[k] for k in ("used_cpu_user", "used_cpu_sys"))
            return o

        def record(key: str, runs: list[tuple[Outcome, Optional[dict[str, Any]]]]) -> None:
            """The fastest finished run as the outcome; every run and its Redis state kept."""
            ok = [(o, d) for o, d in runs if o.ok]
            best, best_digest = min(ok, key=lambda od: od[0].result["seconds"]) if ok else runs[0]
            out[key] = {"outcome": asdict(best), "digest": best_digest,
                        "runs": [{"outcome": asdict(o), "digest": d} for o, d in runs]}

        self.echo(f"materialization: {mat['entities']:,} entities x {len(meta['features'])} features "
                  f"({mat['rows']:,} table rows) into Redis db {db}")
        ceiling_spec = {**self._redis_spec(), "task": "ceiling", "view": MAT_VIEW, "entity": meta["entity"],
                        "table": f"{config.FEATURES_NAMESPACE}.{MAT_VIEW}", "yaml": str(yamls["skewless"])}
        runs: dict[str, list[tuple[Outcome, Optional[dict[str, Any]]]]] = {
            **{f"ceiling_{v}": [] for v in self.sizes.ceiling_variants}, "skewless": []}
        for rep in range(self.repeats):  # alternated, best of each kept: the machine's load changes by the minute
            for variant in self.sizes.ceiling_variants:
                o = run(f"ceiling {variant} #{rep + 1}", {**ceiling_spec, "variant": variant})
                runs[f"ceiling_{variant}"].append((o, digest(f"ceiling {variant}") if o.ok else None))
                client.flushdb()
            o = run(f"materialize skewless #{rep + 1}", {**base, "yaml": str(yamls["skewless"])})
            runs["skewless"].append((o, digest("skewless") if o.ok else None))
            client.flushdb()
            if o.ok and rep == 0:
                self.online(base, yamls["skewless"], meta["entity"])
        for key, r in runs.items():
            record(key, r)
        client.flushdb()
        # Killed part-way (once a tenth of the entities are written), then run again to the end.
        threshold = max(1, mat["entities"] // 10)
        killed = run("materialize skewless (killed)", {**base, "yaml": str(yamls["skewless"])},
                     stop_when=lambda: client.dbsize() >= threshold)
        at_kill = client.dbsize()
        rerun = run("materialize skewless (rerun)", {**base, "yaml": str(yamls["skewless"])})
        out["kill_rerun"] = {"killed": asdict(killed), "keys_at_kill": at_kill, "rerun": asdict(rerun),
                             "digest": digest("kill-rerun") if rerun.ok else None}
        client.flushdb()
        o = run("materialize stock", {**base, "yaml": str(yamls["stock"])})
        record("stock", [(o, digest("stock") if o.ok else None)])
        client.flushdb()
        ref = (out["skewless"]["digest"] or {}).get("digest")
        identical: dict[str, Optional[bool]] = {}
        for key, v in out.items():
            if not isinstance(v, dict) or "digest" not in v:
                continue
            states = [r["digest"] for r in v.get("runs", [{"digest": v["digest"]}]) if r["digest"]]
            identical[key] = all(d["digest"] == ref for d in states) if states and ref else None
        out["identical"] = identical
        self.results["materialization"] = out

    def cluster_materialization(self) -> None:
        """The streaming engine into a Redis Cluster of three masters started here (loopback, no persistence)
        against that cluster's raw write ceiling (pre-encoded HSETs pipelined to every master at once), measured in
        the same run, alternated, best of each; states compared by digest. Skipped, with the reason in the results,
        without redis-server/redis-cli or with ``cluster=False``."""
        from skewless.bench import cluster as local_cluster

        why = "not asked for (--no-cluster)" if not self.with_cluster else local_cluster.available()
        if why:
            self.echo(f"Redis Cluster materialization: skipped ({why})")
            self.results["cluster"] = {"skipped": why}
            return
        w, mat = self.workdir, self.results["data"]["mat"]
        meta = mat["views"][MAT_VIEW]
        import shutil

        shutil.rmtree(w / "cluster", ignore_errors=True)
        cl = local_cluster.LocalCluster(w / "cluster").start()
        try:
            nodes = [cl.node(p) for p in cl.ports]
            engine = {"type": STREAMING, "batch_size": self.sizes.mat_batch_size}
            yaml_path = _yaml(w, "mat_cluster", OFFLINE["skewless"], engine, cl.url)
            start = datetime.fromisoformat(mat["first"]) - timedelta(days=1)
            end = datetime.fromisoformat(mat["last"]) + timedelta(days=1)
            base = {"task": "materialize", "view": MAT_VIEW, "start": start.isoformat(), "end": end.isoformat(),
                    "entities": mat["entities"], "yaml": str(yaml_path)}
            ceiling_spec = {"task": "ceiling", "variant": "cluster", "cluster": cl.url, "view": MAT_VIEW,
                            "entity": meta["entity"], "table": f"{config.FEATURES_NAMESPACE}.{MAT_VIEW}",
                            "yaml": str(yaml_path)}
            self.echo(f"Redis Cluster materialization: {mat['entities']:,} entities x {len(meta['features'])} "
                      f"features into {len(cl.ports)} masters ({cl.url})")

            def run(label: str, spec: dict[str, Any]) -> tuple[Outcome, Optional[dict[str, Any]]]:
                before = [n.info("cpu") for n in nodes]
                o = self.runner.run(label, spec, w / "mat")
                after = [n.info("cpu") for n in nodes]
                o.result["redis_cpu_seconds"] = sum(a[k] - b[k] for a, b in zip(after, before)
                                                    for k in ("used_cpu_user", "used_cpu_sys"))
                d = cluster_digest(nodes) if o.ok else None
                if d:
                    self.echo(f"  cluster state after {label}: {d['keys']:,} keys {d['keys_per_master']}, "
                              f"digest {d['digest'][:12]}")
                cl.flush()
                return o, d

            runs: dict[str, list[tuple[Outcome, Optional[dict[str, Any]]]]] = {"ceiling": [], "skewless": []}
            for rep in range(self.repeats):  # alternated: the machine's load changes by the minute
                runs["ceiling"].append(run(f"cluster ceiling #{rep + 1}", ceiling_spec))
                runs["skewless"].append(run(f"cluster materialize skewless #{rep + 1}", base))
        finally:
            cl.stop()
        out: dict[str, Any] = {"masters": len(cl.ports), "entities": mat["entities"],
                               "features": len(meta["features"])}
        for key, r in runs.items():
            ok = [(o, d) for o, d in r if o.ok]
            best, best_digest = min(ok, key=lambda od: od[0].result["seconds"]) if ok else r[0]
            out[key] = {"outcome": asdict(best), "digest": best_digest,
                        "runs": [{"outcome": asdict(o), "digest": d} for o, d in r]}
        states = {d["digest"] for r in runs.values() for _, d in r if d}
        single = ((self.results.get("materialization") or {}).get("skewless") or {}).get("digest") or {}
        out["identical"] = len(states) == 1 and all(d for r in runs.values() for _, d in r)
        out["same_as_single_redis"] = (states == {single["digest"]}) if single.get("digest") and states else None
        self.results["cluster"] = out

    def online(self, base: dict[str, Any], yaml_path: Path, entity: str) -> None:
        """get_online_features of the model's feature service against raw HMGETs (its view materialized first,
        untimed, by the streaming engine; Redis flushed afterwards)."""
        self.echo("online reads: get_online_features vs raw HMGET")
        w = self.workdir
        prep = self.runner.run("materialize for online reads", {**base, "view": HIST_VIEW, "yaml": str(yaml_path)},
                               w / "mat")
        if prep.ok:
            on = self.runner.run("online", {**self._redis_spec(), "task": "online", "yaml": str(yaml_path),
                                            "service": SERVICE, "entity": entity,
                                            "entity_names": self._entity_names(entity),
                                            "requests": 2000 if self.sizes.name == "full" else 200}, w / "mat")
        else:
            on = prep
        self.results["online"] = asdict(on)
        self._redis_client().flushdb()

    def _entity_names(self, key: str) -> list[str]:
        import pyarrow.compute as pc

        from skewless import lake
        from skewless.core.config import profile

        p = profile({"SKEWLESS_ENV": "local", "SKEWLESS_HOME": str(self.workdir / "mat")})
        t = lake.load_table(REPO_ACTIVITY.identifier, p).scan(selected_fields=(key,), limit=200_000).to_arrow()
        return pc.unique(t[key]).to_pylist()[:20_000]

    # --- the fresh path -----------------------------------------------------------------------------------------
    def streaming(self) -> None:
        """The stream processor against JetStream's own figures, live vs daily reads and training retrieval
        (:mod:`skewless.bench.streaming`), in a deployment of its own on the bench's Redis database."""
        from skewless.bench import streaming

        client = self._redis_client()
        host, port, db = self.redis
        if client.dbsize():
            raise BenchError(f"Redis {host}:{port} database {db} is not empty; the benchmark writes and flushes it — "
                             "choose an empty one with --redis-db")
        self.results["streaming"] = streaming.run_section(self, client, self._need)

    # --- everything ---------------------------------------------------------------------------------------------
    def run(self, sections: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
        """Prepare the data (for ``historical``/``materialization``), then run ``sections`` (``historical``,
        ``materialization``: with online reads, ``streaming``)."""
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown or not sections:
            raise BenchError(f"unknown benchmark section(s) {unknown or sections!r}; choose from {', '.join(SECTIONS)}")
        started = datetime.now(timezone.utc)
        self.results["run"] = {
            "sizes": asdict(self.sizes), "started": started.isoformat(), "python": platform.python_version(),
            "machine": {"cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") *
                                                                   os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
                        "load_before": os.getloadavg()},
            "versions": _versions(), "repeats": self.repeats, "cap_mb": self.runner.cap_mb,
            "timeout_s": self.runner.timeout_s,
        }
        self.results["run"]["sections"] = list(sections)
        if set(sections) & set(TABLE_SECTIONS):
            self.prepare()
        if "historical" in sections:
            self.historical()
        if "materialization" in sections:
            self.materialization()
            self.cluster_materialization()
        if "streaming" in sections:
            self.streaming()
        self.results["run"]["finished"] = datetime.now(timezone.utc).isoformat()
        self.results["run"]["load_after"] = os.getloadavg()
        return self.results


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("feast", "duckdb", "pyiceberg", "pyarrow", "pandas", "redis")}
