"""Latency of one-entity predictions over HTTP: p50/p99 of the ``skewless serve`` predictor, client side, next to
``feast serve`` (features only, one worker) for the same entities and feature service.

    python -m serving.bench [--requests 2000] [--repo owner/name ...] [--serving-time ISO] [--url URL]
                            [--no-feast-serve]

Without ``--url`` it starts ``skewless serve`` on a free loopback port in a subprocess (the active profile:
``SKEWLESS_ENV``/``SKEWLESS_HOME``...), waits until the model is ready, measures, and stops it. On data that ends
in the past pass ``--serving-time`` (a replay); otherwise every row is past its TTL and each answer is a "stale"
error. Unless ``--no-feast-serve``, it also starts ``feast serve -w 1 --max-requests 0`` on the same profile (same
yaml, same online store) for the model's feature service. Each request is one ``POST`` with one repository
(cycling over the ``--repo`` values, by default the repositories the serving log has answered), sequential, on one
keep-alive connection: predictor v1, predictor v2 and feast serve's ``/get-online-features`` are measured in ten
rotating blocks (:func:`interleaved`), so that all three see the same machine. It prints p50/p90/p99 of each, the
server's own mean feature-fetch and request times (its histograms), and the ratio of the predictor's p99
(features + model + serving log) to feast serve's (features only).
Nothing is asserted: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional

import numpy as np
import typer

from serving.predictor import DEFAULT_MODEL

app = typer.Typer(add_completion=False, help=__doc__)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model_name: str = DEFAULT_MODEL, serving_time: str | None = None,
                 log: Path | None = None) -> subprocess.Popen:
    """``skewless serve`` on 127.0.0.1:``port`` in a subprocess (stdout/stderr to ``log`` or discarded)."""
    cmd = [sys.executable, "-m", "skewless.cli", "serve", "--port", str(port), "--model-name", model_name]
    if serving_time:
        cmd += ["--serving-time", serving_time]
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)


def wait_until_ok(url: str, timeout: float = 300.0, proc=None) -> None:
    """Poll ``url`` until it answers 200 (raises TimeoutError with the last answer, RuntimeError if ``proc`` exits)."""
    import httpx

    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code} {r.text}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}"
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s: {last}")


def _repos(given: list[str] | None, model_name: str) -> list[str]:
    """The repositories to request: ``--repo`` values, else those the serving log has answered with a prediction."""
    from serving import feature_log

    if given:
        return list(given)
    log = feature_log.read(model_name)
    served = sorted(set(log.loc[log["error"].isna(), "repo"])) if not log.empty else []
    if not served:
        raise typer.BadParameter("no --repo given and the serving log holds no answered repository; pass "
                                 "--repo owner/name (repeatable)")
    return served


@dataclass
class Target:
    """One measured path: POST ``bodies`` (cycled) to ``path``; ``failed(answer)`` flags an answer without a value."""

    label: str
    path: str
    bodies: list[dict]
    failed: Callable[[dict], bool]
    note: str


def predictor_target(url: str, repos: list[str], protocol: str, model_name: str = DEFAULT_MODEL) -> Target:
    """One-repository predictions over KServe ``v1`` or ``v2``; an answer is flagged when it is a per-instance
    error instead of a prediction."""
    if protocol == "v1":
        path = f"{url}/v1/models/{model_name}:predict"

        def body(r):
            return {"instances": [r]}
    else:
        path = f"{url}/v2/models/{model_name}/infer"

        def body(r):
            return {"inputs": [{"name": "repo", "datatype": "BYTES", "shape": [1], "data": [r]}]}

    def failed(answer: dict) -> bool:
        if protocol == "v1":
            return isinstance(answer["predictions"][0], dict)
        return answer["outputs"][0]["data"][0] is None

    return Target(f"predictor {protocol}", path, [body(r) for r in repos], failed, "answers were per-instance errors")


def interleaved(targets: list[Target], n: int, rounds: int = 10) -> dict[str, tuple[np.ndarray, int]]:
    """``n`` timed requests per target, taken in ``rounds`` blocks that rotate over the targets, so that every path
    sees the same machine (a shared machine's speed drifts by the minute); the first block of each target is
    preceded by ``n // 10`` warm-up requests, every later one by 5 (a new connection)."""
    per = [n // rounds + (1 if i < n % rounds else 0) for i in range(rounds)]
    out: dict[str, tuple[list[np.ndarray], int]] = {t.label: ([], 0) for t in targets}
    for r, k in enumerate(per):
        if k == 0:
            continue
        for t in targets:
            lat, flagged = timed_posts(t.path, t.bodies, k, t.failed, warmup=n // 10 if r == 0 else 5)
            blocks, total = out[t.label]
            blocks.append(lat)
            out[t.label] = (blocks, total + flagged)
    return {label: (np.concatenate(blocks), flagged) for label, (blocks, flagged) in out.items()}


def timed_posts(path: str, bodies: list[dict], n: int, failed, warmup: int | None = None) -> tuple[np.ndarray, int]:
    """Seconds per request of ``n`` sequential POSTs cycling over ``bodies`` on one keep-alive connection, after
    ``warmup`` (default ``n // 10``) warm-up requests, and how many answers ``failed(answer)`` flags."""
    import httpx

    out, flagged = np.empty(n), 0
    with httpx.Client(timeout=10) as client:
        for i in range(n // 10 if warmup is None else warmup):
            client.post(path, json=bodies[i % len(bodies)]).raise_for_status()
        for i in range(n):
            t = time.perf_counter()
            r = client.post(path, json=bodies[i % len(bodies)])
            out[i] = time.perf_counter() - t
            r.raise_for_status()
            flagged += bool(failed(r.json()))
    return out, flagged


def start_feast_serve(port: int, log: Path | None = None) -> subprocess.Popen:
    """Feast's own feature server (``feast serve``, one worker, no access log) on the active profile.

    With ``--max-requests 0``: by default its gunicorn worker is replaced every 1,000 (+ up to 50) requests, which
    costs one request over a second and, when the replacement closes a keep-alive connection mid-request, a
    connection reset that would abort the measurement; the reference is its best case, without replacements.
    """
    from skewless.core.config import FEATURE_REPO, profile

    feast = str(Path(sys.executable).with_name("feast"))
    cmd = [feast, "-c", str(FEATURE_REPO), "serve", "-p", str(port), "-w", "1", "--no-access-log",
           "--max-requests", "0"]
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env={**os.environ, **profile().feast_env()}, stdout=out, stderr=subprocess.STDOUT)


def feast_serve_target(url: str, service: str, join_key: str, repos: list[str]) -> Target:
    """One-entity ``/get-online-features`` calls of ``service``; an answer is flagged when every feature is null."""
    # results[0] is the join key itself; an entity without any value has every feature null.
    return Target(f"feast serve ({service}, features only, 1 worker)", f"{url}/get-online-features",
                  [{"feature_service": service, "entities": {join_key: [r]}} for r in repos],
                  lambda answer: all(v["values"][0] is None for v in answer["results"][1:]), "answers held no value")


def _service_and_key(url: str, repo: str, model_name: str) -> tuple[str, str]:
    """The feature service the running predictor serves (from its answer) and that service's join key."""
    import httpx
    from feast import FeatureStore

    from skewless.core.config import FEATURE_REPO

    answer = httpx.post(f"{url}/v1/models/{model_name}:predict", json={"instances": [repo]}, timeout=10).json()
    service = answer["feature_service"]
    store = FeatureStore(repo_path=str(FEATURE_REPO))
    keys = {store.get_entity(e).join_key for p in store.get_feature_service(service).feature_view_projections
            for e in store.get_feature_view(p.name).entities}
    if len(keys) != 1:
        raise RuntimeError(f"feature service {service} has join keys {sorted(keys)}; the comparison needs one")
    return service, keys.pop()


def _server_fetch_mean(url: str) -> str:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    vals = {}
    for line in text.splitlines():
        for k in ("skewless_feature_fetch_seconds_sum", "skewless_feature_fetch_seconds_count",
                  "skewless_predictor_request_seconds_sum", "skewless_predictor_request_seconds_count"):
            if line.startswith(k + "{"):
                vals[k] = vals.get(k, 0.0) + float(line.rsplit(" ", 1)[1])
    parts = []
    for what in ("feature_fetch", "predictor_request"):
        s, c = vals.get(f"skewless_{what}_seconds_sum"), vals.get(f"skewless_{what}_seconds_count")
        if s is not None and c:
            parts.append(f"server-side mean {what.replace('_', ' ')}: {1e3 * s / c:.2f} ms")
    return "; ".join(parts)


@app.command()
def main(
    requests: Annotated[int, typer.Option(help="Timed requests per protocol.")] = 2000,
    url: Annotated[Optional[str], typer.Option(help="An already running predictor (default: start one).")] = None,
    model_name: Annotated[str, typer.Option(help="KServe model name.")] = DEFAULT_MODEL,
    serving_time: Annotated[Optional[str], typer.Option(
        help="Passed to the started server: REPLAY at this UTC time (data that ends in the past).")] = None,
    repo: Annotated[Optional[list[str]], typer.Option(
        help="Repository to request, repeatable (default: those in the serving log).")] = None,
    feast_serve: Annotated[bool, typer.Option(
        help="Also time `feast serve` (features only, 1 worker) for the same repositories and service.")] = True,
) -> None:
    """Measure and print p50/p90/p99 of one-entity predictions over HTTP (v1 and v2)."""
    from skewless.core.config import profile

    if requests < 10:
        raise typer.BadParameter("--requests must be at least 10")
    repos = _repos(repo, model_name)
    proc = None
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(port, model_name, serving_time)
    try:
        wait_until_ok(f"{url}/v2/models/{model_name}/ready", proc=proc)
        p = profile()
        typer.echo(f"profile {p.name} (online store: {'Redis ' + (p.redis or '') if p.redis else 'SQLite'}), "
                   f"{len(repos)} repositories, {requests} sequential one-entity requests per protocol, {url}")
        targets = [predictor_target(url, repos, protocol, model_name) for protocol in ("v1", "v2")]
        fproc = None
        try:
            if feast_serve:
                service, key = _service_and_key(url, repos[0], model_name)
                fport = free_port()
                furl = f"http://127.0.0.1:{fport}"
                fproc = start_feast_serve(fport)
                wait_until_ok(f"{furl}/health", proc=fproc)
                targets.append(feast_serve_target(furl, service, key, repos))
            results = interleaved(targets, requests)
        finally:
            if fproc is not None:
                fproc.terminate()
                fproc.wait(timeout=30)
        p99s = {t.label: _line(t.label, results[t.label][0], f"{results[t.label][1]} of {requests} {t.note}")
                for t in targets}
        typer.echo(_server_fetch_mean(url))
        if feast_serve:
            f99 = p99s[targets[-1].label]
            for t in targets[:-1]:
                typer.echo(f"{t.label} p99 / feast serve p99 = {p99s[t.label] / f99:.2f} (goal <= 1)")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def _line(what: str, seconds: np.ndarray, note: str) -> float:
    lat = seconds * 1e3
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    typer.echo(f"{what}: p50 {p50:.2f} ms  p90 {p90:.2f} ms  p99 {p99:.2f} ms  max {lat.max():.2f} ms  "
               f"(p99/p50 {p99 / p50:.1f}); {note}")
    return p99


if __name__ == "__main__":
    app()
