"""The main job, end to end on the active profile: ingest → build → apply → materialize → show → parity."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Callable

import pandas as pd


def run(source: Path, echo: Callable[[str], None] = print) -> bool:
    """Run the pipeline on ``source`` and print historical rows, online rows and parity. True if parity holds."""
    from skewless import features, lake
    from skewless.ops import feast_ops, parity
    from skewless.lake import ingest
    from skewless.core import terminal
    from skewless.core.config import NEXT_WEEK_COMMITS_MODEL, NEXT_WEEK_COMMITS_SERVICE, profile

    p = profile()
    echo(f"skewless demo — profile {p.name}, home {p.home}")
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}")

    step(str(ingest.ingest([source])))
    day = lake.newest_commit_day(p)
    for r in features.build(day, p):
        step(str(r))
    with terminal.library_output():  # Feast's "Applying changes ..." lines
        feast_ops.apply(p)
    step("feast apply: registered entities, sources, views and services")
    for r in feast_ops.materialize(day, p):
        step(str(r))

    store = feast_ops.feature_store(p)
    service = store.get_feature_service(NEXT_WEEK_COMMITS_SERVICE)
    repos = sorted(set(lake.commits_table(p).scan(selected_fields=("repo",)).to_arrow()["repo"].to_pylist()))
    probes = [pd.Timestamp(day, tz="UTC") - pd.Timedelta(days=d) for d in (0, 7, 28)]
    entity_df = pd.DataFrame([(r, t) for r in repos[:3] for t in probes], columns=["repo", "event_timestamp"])
    hist = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    echo("\nHistorical (point-in-time) rows from get_historical_features:")
    echo(hist.sort_values(["repo", "event_timestamp"]).to_string(index=False))
    online = store.get_online_features(features=service, entity_rows=[{"repo": r} for r in repos]).to_df()
    echo(f"\nOnline rows from get_online_features (as of {day}):")
    echo(online.to_string(index=False))
    results = parity.check(sample=None, p=p, store=store)
    echo("\nOnline/offline parity (every entity):")
    echo(parity.report(results))
    step("parity checked")

    from training import train

    with terminal.library_output(stderr=True):  # MLflow's "Successfully registered model ..." lines
        trained = train.train(p=p)
    echo(f"\nTrained {NEXT_WEEK_COMMITS_MODEL} through Feast: MLflow run {trained.run_id}, registered version "
         f"{trained.model_version} (evaluation weeks from {trained.cutoff:%Y-%m-%d}):")
    echo(train.metrics_table(trained.metrics))
    served = _serve_one(p, store, repos, day, echo)
    step("served one request over HTTP" if served else "serving FAILED")
    fresh = _fresh(p, store, repos[0], echo)
    step("pushed commits reached the online store" if fresh else "fresh path FAILED")
    step("done")
    return all(r.ok for r in results) and served and fresh


def _serve_one(p, store, repos: list[str], day, echo: Callable[[str], None]) -> bool:
    """Start the KServe predictor on a free loopback port, answer one v1 request over HTTP, print it, stop.

    The data ends on ``day``, so the request is a replay at noon of that day (the views' TTL is applied then).
    """
    import json
    import urllib.error
    import urllib.request

    from serving.predictor import NextWeekCommitsPredictor
    from serving.server import BackgroundServer
    from skewless.feast_ext.ttl import serving_clock
    from skewless.features import day_start

    predictor = NextWeekCommitsPredictor(p=p, store=store)
    if not predictor.load():
        echo(f"\npredictor not ready: {predictor.not_ready_reason}")
        return False
    body = {"instances": repos[:2] + ["no-such/repository"]}
    at = day_start(day) + timedelta(hours=12)
    with serving_clock(at), BackgroundServer([predictor]) as srv:
        url = f"{srv.url}/v1/models/{predictor.name}:predict"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, answer = resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            status, answer = e.code, e.read().decode()
    echo(f"\nKServe predictor (model version {predictor.version}, features from {predictor.service.name} online, "
         f"replayed at {at:%Y-%m-%d %H:%M} UTC): POST {url}\n  request:  {json.dumps(body)}\n"
         f"  response: HTTP {status} {json.dumps(answer)}")
    return status == 200


def _fresh(p, store, repo: str, echo: Callable[[str], None]) -> bool:
    """The fresh path: push three new commits of ``repo`` through the intake, run the stream processor once, and
    print the live features (windows ending now) before and after, with the seconds from push to online."""
    import hashlib
    from datetime import datetime, timezone

    from skewless.core.config import NEXT_WEEK_COMMITS_LIVE_SERVICE
    from skewless.stream import intake, open_log
    from skewless.stream.processor import Processor

    service = store.get_feature_service(NEXT_WEEK_COMMITS_LIVE_SERVICE)

    def live() -> pd.DataFrame:
        return store.get_online_features(features=service, entity_rows=[{"repo": repo}]).to_df()

    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = []
    for i, minutes in enumerate((50, 20, 5)):
        at = (now - timedelta(minutes=minutes)).isoformat()
        rows.append({"repo": repo, "sha": hashlib.sha1(f"{repo}{now}{i}".encode()).hexdigest(),
                     "author_id": f"a_{hashlib.sha1(str(i % 2).encode()).hexdigest()[:12]}", "authored_at": at,
                     "committed_at": at, "is_merge": False, "files_changed": 1, "lines_added": 3, "lines_deleted": 1,
                     "languages": ["Python"]})
    with open_log(p) as log_, Processor(log_=log_) as proc:
        before = live()
        t0 = time.perf_counter()
        intake.publish(intake.events_of_table(intake.table_of_rows(rows, "demo"), "demo"), log_)
        proc.drain()
        after = live()
        seconds = time.perf_counter() - t0
    echo(f"\nFresh features ({service.name}, windows ending now) of {repo}, before and after pushing 3 commits "
         f"made 50, 20 and 5 minutes ago (intake -> {log_.where} -> stream processor -> online store):")
    table = pd.DataFrame([{**before.iloc[0].to_dict(), "when": "before"}, {**after.iloc[0].to_dict(), "when": "after"}])
    echo(table.to_string(index=False))
    echo(f"push -> visible to get_online_features: {seconds:.2f} s")
    return int(after["commits_last_1h"].iloc[0]) == int(before["commits_last_1h"].iloc[0]) + 3
