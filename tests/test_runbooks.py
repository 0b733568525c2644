"""The on-call runbooks: one per alert, in the agreed form, and every shell command in them runs as written.

Runbooks (``runbooks/*.md``) hold commands in fenced blocks marked ``sh`` (run on both profiles), ``sh local`` or
``sh production`` (that profile only), or ``text`` (not run: deployment-specific values, or changes unsafe on a
shared server; the runbook says why). Each ``sh`` block runs with ``bash -eo pipefail`` from the project root, in
the shell ``runbooks/README.md`` ("Before you start") sets up — the project's environment on PATH, the profile's
variables and ``skewless env`` exports, ``REDIS_DB``, ``EXPORTER``, ``VIEW``, ``DAY`` — and must exit 0.

The deployment is built once per module and profile, the way the daily DAG (``dags/commits_features_daily.py``)
leaves it: the shipped sample ingested, built and materialized through its last day, the materialization and a
parity check recorded, the metrics published to the textfile; plus a running exporter (``skewless monitor serve``).
The production deployment has its own Redis DB and PostgreSQL database, removed afterwards. There the Redis runbook
runs on an emptied online store: its diagnosis must work on the broken store and show the loss, and its mitigation
must bring parity back. A block that appears in several runbooks runs once per profile.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from skewless.core import config

RUNBOOKS = config.PROJECT_ROOT / "runbooks"
ALERTS = config.PROJECT_ROOT / "monitoring" / "alerts.yaml"
SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation")
PROFILES = ("local", "production")
REDIS_RUNBOOK = "redis-online-store-stale.md"
REDIS_DB = 14
#: Tools a block may need besides the project's environment (servers' clients); a block whose tool is missing is
#: reported as not run (the test is skipped after every other block passed).
TOOLS = ("curl", "redis-cli", "psql")
BLOCK_TIMEOUT_S = 900  # a hang guard, not an assertion

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)

DEPLOY = r"""
import sys
from datetime import date

from monitoring import exporter
from skewless import features
from skewless.ops import feast_ops, freshness, parity
from skewless.lake import ingest

day = date.fromisoformat(sys.argv[2])
print(ingest.ingest([sys.argv[1]]))
for r in features.build(day):
    print(r)
feast_ops.apply()
for r in feast_ops.materialize(day):
    print(r)
freshness.record_materialization()
results = parity.check(sample=None)
freshness.record_parity(results)
print(parity.report(results))
print(exporter.write_textfile()[0])
assert all(r.ok for r in results), "the fresh deployment fails parity"
"""


@dataclass(frozen=True)
class Block:
    runbook: str
    line: int
    info: str
    text: str

    @property
    def runs(self) -> bool:
        return self.info.split()[:1] == ["sh"]

    @property
    def profiles(self) -> tuple[str, ...]:
        tags = self.info.split()[1:]
        return tuple(tags) if tags else PROFILES

    def __str__(self) -> str:
        return f"runbooks/{self.runbook}:{self.line} ({self.info})"


def fences(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, dedented by its fence's indentation."""
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        indent = m["indent"]
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in m["body"].splitlines(keepends=True))
        out.append(Block(path.name, text.count("\n", 0, m.start()) + 1, m["info"].strip(), body))
    return out


def runbook_files() -> list[Path]:
    return sorted(RUNBOOKS.glob("*.md"))


def alert_runbooks() -> dict[str, set[str]]:
    """Alert name -> the runbook_url values of its rules in monitoring/alerts.yaml."""
    out: dict[str, set[str]] = {}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                out.setdefault(rule["alert"], set()).add(rule.get("annotations", {}).get("runbook_url"))
    return out


# --- form ---------------------------------------------------------------------------------------------------------

def test_every_fence_is_marked_sh_or_text():
    for path in runbook_files():
        raw = path.read_text().count("```")
        blocks = fences(path)
        assert raw == 2 * len(blocks), f"{path.name}: unbalanced or unparsed ``` fences"
        for b in blocks:
            assert b.runs or b.info == "text", f"{b}: mark a fence `sh`, `sh local`, `sh production` or `text`"
            if b.runs:
                assert set(b.profiles) <= set(PROFILES) and b.profiles, f"{b}: unknown profile tag"
                assert b.text.strip(), f"{b}: empty block"


def test_every_alert_has_a_runbook_named_after_it():
    alerts = alert_runbooks()
    assert alerts, "monitoring/alerts.yaml defines no alert"
    documented = {p.name for p in runbook_files()} - {"README.md"}
    linked = set()
    for alert, urls in alerts.items():
        assert len(urls) == 1, f"{alert}: its rules point to different runbooks {urls}"
        url = next(iter(urls))
        assert url and url.startswith("runbooks/") and url.endswith(".md"), f"{alert}: runbook_url {url!r}"
        path = config.PROJECT_ROOT / url
        assert path.is_file(), f"{alert}: {url} does not exist"
        assert path.read_text().splitlines()[0] == f"# {alert}", f"{url} must be titled '# {alert}'"
        linked.add(path.name)
    assert documented == linked, f"runbooks without an alert: {documented - linked}"


@pytest.mark.parametrize("name", sorted(p.name for p in RUNBOOKS.glob("*.md") if p.name != "README.md"))
def test_runbook_has_the_four_sections_and_tested_diagnosis(name):
    text = (RUNBOOKS / name).read_text()
    heads = re.findall(r"^## (.+)$", text, re.M)
    assert [h for h in heads if h in SECTIONS] == list(SECTIONS), f"{name}: sections {heads}"
    diagnosis = text.split("## Diagnosis", 1)[1].split("## Mitigation", 1)[0]
    assert re.search(r"^[ \t]*```sh", diagnosis, re.M), f"{name}: Diagnosis has no tested (```sh) command"
    readme = (RUNBOOKS / "README.md").read_text()
    assert f"]({name})" in readme, f"runbooks/README.md does not link {name}"


def test_metric_names_in_runbooks_are_exported():
    from monitoring.exporter import CONSISTENCY_METRIC_NAMES
    from monitoring.exporter import METRIC_NAMES as EXPORTED
    from skewless.stream.metrics import LAG, SERIES_NAMES

    # the exporter's (per view, and the fresh path's consistency checks) and the stream processor's /metrics
    METRIC_NAMES = EXPORTED + CONSISTENCY_METRIC_NAMES + SERIES_NAMES + (LAG,)
    for path in runbook_files():
        for name in set(re.findall(r"\bskewless_[a-z_]+\b", path.read_text())):
            if name.endswith("_"):  # a prefix such as skewless_freshness_*
                assert any(m.startswith(name) for m in METRIC_NAMES), f"{path.name}: {name}*"
            else:
                assert name in METRIC_NAMES, f"{path.name} names {name}, which no skewless /metrics exports"


# --- the commands, against deployments -----------------------------------------------------------------------------
# Both profiles are exercised at once, in two threads: every block is a separate, mostly single-threaded process
# (importing Feast dominates), so the two deployments share the machine's cores instead of queueing.

@dataclass
class Outcome:
    block: Block
    proc: subprocess.CompletedProcess | None = None  # None: not run
    lacking: tuple[str, ...] = ()  # tools it needs that are not installed


@dataclass
class Exercise:
    """What happened to one profile's deployment: every runbook's outcomes, in order."""

    profile: str
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    redis_keys: tuple[int, int] | None = None  # production: Redis keys before the flush and after the runbook
    error: BaseException | None = None


def _sample_last_day() -> str:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    col = pq.read_table(config.SAMPLE_COMMITS, columns=["committed_at"])["committed_at"]
    return pc.max(col).as_py().date().isoformat()


def _shell_env(settings: dict[str, str]) -> dict[str, str]:
    """The on-call shell of runbooks/README.md: project venv first on PATH, profile settings, `skewless env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_"))}
    env.update(settings)
    env.update(config.profile(env).feast_env())
    venv_bin = Path(sys.executable).parent
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv_bin.parent)
    return env


def _start_exporter(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    with log.open("w") as err:
        proc = subprocess.Popen(["skewless", "monitor", "serve", "--port", "0"], env=env, cwd=config.PROJECT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 600  # a hang guard
    while time.monotonic() < deadline:
        m = re.search(r"serving http://([\d.]+:\d+)/metrics", log.read_text())
        if m:
            return proc, m[1]
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"`skewless monitor serve` did not start:\n{log.read_text()[-3000:]}")


def _blocks_for(name: str, profile: str) -> list[Block]:
    return [b for b in fences(RUNBOOKS / name) if b.runs and profile in b.profiles]


def _run_blocks(env: dict[str, str], blocks: list[Block], ran: set[str] | None) -> list[Outcome]:
    """Run blocks in order; with ``ran``, a block whose text already ran for this deployment is not run again."""
    out = []
    for b in blocks:
        if ran is not None and b.text in ran:
            continue
        lacking = tuple(t for t in TOOLS if re.search(rf"(^|[\s|(]){re.escape(t)}\s", b.text, re.M)
                        and not shutil.which(t, path=env["PATH"]))
        if lacking:
            out.append(Outcome(b, lacking=lacking))
            continue
        proc = subprocess.run(["bash", "-c", "set -eo pipefail\n" + b.text], env=env, cwd=config.PROJECT_ROOT,
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        if ran is not None:
            ran.add(b.text)
        out.append(Outcome(b, proc))
    return out


def _drop_database(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _exercise(profile: str, home: Path) -> Exercise:
    """Deploy the profile in ``home``, run every runbook against it, clean up; never raises (see ``error``)."""
    ex = Exercise(profile)
    day = _sample_last_day()
    settings = {"SKEWLESS_ENV": profile, "SKEWLESS_HOME": str(home), "SKEWLESS_SOURCES": str(config.SAMPLE_COMMITS),
                "VIEW": "repo_activity", "DAY": day}
    db, r = None, None
    if profile == "production":
        import redis

        db = f"skewless_runbooks_{uuid.uuid4().hex[:8]}"
        settings.update(SKEWLESS_PG_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                        SKEWLESS_REDIS=f"127.0.0.1:6379,db={REDIS_DB}", REDIS_DB=str(REDIS_DB))
        r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        r.flushdb()
    else:  # a local deployment reaches no server: make any wrong reach fail
        settings.update(SKEWLESS_PG_URL="postgresql+psycopg://nobody@127.0.0.1:1/none", SKEWLESS_REDIS="127.0.0.1:1")
    env = _shell_env(settings)
    exporter = None
    try:
        proc = subprocess.run([sys.executable, "-c", DEPLOY, str(config.SAMPLE_COMMITS), day], env=env,
                              cwd=config.PROJECT_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"deployment failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        exporter, env["EXPORTER"] = _start_exporter(env, home.parent / "exporter.log")
        ran: set[str] = set()
        names = sorted(p.name for p in RUNBOOKS.glob("*.md"))
        if r is not None:  # the Redis runbook first, on an emptied online store (a restart without persistence)
            before = r.dbsize()
            r.flushdb()
            ex.outcomes[REDIS_RUNBOOK] = _run_blocks(env, _blocks_for(REDIS_RUNBOOK, profile), None)
            ran.update(o.block.text for o in ex.outcomes[REDIS_RUNBOOK])
            ex.redis_keys = (before, r.dbsize())
            names.remove(REDIS_RUNBOOK)
        for name in names:
            ex.outcomes[name] = _run_blocks(env, _blocks_for(name, profile), ran)
    except BaseException as e:  # noqa: BLE001 - reported by every test of the profile
        ex.error = e
    finally:
        if exporter is not None:
            exporter.terminate()
            try:
                exporter.wait(timeout=60)
            except subprocess.TimeoutExpired:
                exporter.kill()
                exporter.wait()
        if r is not None:
            r.flushdb()
            r.close()
        if db is not None:
            _drop_database(db)
    return ex


@pytest.fixture(scope="module")
def exercises(request, tmp_path_factory) -> dict[str, Exercise]:
    """Every profile a selected test of this module needs, exercised concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    wanted = sorted({_profile_of(item) for item in request.session.items
                     if getattr(item, "module", None) is sys.modules[__name__] and _profile_of(item)})
    with ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
        futures = {p: pool.submit(_exercise, p, tmp_path_factory.mktemp(f"runbooks-{p}") / "home") for p in wanted}
        return {p: f.result() for p, f in futures.items()}


def _profile_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("profile") if callspec is not None else None


def _outcomes(exercises: dict[str, Exercise], profile: str, name: str) -> list[Outcome]:
    ex = exercises[profile]
    if ex.error is not None:
        raise ex.error
    return ex.outcomes[name]


def _assert_ran(outcomes: list[Outcome]) -> None:
    failed = [f"{o.block} exited {o.proc.returncode}:\n{o.block.text}\n--- stdout\n{o.proc.stdout[-2000:]}\n"
              f"--- stderr\n{o.proc.stderr[-2000:]}" for o in outcomes if o.proc is not None and o.proc.returncode]
    assert not failed, "\n\n".join(failed)
    lacking = sorted({f"{o.block} needs {t}" for o in outcomes for t in o.lacking})
    if lacking:
        pytest.skip("every other block passed; not run for lack of a tool: " + "; ".join(lacking))


PARAMS = [pytest.param("local", name, id=f"local-{name}") for name in sorted(p.name for p in RUNBOOKS.glob("*.md"))]
PARAMS += [pytest.param("production", name, id=f"production-{name}", marks=pytest.mark.production)
           for name in sorted(p.name for p in RUNBOOKS.glob("*.md"))]


@pytest.mark.parametrize(("profile", "name"), PARAMS)
def test_runbook_commands(exercises, profile, name):
    _assert_ran(_outcomes(exercises, profile, name))


@pytest.mark.production
@pytest.mark.parametrize("profile", ["production"])
def test_redis_runbook_finds_and_repairs_an_emptied_online_store(exercises, profile):
    outcomes = _outcomes(exercises, profile, REDIS_RUNBOOK)
    _assert_ran(outcomes)
    by_text = {o.block.text.strip(): o.proc.stdout for o in outcomes if o.proc is not None}
    status = by_text["skewless status"]
    assert "entities have no value online" in status, status  # the diagnosis shows the loss...
    counts = next(out for text, out in by_text.items() if "--scan" in text)
    assert re.findall(r"keys:\s+(\d+)", counts) == ["0", "0"], counts
    before, after = exercises[profile].redis_keys
    assert before > 0 and after == before  # ...and the mitigation brings every key back (its parity block passed)
    assert "recorded materialization at" in by_text["skewless materialize --record"]
    assert "PARITY OK" in by_text["skewless parity --sample 0 --record"]
