"""What a user sees in the terminal: `skewless demo` through a pipe prints its own lines only (no ANSI codes, no
Feast/MLflow log lines, no warnings), keeps MLflow's artifacts in SKEWLESS_HOME, and `skewless serve` says what it
does while it starts."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes import free_port, stop_group
from skewless.core import terminal

SKEWLESS = str(Path(sys.executable).parent / "skewless")

#: Lines libraries print or log when left alone (Feast's prints and logs, MLflow's, Python warnings).
NOISE = [
    re.compile(r"\bINFO\b"),
    re.compile(r"Warning\b"),
    re.compile(r"warnings\.warn"),
    re.compile(r"^(Materializing|Applying changes|Deploying infrastructure|No project found)", re.M),
    re.compile(r"Successfully registered model|Created version"),
]


def test_plain_text_drops_ansi_codes():
    out = io.StringIO()
    stream = terminal.PlainText(out)
    stream.write("\x1b[1m\x1b[32mrepo_activity\x1b[0m: from \x1b[1m\x1b[32m2026-08-15\x1b[0m\n")
    assert out.getvalue() == "repo_activity: from 2026-08-15\n"
    assert not stream.isatty()


def test_library_output_is_swallowed_unless_verbose_and_replayed_on_failure(monkeypatch, capsys):
    monkeypatch.setattr(terminal, "_verbose", False)
    with terminal.library_output():
        print("Materializing 2 feature views")
    assert capsys.readouterr().out == ""
    with pytest.raises(RuntimeError), terminal.library_output():
        print("\x1b[32mstep one\x1b[0m")
        raise RuntimeError("boom")
    assert capsys.readouterr().err == "step one\n"  # the failure keeps its context
    monkeypatch.setattr(terminal, "_verbose", True)
    with terminal.library_output():
        print("Materializing 2 feature views")
    assert capsys.readouterr().out == "Materializing 2 feature views\n"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_")) and k not in ("PYTHONWARNINGS",)}
    env.update(SKEWLESS_ENV="local", SKEWLESS_HOME=str(home))
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """`skewless demo` on a fresh home, run from an empty directory with stdout and stderr piped (no TTY)."""
    home, cwd = tmp_path_factory.mktemp("demo") / "home", tmp_path_factory.mktemp("cwd")
    proc = subprocess.run([SKEWLESS, "demo"], env=_env(home), cwd=cwd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout}\n{proc.stderr}"
    return home, cwd, proc


def test_demo_output_is_clean_when_not_a_terminal(demo):
    _, _, proc = demo
    for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        assert "\x1b" not in text, f"ANSI escape code on {name}:\n{text}"
        for pattern in NOISE:
            assert not pattern.search(text), f"library noise {pattern.pattern!r} on {name}:\n{text}"
    assert proc.stderr == ""
    # The rows the demo is for are all still there.
    out = proc.stdout
    assert "Historical (point-in-time) rows from get_historical_features:" in out
    assert "Online rows from get_online_features (as of 2026-08-22):" in out
    assert "PARITY OK (author_activity as of 2026-08-22, repo_activity as of 2026-08-22)" in out
    assert re.search(r"feast apply: registered entities, sources, views and services", out)
    assert re.search(r"repo_activity: materialized event times 1970-01-01 through 2026-08-22", out)
    answer = json.loads(re.search(r"response: HTTP 200 (\{.*\})", out)[1])
    assert [round(p, 3) for p in answer["predictions"][:2]] == [18.528, 15.923]
    assert answer["predictions"][2] == {"error": "no online features for repo 'no-such/repository'"}


def test_mlflow_artifacts_stay_in_the_home(demo):
    home, cwd, _ = demo
    assert list(cwd.iterdir()) == [], f"the demo wrote into its working directory: {list(cwd.iterdir())}"
    with sqlite3.connect(home / "mlflow.db") as db:
        locations = dict(db.execute("select name, artifact_location from experiments"))
    assert set(locations) == {"Default", "next_week_commits"}
    for name, where in locations.items():
        assert where.startswith((home / "mlartifacts").as_uri()), (name, where)
    assert any((home / "mlartifacts").rglob("MLmodel"))


def test_serve_prints_its_progress_until_ready(demo, tmp_path):
    home, _, _ = demo
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([SKEWLESS, "serve", "--port", str(port)], env=_env(home), cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ready = f"ready on http://127.0.0.1:{port} (model next_week_commits version 1)"
    try:
        deadline = time.monotonic() + 300  # a bound against hanging, not a performance check
        while ready not in log.read_text():
            assert proc.poll() is None, f"skewless serve exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"skewless serve never said it was ready:\n{log.read_text()}"
            time.sleep(0.5)
    finally:
        stop_group(proc)
    lines = log.read_text().splitlines()
    steps = ["loading KServe, MLflow and Feast ...", "reading model 'next_week_commits' from the MLflow registry ...",
             "opening the Feast registry: feature service 'next_week_commits_v1' of version 1 ...",
             "loading model 'next_week_commits' version 1 ...", "checking the online store ...",
             "warming up the model ...", f"starting the HTTP server on 127.0.0.1:{port} ...", ready]
    assert [line for line in lines if line in steps] == steps, "\n".join(lines)
    assert "\x1b" not in log.read_text()
    assert not any(p.search(log.read_text()) for p in NOISE), log.read_text()


def test_only_the_projects_own_warnings_are_shown_without_verbose(monkeypatch, capsys):
    import warnings

    from skewless.core.config import PROJECT_ROOT

    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: shown.append(a[2]))
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    monkeypatch.setattr(sys, "warnoptions", [])
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")
    terminal.configure(verbose=False)
    warnings.simplefilter("once", DeprecationWarning)  # what a library does at import, ahead of ours
    library = str(Path(sys.executable).parent.parent / "lib" / "site-packages" / "somelib" / "x.py")
    own = str(PROJECT_ROOT / "src" / "skewless" / "x.py")
    for filename in (library, own):
        warnings.showwarning(DeprecationWarning("d"), DeprecationWarning, filename, 1)
    assert shown == [own]
