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
    # the streaming section (issue 16 "Speed")
    "stream_p99_s": 1.0,  # event arrival -> visible online, p99 <= 1 s ...
    "stream_rate": 5_000,  # ... at >= 5,000 events/s
    "stream_share": 0.5,  # one processor >= 50% of the broker's own publish -> consume throughput
    "fresh_read": 1.5,  # a live-service online read <= 1.5x a daily-service read of the same entity count
    "fresh_training": 2.0,  # live-view training retrieval <= 2x the daily view's on the same rows
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
    if results.get("streaming"):
        s["streaming"] = streaming_summary(results["streaming"])
        s["goals"].update(s["streaming"]["goals"])
    on = results.get("online")
    if on and on["ok"]:
        r = on["result"]
        s["goals"]["online"] = {"p99_ratio_1": r["feast_1"]["p99_ms"] / r["raw_1"]["p99_ms"],
                                "p99_ratio_100": r["feast_100"]["p99_ms"] / r["raw_100"]["p99_ms"]}
        s["goals"]["online"]["met_1"] = s["goals"]["online"]["p99_ratio_1"] <= GOALS["online_p99"]
        s["goals"]["online"]["met_100"] = s["goals"]["online"]["p99_ratio_100"] <= GOALS["online_p99"]
        s["goals"]["online"]["met"] = s["goals"]["online"]["met_1"] and s["goals"]["online"]["met_100"]
    return s


def _err(o: Optional[dict[str, Any]]) -> str:
    """A path's error on one table line (no pipes, no newlines)."""
    return str((o or {}).get("error")).replace("|", "/").replace("\n", " ")


def _ok(o: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A worker outcome's result, None when it did not finish."""
    return o["result"] if o and o.get("ok") else None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def streaming_summary(st: dict[str, Any]) -> dict[str, Any]:
    """The streaming section's figures and goal checks, every ratio computed from the two measured numbers."""
    bt, pt = _ok(st.get("broker_throughput")), _ok(st.get("processor_throughput"))
    bl, pl = _ok(st.get("broker_latency")), _ok(st.get("processor_latency"))
    on, tr = _ok(st.get("online")), st.get("training") or {}
    out: dict[str, Any] = {
        "broker_events_per_s": bt and bt["events_per_s"], "processor_events_per_s": pt and pt["events_per_s"],
        "broker_latency": bl and bl["latency"], "processor_lag": pl and pl["lag"], "probe": pl and pl["probe"],
        "processor_rate_achieved": pl and pl["events_per_s"], "goals": {},
    }
    out["share_of_broker"] = _ratio(out["processor_events_per_s"], out["broker_events_per_s"])
    g = out["goals"]
    if out["share_of_broker"] is not None:
        g["stream_throughput"] = {"share": out["share_of_broker"],
                                  "met": out["share_of_broker"] >= GOALS["stream_share"]}
    if pl and pl["probe"].get("n") and pl["lag"].get("n"):
        p99 = max(pl["probe"]["p99_s"], pl["lag"]["p99_s"])
        g["stream_latency"] = {"rate": pl["rate"], "achieved": pl["events_per_s"], "probe_p99_s": pl["probe"]["p99_s"],
                               "lag_p99_s": pl["lag"]["p99_s"], "all_probes_seen": pl["probes_seen"] == pl["probes_sent"],
                               "met": p99 <= GOALS["stream_p99_s"] and pl["rate"] >= GOALS["stream_rate"]
                               and pl["events_per_s"] >= GOALS["stream_rate"] and pl["probes_seen"] == pl["probes_sent"]}
    if on:
        out["read_ratio"] = {b: _ratio(on[f"live_{b}"]["p99_ms"], on[f"daily_{b}"]["p99_ms"]) for b in (1, 100)}
        out["read_ratio_p50"] = {b: _ratio(on[f"live_{b}"]["p50_ms"], on[f"daily_{b}"]["p50_ms"]) for b in (1, 100)}
        g["fresh_read"] = {"p99_ratio_1": out["read_ratio"][1], "p99_ratio_100": out["read_ratio"][100],
                           "met": all(r is not None and r <= GOALS["fresh_read"] for r in out["read_ratio"].values())}
    live, daily = _ok(tr.get("live")), _ok(tr.get("daily"))
    if live and daily:
        out["training_ratio"] = _ratio(live["seconds"], daily["seconds"])
        out["training_rss_ratio"] = _ratio(tr["live"]["peak_rss_mb"], tr["daily"]["peak_rss_mb"])
        g["fresh_training"] = {"time_ratio": out["training_ratio"], "entity_rows": tr["entity_rows"],
                               "met": out["training_ratio"] <= GOALS["fresh_training"]
                               and live["rows"] == daily["rows"] == tr["entity_rows"]}
    return out


def _ms(p: Optional[dict[str, Any]], key: str) -> str:
    return "–" if not p or key not in p else f"{p[key] * 1000:,.0f}"


def streaming_section(results: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """The Markdown lines of the streaming section (none when it did not run)."""
    st = results.get("streaming")
    if not st:
        return []
    sm = s["streaming"]
    prep = st.get("prepare", {})
    lines = [
        "## The fresh path: stream processor vs the broker's own limit (JetStream)", "",
        f"A production deployment of its own (JetStream stream, PostgreSQL catalog and registry, Redis online store). "
        f"Events: the shipped sample's commits cloned into {st['repos']:,} repositories under new shas, checked by "
        f"the intake's rules; a publisher process and a consumer process. Broker: plain nats-py, the same bodies, "
        f"PubAcks gathered per 4,000, a durable pull consumer fetching up to 5,000 and acknowledging them (the "
        f"protocol of `skewless.stream.nats_log` without skewless). Ours: the intake's log client and one "
        f"`skewless stream run` processor (`--max-batch {st['max_batch']:,}`): land in `abukix.commit_events` and "
        f"`abukix.commits`, write the versions online, acknowledge. Throughput: events from the first publish to the "
        f"last acknowledgement ({st['events']:,} events, full speed). Latency: {st['rate']:,} events/s for "
        f"{st['seconds']:g} s; broker: publish -> delivered; processor: arrival -> written online, every event; probe: "
        f"a commit every 0.5 s in a repository of its own, arrival -> visible in `get_online_features` (polled every "
        f"25 ms by the publisher process).", "",
        "| path | events | events/s | share of broker | latency p50 / p99 / max (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in (("broker_throughput", "broker: publish -> consume, full speed"),
                       ("processor_throughput", "processor: publish -> landed, online, acked, full speed"),
                       ("broker_latency", f"broker at {st['rate']:,}/s"),
                       ("processor_latency", f"processor at {st['rate']:,}/s: arrival -> written online"),
                       ("probe", f"probe at {st['rate']:,}/s: arrival -> visible in get_online_features")):
        o = st.get(key) if key != "probe" else st.get("processor_latency")
        r = _ok(o)
        if r is None:
            lines.append(f"| {label} | did not finish: {_err(o)} | | | |")
            continue
        lat = r.get("probe") if key == "probe" else r.get("lag") or r.get("latency")
        events = r["probes_seen"] if key == "probe" else r["events"]
        share = _ratio(r["events_per_s"], sm["broker_events_per_s"]) if key == "processor_throughput" else None
        rate = "–" if key == "probe" else f"{r['events_per_s']:,.0f}"
        lines.append(f"| {label} | {events:,} | {rate} | {_f(share, '{:.0%}')} | "
                     f"{_ms(lat, 'p50_s')} / {_ms(lat, 'p99_s')} / {_ms(lat, 'max_s')} |")
    pt, pl = _ok(st.get("processor_throughput")), _ok(st.get("processor_latency"))
    for r, what in ((pt, "full speed"), (pl, f"{st['rate']:,}/s")):
        if r:
            spent = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["stage_seconds"].items()))
            lines += ["", f"Processor at {what}: {r['batches']} batches, {r['events']:,} events, {r['versions']:,} versions "
                      f"written, {r['pending_after']} pending after; time by stage: {spent}; landing "
                      f"{r['land_ms_per_event_first']:.2f} ms per event in the first batches, "
                      f"{r['land_ms_per_event_last']:.2f} ms in the last."]
            if r.get("probe_errors"):
                lines.append(f"Probe errors: {r['probe_errors']}.")
    sq = _ok(st.get("sqlite_log"))
    if sq:
        lines += ["", f"Local profile's SQLite event log, raw: publish {sq['publish_per_s']:,.0f} events/s, fetch + ack "
                  f"{sq['consume_per_s']:,.0f} events/s ({sq['events']:,} events, one process)."]
    on = _ok(st.get("online"))
    lines += ["", f"### Online reads: live service vs daily service ({prep.get('repos', st['repos']):,} repositories)",
              ""]
    if on:
        lines += ["`get_online_features` of `next_week_commits_live_v1` (read-time window merge over every version "
                  f"held; about {st['prepare']['events'] // max(1, st['repos']):,} versions per repository) against "
                  "`next_week_commits_v1` (materialized daily values), the same entity rows per call, alternated, in "
                  "one process, sequential calls after a warm-up.", "",
                  "| entities per call | live p50 / p99 (ms) | daily p50 / p99 (ms) | p99 ratio |", "|---:|---:|---:|---:|"]
        for b in (1, 100):
            lv, dv = on[f"live_{b}"], on[f"daily_{b}"]
            lines.append(f"| {b} | {lv['p50_ms']:.2f} / {lv['p99_ms']:.2f} | {dv['p50_ms']:.2f} / {dv['p99_ms']:.2f} | "
                         f"{_f(sm['read_ratio'][b])} |")
    else:
        lines.append(f"Did not finish: {_err(st.get('online'))}")
    tr = st.get("training") or {}
    if tr:
        lines += ["", f"### Training retrieval: live view vs daily view ({tr['entity_rows']:,} entity rows)", "",
                  "`get_historical_features` of every feature of `repo_activity_live` (one DuckDB query over "
                  "`abukix.commit_events`, as known at T) and of `repo_activity` (Iceberg offline store), the same "
                  "entity rows (repositories of the stream, instants from the first streamed event to an hour after "
                  "the last), one process each.", "",
                  "| view | time (s) | CPU (s) | peak RSS (MB) | rows | time ratio |", "|---|---:|---:|---:|---:|---:|"]
        for view in ("daily", "live"):
            o = tr.get(view)
            r = _ok(o)
            if r is None:
                lines.append(f"| {view} | did not finish: {_err(o)} | | | | |")
                continue
            ratio = sm.get("training_ratio") if view == "live" else 1.0
            lines.append(f"| {view} | {r['seconds']:.2f} | {r['cpu_seconds']:.1f} | {o['peak_rss_mb']:.0f} | "
                         f"{r['rows']:,} | {_f(ratio)} |")
    return lines + [""]


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


def historical_section(results: dict[str, Any], s: dict[str, Any], hist: dict[str, Any]) -> list[str]:
    """The Markdown lines of the historical retrieval curve."""
    lines = [
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
    return lines


def markdown(results: dict[str, Any], command: str) -> str:
    """The report as Markdown."""
    s = summary(results)
    run, data = results["run"], results.get("data")
    lines = [
        f"# skewless benchmark ({run['sizes']['name']})",
        "",
        f"Command: `{command}`  ",
        f"Started {run['started']}, finished {run.get('finished', '?')}; {run['machine']['cores']} cores, "
        f"{run['machine']['memory_gb']} GB; load average before {tuple(round(x, 1) for x in run['machine']['load_before'])}"
        f", after {tuple(round(x, 1) for x in run.get('load_after', ()))}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()) + ".  ",
    ]
    hist = mat = {}
    if data:  # the scaled feature tables of the historical and materialization sections
        hist, mat = data["hist"], data["mat"]
        lines += [
            f"Feature table: {hist['rows']:,} rows of `repo_activity` ({hist['entities']:,} repositories, "
            f"{hist['data_files']} data files), scaled from {data['seed']['rows']:,} real rows "
            f"({data['seed']['repos']} repositories of {', '.join(Path(x).name for x in data['seed']['sources'])}).  ",
        ]
    lines += [
        f"Times are the timed section of each path (best of {run['repeats']} at the headline size), in a fresh "
        "process per path; peak RSS is that process's (imports included). Stock Feast is stopped at "
        f"{run['cap_mb'] / 1000:.0f} GB RSS or {run['timeout_s']:.0f} s.",
        "",
    ]
    if results.get("historical"):
        lines += historical_section(results, s, hist)
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
    lines += streaming_section(results, s)
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
    x = g.get("stream_latency")
    if x:
        lines.append(f"- fresh path latency: arrival -> visible online p99 {x['probe_p99_s'] * 1000:,.0f} ms (probe), "
                     f"arrival -> written online p99 {x['lag_p99_s'] * 1000:,.0f} ms (every event), at {x['rate']:,} "
                     f"events/s offered, {x['achieved']:,.0f} held (goal: p99 <= 1 s at >= 5,000 events/s): "
                     f"{_verdict(x['met'])}")
    x = g.get("stream_throughput")
    if x:
        lines.append(f"- one processor's throughput: {x['share']:.0%} of the broker's own publish -> consume rate "
                     f"(goal >= 50%): {_verdict(x['met'])}")
    x = g.get("fresh_read")
    if x:
        lines.append(f"- fresh online read: p99 {_f(x['p99_ratio_1'])}x the daily read for 1 entity, "
                     f"{_f(x['p99_ratio_100'])}x for 100 (goal <= 1.5x): {_verdict(x['met'])}")
    x = g.get("fresh_training")
    if x:
        lines.append(f"- fresh training retrieval: {x['time_ratio']:.2f}x the daily view's time on the same "
                     f"{x['entity_rows']:,} entity rows (goal <= 2x; full size 1,000,000): {_verdict(x['met'])}")
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
    if not results.get("historical"):
        return None
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
