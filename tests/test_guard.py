"""Guard: training/ and serving/ never compute features; the only way to feature values there is the Feast SDK.

The guard parses every ``.py`` file (and every notebook's code cells) under ``training/`` and ``serving/`` and
fails on:

- SQL text: ``SELECT ... FROM`` / ``GROUP BY`` in any string (any case), or ``SELECT``/``GROUP BY``/``FROM x``
  written in upper case anywhere in the file (comments included);
- window aggregations: ``.rolling(``, ``.resample(``, ``.expanding(``, ``.ewm(``; ``.groupby(`` in a file that
  names a commit column;
- direct reads: ``.load_table(``, ``.scan(``, ``.read_parquet(``, ``.read_table(``, ``.read_sql(``, ``.sql(``,
  and any string naming a feature table (``features.<table>``);
- imports of ``duckdb``, ``pyiceberg``, ``pyarrow.parquet``, ``pyarrow.dataset``, ``pyspark``,
  ``skewless.features``, ``skewless.lake``, ``skewless.lake.ingest`` (also as ``from skewless import features``
  or a module-name string), except ``skewless.lake.snapshots`` (the snapshot pins; it reads no data).

The allow-list is explicit and tiny: the labels module reads ``abukix.commits`` (outcomes, not features).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from skewless.core.config import PROJECT_ROOT

GUARDED_DIRS = ("training", "serving")

#: (file relative to the project, rule) -> why it is allowed. Nothing else is.
ALLOW: dict[tuple[str, str], str] = {
    ("training/labels.py", "import skewless.lake"): "labels are counted from abukix.commits (outcomes, not features)",
    ("training/labels.py", "read .scan("): "the labels' scan of abukix.commits (repo, committed_at)",
}

BANNED_MODULES = ("duckdb", "pyiceberg", "pyarrow.parquet", "pyarrow.dataset", "pyspark", "skewless.features",
                  "skewless.lake", "skewless.lake.ingest")
#: Inside a banned package, modules that read no data: the snapshot pins (which Iceberg snapshot Feast reads).
PERMITTED_MODULES = ("skewless.lake.snapshots",)
WINDOW_CALLS = ("rolling", "resample", "expanding", "ewm")
READ_CALLS = ("load_table", "scan", "read_parquet", "read_table", "read_sql", "sql")
COMMIT_COLUMNS = ("committed_at", "authored_at", "lines_added", "lines_deleted", "files_changed", "is_merge",
                  "languages", "sha")

SQL_IN_STRING = (re.compile(r"\bselect\b[\s\S]*\bfrom\b", re.I), re.compile(r"\bgroup\s+by\b", re.I))
SQL_UPPER = (re.compile(r"\bSELECT\b"), re.compile(r"\bGROUP\s+BY\b"), re.compile(r"\bFROM\s+[\w\"]"))
FEATURE_TABLE = re.compile(r"(?<![\w.])features\.[a-z_]+")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}"


def _banned(module: str) -> str | None:
    if any(module == m or module.startswith(m + ".") for m in PERMITTED_MODULES):
        return None
    for b in BANNED_MODULES:
        if module == b or module.startswith(b + "."):
            return b
    return None


def _source_of(path: Path) -> str:
    """Python source of a .py file, or the code cells of a notebook joined (magics dropped)."""
    text = path.read_text()
    if path.suffix != ".ipynb":
        return text
    cells = json.loads(text)["cells"]
    code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c.get("cell_type") == "code"]
    return "\n".join(line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))


def check_source(rel: str, source: str) -> list[Violation]:
    """Every violation in one file's source (before the allow-list)."""
    out: list[Violation] = []
    tree = ast.parse(source, filename=rel)
    mentions_commit_column = any(re.search(rf"\b{c}\b", source) for c in COMMIT_COLUMNS)
    for lineno, line in enumerate(source.splitlines(), 1):
        for rx in SQL_UPPER:
            if rx.search(line):
                out.append(Violation(rel, lineno, f"SQL text {rx.pattern!r}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if b := _banned(alias.name):
                    out.append(Violation(rel, node.lineno, f"import {b}"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            permitted = all(f"{node.module}.{a.name}" in PERMITTED_MODULES for a in node.names)
            if (b := _banned(node.module)) and not permitted:
                out.append(Violation(rel, node.lineno, f"import {b}"))
            for alias in node.names:
                if b := _banned(f"{node.module}.{alias.name}"):
                    out.append(Violation(rel, node.lineno, f"import {b}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            s = node.value
            if any(rx.search(s) for rx in SQL_IN_STRING):
                out.append(Violation(rel, node.lineno, "SQL text in a string"))
            if FEATURE_TABLE.search(s):
                out.append(Violation(rel, node.lineno, f"names a feature table ({FEATURE_TABLE.search(s)[0]})"))
            if b := _banned(s.strip()):
                out.append(Violation(rel, node.lineno, f"import {b}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in WINDOW_CALLS:
                out.append(Violation(rel, node.lineno, f"window aggregation .{attr}("))
            elif attr in ("groupby", "group_by") and mentions_commit_column:
                out.append(Violation(rel, node.lineno, f"window aggregation .{attr}( over commit columns"))
            elif attr in READ_CALLS:
                out.append(Violation(rel, node.lineno, f"read .{attr}("))
    return sorted(set(out), key=lambda v: (v.path, v.line, v.rule))


def guard(root: Path = PROJECT_ROOT, dirs: tuple[str, ...] = GUARDED_DIRS,
          allow: dict[tuple[str, str], str] = ALLOW) -> tuple[list[Violation], set[tuple[str, str]]]:
    """Violations under ``dirs`` of ``root`` not in the allow-list, and the allow-list entries that were used."""
    found: list[Violation] = []
    used: set[tuple[str, str]] = set()
    for d in dirs:
        for path in sorted((root / d).rglob("*")):
            if path.suffix not in (".py", ".ipynb") or ".ipynb_checkpoints" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            for v in check_source(rel, _source_of(path)):
                if (v.path, v.rule) in allow:
                    used.add((v.path, v.rule))
                else:
                    found.append(v)
    return found, used


def test_training_and_serving_do_not_compute_features():
    files = [p for d in GUARDED_DIRS for p in (PROJECT_ROOT / d).rglob("*.py")]
    assert any(p.name == "train.py" for p in files), "the guard found no training code to check"
    violations, used = guard()
    assert not violations, "feature computation outside skewless.features:\n" + "\n".join(map(str, violations))
    assert used == set(ALLOW), f"stale allow-list entries (remove them): {sorted(set(ALLOW) - used)}"


PLANTED = {
    "sql.py": 'Q = "select repo, count(*) from c group by repo"\n',
    "upper.py": "# SELECT repo FROM commits\nx = 1\n",
    "rolling.py": "def f(df):\n    return df.set_index('committed_at').lines_added.rolling('7D').sum()\n",
    "groupby.py": "def f(df):\n    return df.groupby('repo').committed_at.count()\n",
    "resample.py": "def f(s):\n    return s.resample('W').size()\n",
    "duck.py": "import duckdb\n",
    "iceberg.py": "from pyiceberg.catalog import load_catalog\n",
    "pq.py": "import pyarrow.parquet as pq\n",
    "features_import.py": "from skewless import features\n",
    "lake_import.py": "import skewless.lake as lake\n",
    "dynamic_import.py": "import importlib\nm = importlib.import_module('skewless.features')\n",
    "table_name.py": "T = 'features.repo_activity'\n",
    "load.py": "def f(cat):\n    return cat.load_table(name).scan().to_pandas()\n",
}


def test_guard_catches_planted_violations(tmp_path: Path):
    pkg = tmp_path / "training"
    pkg.mkdir()
    for name, src in PLANTED.items():
        (pkg / name).write_text(src)
    (pkg / "clean.py").write_text(
        '"""Reads features from Feast only."""\n'
        "def rows(store, entity_df):\n"
        "    service = store.get_feature_service('next_week_commits_v1')\n"
        "    return store.get_historical_features(entity_df=entity_df, features=service).to_df()\n"
    )
    nb = {"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "df.rolling(4).mean()\n"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (pkg / "nb.ipynb").write_text(json.dumps(nb))
    violations, _ = guard(tmp_path, ("training",), {})
    flagged = {Path(v.path).name for v in violations}
    assert flagged == set(PLANTED) | {"nb.ipynb"}, flagged
    rules = {v.rule for v in violations}
    for expected in ("SQL text in a string", "window aggregation .rolling(", "import duckdb", "import pyiceberg",
                     "import pyarrow.parquet", "import skewless.features", "import skewless.lake", "read .load_table(",
                     "read .scan(", "window aggregation .groupby( over commit columns", "window aggregation .resample("):
        assert expected in rules, (expected, rules)


def test_allow_list_is_narrow(tmp_path: Path):
    """An allowed rule in the labels module does not excuse another rule there, nor the same rule elsewhere."""
    pkg = tmp_path / "training"
    pkg.mkdir()
    (pkg / "labels.py").write_text("import skewless.lake\nimport duckdb\n")
    (pkg / "other.py").write_text("import skewless.lake\n")
    violations, used = guard(tmp_path, ("training",), ALLOW)
    assert {(v.path, v.rule) for v in violations} == {("training/labels.py", "import duckdb"),
                                                      ("training/other.py", "import skewless.lake")}
    assert used == {("training/labels.py", "import skewless.lake")}
