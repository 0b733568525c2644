"""The benchmark report: Markdown tables with ratios, the goals checked, a JSON dump and the scaling plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from skewless.core.config import NEXT_WEEK_COMMITS_SERVICE

GOALS = {
    "hist_time": 2.0,  # get_historical_features <= 2x the raw ASOF JOIN time
    "hist_mem": 1.5,  # ... and <= 1.5x its peak RSS
    "mat_share": 0.5,  # materialization >= 50% of the Redis write ceiling
    "mat_rss_mb": 1000.0,  # ... with peak RSS <= 1 GB
    "online_p99": 3.0,  # get_online_features p99 within 3x raw HMGET (serving's goal; reported here)
}


def _best(runs: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The fastest finished run (time and its CPU), with the lowest peak RSS over the finished runs."""
    ok = [r for r in runs if r["ok"]]
    if not ok:
        return None
    fastest = min(ok, key=lambda r: r["result"]["seconds"])
    return {"seconds": fastest["result"]["seconds"], "cpu": fastest["result"]["cpu_seconds"],
            "rss": min(r["peak_rss_mb"] for r in ok), "before": min(r["result"]["rss_before_mb"] for r in ok),
            "runs": len(ok)}


def _dnf(runs: list[dict[str, Any]]) -> str:
    bad = [r for r in runs if not r["ok"]]
    return f"did not finish: {bad[0]['error']}" if bad else "not run"


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers and goal checks, derived from the raw results."""
    s: dict[str, Any] = {"historical": {}, "goals": {}}
    sizes = results["run"]["sizes"]
    headline = sizes["entity_rows"][-1]
    for key, h in results.get("historical", {}).items():
        best = {k: _best(v) for k, v in h["runs"].items()}
        raw, sk = best.get("raw"), best.get("skewless")
        ratios = {}
        if raw and sk:
            ratios = {"time": sk["seconds"] / raw["seconds"], "rss": sk["rss"] / raw["rss"]}
        s["historical"][key] = {"case": h["case"], "n": h["n"], "best": best, "ratios": ratios,
                                "identical": h["same"].get("identical"), "compared": h["same"].get("compared")}
        if h["n"] == headline and ratios:
            s["goals"][f"historical_{h['case']}"] = {
                "time_ratio": ratios["time"], "rss_ratio": ratios["rss"],
                "met": ratios["time"] <= GOALS["hist_time"] and ratios["rss"] <= GOALS["hist_mem"]
                and bool(h["same"].get("identical")),
            }
    m = results.get("materialization")
    if m:
        def rate(key: str) -> Optional[float]:
            o = m.get(key, {}).get("outcome")
            return o["result"]["rows"] / o["result"]["seconds"] if o and o["ok"] else None

        ceiling = rate("ceiling_resp")
        sk = m["skewless"]["outcome"]
        sk_rss = max(r["outcome"]["peak_rss_mb"] for r in m["skewless"].get("runs", [m["skewless"]]))
        s["materialization"] = {k: rate(k) for k in ("ceiling_resp", "ceiling_redis-py", "skewless", "stock")}
        if ceiling and sk["ok"]:
            share = rate("skewless") / ceiling
            s["goals"]["materialization"] = {
                "share_of_ceiling": share, "peak_rss_mb": sk_rss,
                "kill_rerun_identical": m["identical"].get("kill_rerun"),
                "met": share >= GOALS["mat_share"] and sk_rss <= GOALS["mat_rss_mb"]
                and bool(m["identical"].get("kill_rerun")),
            }
    c = results.get("cluster")
    if c and "skipped" not in c:
        def crate(key: str) -> Optional[float]:
            o = c[key]["outcome"]
            return o["result"]["rows"] / o["result"]["seconds"] if o["ok"] else None

        s["cluster"] = {"ceiling": crate("ceiling"), "skewless": crate("skewless")}
        if s["cluster"]["ceiling"] and s["cluster"]["skewless"]:
            share = s["cluster"]["skewless"] / s["cluster"]["ceiling"]
            s["goals"]["cluster_materialization"] = {
                "share_of_ceiling": share, "masters": c["masters"], "identical": c["identical"],
                "same_as_single_redis": c["same_as_single_redis"],
                "met": share >= GOALS["mat_share"] and bool(c["identical"]),
            }
    on = results.get("online")
    if on and on["ok"]:
        r = on["result"]
        s["goals"]["online"] = {"p99_ratio_1": r["feast_1"]["p99_ms"] / r["raw_1"]["p99_ms"],
                                "p99_ratio_100": r["feast_100"]["p99_ms"] / r["raw_100"]["p99_ms"]}
        s["goals"]["online"]["met_1"] = s["goals"]["online"]["p99_ratio_1"] <= GOALS["online_p99"]
        s["goals"]["online"]["met_100"] = s["goals"]["online"]["p99_ratio_100"] <= GOALS["online_p99"]
        s["goals"]["online"]["met"] = s["goals"]["online"]["met_1"] and s["goals"]["online"]["met_100"]
    return s


def _f(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def cluster_section(results: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """The Markdown lines of the Redis Cluster materialization (none when the section did not run)."""
    c = results.get("cluster")
    if not c:
        return []
    lines: list[str] = []
    lines += ["## Materialization into a Redis Cluster", ""]
    if "skipped" in c:
        lines += [f"Skipped: {c['skipped']}.", ""]
    else:
        sc = s.get("cluster", {})
        ceiling = sc.get("ceiling")
        lines += [
            f"The same {c['entities']:,} entities x {c['features']} features into a Redis Cluster of "
            f"{c['masters']} masters that the benchmark started on loopback (same machine, no replicas, no "
            "persistence), with `SKEWLESS_REDIS=redis_cluster://...` settings (`redis_type: redis_cluster`). "
            "Ceiling: the same hashes pre-encoded and grouped by master before timing, then pipelined to every "
            "master at once, one pipeline in flight per master. Runs alternated, best of each. Redis CPU: all "
            "masters. Same state: digest of every hash over all masters.",
            "",
            "| path | time (s) | rows/s | share of ceiling | client CPU (s) | Redis CPU (s) | peak RSS (MB) |"
            " keys per master | same state |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for key, label in (("ceiling", "ceiling: pre-encoded HSET pipelined per master"),
                           ("skewless", "skewless: StreamingComputeEngine into the cluster")):
            o = c[key]["outcome"]
            if not o["ok"]:
                lines.append(f"| {label} | did not finish: {o['error']} | | | | | | | |")
                continue
            r = sc[key]
            runs = c[key]["runs"]
            rss = max(x["outcome"]["peak_rss_mb"] for x in runs)
            best_of = f" (best of {len(runs)})" if len(runs) > 1 else ""
            spread = (c[key]["digest"] or {}).get("keys_per_master")
            lines.append(f"| {label} | {o['result']['seconds']:.2f}{best_of} | {r:,.0f} | "
                         f"{_f(r / ceiling if ceiling else None, '{:.0%}')} | {o['result']['cpu_seconds']:.1f} | "
                         f"{_f(o['result'].get('redis_cpu_seconds'), '{:.1f}')} | {rss:.0f} | "
                         f"{', '.join(f'{n:,}' for n in spread) if spread else '–'} | "
                         f"{'yes' if c['identical'] else 'NO'} |")
        same = c["same_as_single_redis"]
        lines += ["", "Every run left the same cluster state: " + ("yes" if c["identical"] else "NO") +
                  "; the same hashes as the single-Redis skewless run: " +
                  ("yes" if same else "NO" if same is False else "not compared") + ".", ""]
    return lines


def _verdict(ok: bool) -> str:
    """A goal's verdict, in bold."""
    return "**met**" if ok else "**NOT met**"


def markdown(results: dict[str, Any], command: str) -> str:
    """The report as Markdown."""
    s = summary(results)
    run, data = results["run"], results["data"]
    hist, mat = data["hist"], data["mat"]
    lines = [
        f"# skewless benchmark ({run['sizes']['name']})",
        "",
        f"Command: `{command}`  ",
        f"Started {run['started']}, finished {run.get('finished', '?')}; {run['machine']['cores']} cores, "
        f"{run['machine']['memory_gb']} GB; load average before {tuple(round(x, 1) for x in run['machine']['load_before'])}"
        f", after {tuple(round(x, 1) for x in run.get('load_after', ()))}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()) + ".  ",
        f"Feature table: {hist['rows']:,} rows of `repo_activity` ({hist['entities']:,} repositories, "
        f"{hist['data_files']} data files), scaled from {data['seed']['rows']:,} real rows "
        f"({data['seed']['repos']} repositories of {', '.join(Path(x).name for x in data['seed']['sources'])}).  ",
        f"Times are the timed section of each path (best of {run['repeats']} at the headline size), in a fresh "
        "process per path; peak RSS is that process's (imports included). Stock Feast is stopped at "
        f"{run['cap_mb'] / 1000:.0f} GB RSS or {run['timeout_s']:.0f} s.",
        "",
        "## get_historical_features over Iceberg",
        "",
        "| case | entity rows | path | time (s) | CPU (s) | peak RSS (MB) | RSS before (MB) | time / raw | RSS / raw |"
        " identical |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, h in s["historical"].items():
        for path in ("raw", "skewless", "stock"):
            b = h["best"].get(path)
            runs = results["historical"][key]["runs"][path]
            if b is None:
                if runs:
                    lines.append(f"| {h['case']} | {h['n']:,} | {path} | {_dnf(runs)} | | | | | | |")
                continue
            raw = h["best"].get("raw")
            tr = b["seconds"] / raw["seconds"] if raw else None
            mr = b["rss"] / raw["rss"] if raw else None
            same = "yes" if h["identical"] and path in (h["compared"] or []) else \
                ("NO" if h["identical"] is False else "–")
            lines.append(f"| {h['case']} | {h['n']:,} | {path} | {b['seconds']:.2f} | {b['cpu']:.1f} | "
                         f"{b['rss']:.0f} | {b['before']:.0f} | {_f(tr)} | {_f(mr)} | {same} |")
    ttl_us = next((v["ttl_us"] for v in hist["views"].values() if v["ttl_us"]), 0)
    lines += ["", f"`ttl`: a copy of the view with a TTL of {ttl_us / 3.6e9:g} h; `nottl`: the same with TTL 0 "
              "(unlimited look-back). "
              "`raw`: one DuckDB ASOF JOIN over the table's Parquet files; `identical`: the same rows and values "
              "as every other path that finished (sorted by row_id).", ""]
    m = results.get("materialization")
    if m:
        sm = s["materialization"]
        ceiling = sm.get("ceiling_resp")
        lines += [
            "## Materialization into Redis",
            "",
            f"{mat['entities']:,} entities x {m['features']} features ({mat['rows']:,} table rows, the latest row "
            "per entity is written) into the production profile's online store settings (TtlRedisOnlineStore, "
            "`skip_dedup: true`), for both Feast paths. Same Redis state: digest of every hash equal to the skewless run's. Peak RSS: "
            "the highest over the runs. Client CPU: the writing process; Redis CPU: the server's, during the run.",
            "",
            "| path | time (s) | rows/s | share of ceiling | client CPU (s) | Redis CPU (s) | peak RSS (MB) |"
            " same Redis state |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        names = {"ceiling_resp": "ceiling: pre-encoded pipelined HSET (RESP)",
                 "ceiling_redis-py": "ceiling: pre-encoded HSET through redis-py pipelines",
                 "skewless": "skewless: StreamingComputeEngine + IcebergOfflineStore",
                 "stock": "stock: Feast local engine + DuckDB store"}
        for key, label in names.items():
            if key not in m:
                continue
            o = m[key]["outcome"]
            if not o["ok"]:
                lines.append(f"| {label} | did not finish: {o['error']} | | | | | | |")
                continue
            r = sm[key]
            same = m["identical"].get(key)
            runs = m[key].get("runs", [m[key]])
            rss = max(x["outcome"]["peak_rss_mb"] for x in runs)
            best_of = f" (best of {len(runs)})" if len(runs) > 1 else ""
            lines.append(f"| {label} | {o['result']['seconds']:.2f}{best_of} | {r:,.0f} | "
                         f"{_f(r / ceiling if ceiling else None, '{:.0%}')} | {o['result']['cpu_seconds']:.1f} | "
                         f"{_f(o['result'].get('redis_cpu_seconds'), '{:.1f}')} | {rss:.0f} | "
                         f"{'yes' if same else 'NO' if same is False else '–'} |")
        kr = m["kill_rerun"]
        lines += ["", f"Killed and re-run: the skewless run was killed ({kr['killed']['error']}) with "
                  f"{kr['keys_at_kill']:,} of {mat['entities']:,} keys written, then run again: "
                  f"{'the same Redis state as an uninterrupted run' if m['identical'].get('kill_rerun') else 'DIFFERENT state'}"
                  f" (re-run {_f(kr['rerun']['result'].get('seconds') if kr['rerun']['ok'] else None)} s).", ""]
    on = results.get("online")
    if on and on["ok"]:
        r = on["result"]
        lines += [f"## Online reads (feature service `{NEXT_WEEK_COMMITS_SERVICE}`, Redis)", "",
                  "The Feast SDK in-process (one FeatureStore, the production online store class) against raw HMGETs "
                  "of the same hashes from the same process, sequential requests after a warm-up.",
                  "",
                  "| entities per request | get_online_features p50 / p99 (ms) | raw HMGET p50 / p99 (ms) | p99 ratio |",
                  "|---:|---:|---:|---:|"]
        for b in (1, 100):
            f, w = r[f"feast_{b}"], r[f"raw_{b}"]
            lines.append(f"| {b} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} | {w['p50_ms']:.3f} / {w['p99_ms']:.3f} | "
                         f"{f['p99_ms'] / w['p99_ms']:.1f} |")
        lines.append("")
    lines += cluster_section(results, s)
    lines += ["## Goals", ""]
    if run["sizes"]["name"] != "full":
        lines += ["(Quick sizes: fixed costs dominate, so these checks are indicative only; the goals are defined "
                  "at 10M feature rows, 1M entity rows and 1M entities — `skewless bench`.)", ""]
    g = s["goals"]
    for case in ("ttl", "nottl"):
        x = g.get(f"historical_{case}")
        if x:
            lines.append(f"- historical ({case}): time {x['time_ratio']:.2f}x raw (goal <= {GOALS['hist_time']}x), "
                         f"peak RSS {x['rss_ratio']:.2f}x raw (goal <= {GOALS['hist_mem']}x), identical results: "
                         f"{_verdict(x['met'])}")
    x = g.get("materialization")
    if x:
        lines.append(f"- materialization: {x['share_of_ceiling']:.0%} of the Redis write ceiling (goal >= 50%), "
                     f"peak RSS {x['peak_rss_mb']:.0f} MB (goal <= 1000), kill and re-run safe: "
                     f"{x['kill_rerun_identical']}: {_verdict(x['met'])}")
    x = g.get("cluster_materialization")
    if x:
        lines.append(f"- materialization into a Redis Cluster ({x['masters']} masters): {x['share_of_ceiling']:.0%} of "
                     f"the same cluster's write ceiling (the single-Redis goal, >= 50%), identical states: "
                     f"{x['identical']}: {_verdict(x['met'])}")
    x = g.get("online")
    if x:
        lines.append(f"- online (serving's goal, measured here; goal <= 3x raw HMGET): get_online_features p99 "
                     f"{x['p99_ratio_1']:.1f}x for 1 entity: {_verdict(x['met_1'])}; {x['p99_ratio_100']:.1f}x for 100 "
                     f"entities per call: {_verdict(x['met_100'])}")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> Optional[Path]:
    """Time and peak RSS against entity rows, per path and TTL case (PNG); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    s = summary(results)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"raw": "tab:gray", "skewless": "tab:blue", "stock": "tab:red"}
    for case, style in (("ttl", "-"), ("nottl", "--")):
        for name in ("raw", "skewless", "stock"):
            pts = sorted((h["n"], h["best"][name]) for h in s["historical"].values()
                         if h["case"] == case and h["best"].get(name))
            if not pts:
                continue
            xs = [n for n, _ in pts]
            ax_t.plot(xs, [b["seconds"] for _, b in pts], style, marker="o", color=colors[name],
                      label=f"{name} ({case})")
            ax_m.plot(xs, [b["rss"] / 1000 for _, b in pts], style, marker="o", color=colors[name],
                      label=f"{name} ({case})")
    rows = results["data"]["hist"]["rows"]
    for ax, title, unit in ((ax_t, "time of get_historical_features", "seconds"),
                            (ax_m, "peak RSS of the process", "GB")):
        ax.set_xscale("log")
        ax.set_xlabel("entity rows")
        ax.set_ylabel(unit)
        ax.set_title(f"{title}\n({rows:,} feature rows)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_yscale("log")
    ax_m.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(results: dict[str, Any], out_dir: Path, command: str) -> dict[str, Path]:
    """Write ``bench_<size>.md``, ``bench_<size>.json`` and ``bench_<size>_scaling.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = results["run"]["sizes"]["name"]
    md = out_dir / f"bench_{name}.md"
    md.write_text(markdown(results, command))
    js = out_dir / f"bench_{name}.json"
    js.write_text(json.dumps({"results": results, "summary": summary(results)}, indent=1, default=str))
    files = {"markdown": md, "json": js}
    png = plot(results, out_dir / f"bench_{name}_scaling.png")
    if png:
        files["plot"] = png
    return files
