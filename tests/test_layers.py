"""The layering of ADR 0014: import contracts hold, feature_repo/ imports only definitions, the README map is true."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from skewless.core.config import FEATURE_REPO, PROJECT_ROOT

#: What feature_repo/ may import from skewless (declarations and the Feast plugins they name; the profile).
FEATURE_REPO_MAY_IMPORT = ("skewless.features.definitions", "skewless.feast_ext", "skewless.core.config")


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_feature_repo_imports_only_definitions():
    bad = []
    for path in sorted(FEATURE_REPO.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.split(".")[0] == "skewless" and not name.startswith(FEATURE_REPO_MAY_IMPORT):
                    bad.append(f"{path.name}: {name}")
    assert not bad, f"feature_repo/ imports more than the definitions: {bad}"


def test_readme_module_map_is_the_layers_contract():
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("<!-- module-map:begin -->", 1)[1].split("<!-- module-map:end -->", 1)[0]
    rows = [r for r in table.strip().splitlines()[2:]]
    documented = [re.findall(r"`([\w.]+)`", r.split("|")[2]) for r in rows]
    contract = next(c for c in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
                    ["contracts"] if c["type"] == "layers")
    layers = [[m.strip() for m in re.split(r"[|:]", layer)] for layer in contract["layers"]]
    assert documented == layers, "README 'Layout' module map differs from the layers contract in pyproject.toml"
    packages = {p.name for p in (PROJECT_ROOT / "src" / "skewless").iterdir()
                if (p / "__init__.py").exists() or (p.suffix == ".py" and p.name != "__init__.py")}
    in_layers = {m.split(".")[1].removesuffix(".py") for layer in layers for m in layer if m.startswith("skewless.")}
    assert {p.removesuffix(".py") for p in packages} == in_layers, "a module of src/skewless/ is in no layer"
