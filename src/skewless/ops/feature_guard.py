"""CI guard for feature changes: ``feast plan`` against the previous revision, and the check that a feature service
in use never loses, renames or retypes a feature.

``run(base="HEAD~1")`` does two things for a change (the working tree against a git revision):

1. **Plan.** The base revision's ``feature_repo/`` (with the ``src/`` it imports: the feature schemas are derived
   from ``skewless.features``) is taken from git into a temporary directory and applied to a scratch registry; the
   current definitions are then planned against that registry. The output is the plan's short form
   (``skewless.feast_ext.plan``: features and services added, removed or changed, or "no changes").
   No lakehouse is needed: sources are not validated (CI has no Iceberg tables).
2. **Check.** For every feature service *in use*, the features of the base and head definitions are compared by
   reference (``view:feature``) and Feast type. A feature removed, renamed (= removed + added) or retyped, or the
   service itself removed, is a breaking change: the guard fails and names the service and the feature. Added
   features are reported and allowed (models select their features by name). The documented path for a breaking
   change is a new service (``next_week_commits_v2``) next to the untouched old one (README, "Changing a feature").

A service is in use when

* the base revision declares it: its tags name the ``model`` trained and served with it (a declaration reviewed
  in the pull request, and the only source of truth a fresh CI clone has), or
* a model version in the active profile's MLflow registry carries a ``feature_service`` tag naming it (when that
  registry exists: a developer's or production's). A registered service that the base does not declare is
  reported, so that the declaration can be added.

3. **Registered versions.** Every model version in that registry that recorded the exact feature list it was
   trained on (tag ``features``, ADR 0020) is checked against the *working tree*, whatever the base: its service
   must still be defined and serve each of those features with the recorded type. This is what the model versions
   actually use, so it holds for uncommitted changes, for a version trained on definitions that were never
   committed, and when there is no base revision at all.

Each revision's definitions are read in a child interpreter whose ``sys.path`` holds that revision's ``src/``
(two revisions' ``skewless`` packages cannot share one process). That child runs this file as a script, so the
module imports only the standard library at its top.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping
from skewless.core.errors import SkewlessError

if TYPE_CHECKING:
    from skewless.core.config import Profile

#: A feature-service tag naming the model trained and served with the service: declares the service in use.
MODEL_TAG = "model"
#: The directories of a project tree that a revision's Feast definitions need.
TREE_DIRS = ("feature_repo", "src")
DEFAULT_BASE = "HEAD~1"


class GuardError(SkewlessError, RuntimeError):
    """The guard cannot compare the revisions (no git checkout, unknown revision, definitions that do not load)."""


@dataclass(frozen=True)
class ServiceDef:
    """A feature service as declared in one revision: its tags and its features as ``view:feature`` → Feast type."""

    name: str
    tags: Mapping[str, str]
    features: Mapping[str, str]


@dataclass(frozen=True)
class Violation:
    """A breaking change to a service in use."""

    service: str
    feature: str | None
    problem: str
    in_use_because: tuple[str, ...]
    #: set when the change breaks what a registered model version was trained on ("registered model M version N")
    version: str | None = None

    def __str__(self) -> str:
        if self.version:
            what = f"feature {self.feature} of service {self.service}" if self.feature else f"service {self.service}"
            return f"{self.version}: {what} {self.problem}"
        what = f"{self.service}: feature {self.feature} {self.problem}" if self.feature else \
            f"{self.service}: {self.problem}"
        return f"{what} (in use: {'; '.join(self.in_use_because)})"


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version of the MLflow registry: the service it is served with and the exact features it was trained
    on (``view:feature`` -> Feast type; None when it recorded no list: trained before ADR 0020)."""

    model: str
    version: str
    service: str | None
    features: Mapping[str, str] | None

    @property
    def label(self) -> str:
        return f"registered model {self.model} version {self.version}"


@dataclass
class CheckResult:
    """Outcome of comparing two revisions' services."""

    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    in_use: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        """Human-readable outcome, with the documented way out on failure."""
        lines = ["services in use: " + (", ".join(f"{s} ({'; '.join(r)})" for s, r in sorted(self.in_use.items()))
                                          or "none")]
        lines += [f"note: {n}" for n in self.notes]
        if self.ok:
            lines.append("FEATURE GUARD OK: no service in use loses, renames or retypes a feature, and every registered "
                         "version that recorded its features finds them")
        else:
            lines += [f"BREAKING: {v}" for v in self.violations]
            lines.append("FEATURE GUARD FAILED: keep the features of a service in use unchanged and put the change in "
                         "a new service (e.g. next_week_commits_v2), see README \"Changing a feature used by a "
                         "registered model\"; a version trained on definitions that are gone needs them back (or "
                         "the version retired)")
        return "\n".join(lines)


# --- reading one revision's definitions (in a child interpreter) -------------------------------------------------

def _child_env(scratch_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SKEWLESS_", "FEAST_")) and k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update({"SKEWLESS_ENV": "local", "SKEWLESS_HOME": str(scratch_home), "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _in_child(mode: str, trees: list[Path], scratch_home: Path) -> tuple[list[dict], str]:
    """Run this file as a script on ``trees``, each under its own package: (definitions per tree, Feast's output)."""
    for tree in trees:
        if not (tree / "feature_repo").is_dir():
            raise GuardError(f"{tree} has no feature_repo/ directory")
    with tempfile.TemporaryDirectory(prefix="skewless-guard-") as tmp:
        out = Path(tmp) / "definitions.json"
        cmd = [sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__guard_child__')",
               __file__, mode, str(out), *map(str, trees)]
        proc = subprocess.run(cmd, env=_child_env(scratch_home), capture_output=True, text=True, cwd=tmp,
                              timeout=900)
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise GuardError(f"the Feast definitions in {', '.join(map(str, trees))} did not load ({mode}):\n{tail}")
        return json.loads(out.read_text()), proc.stdout


def _child_main(mode: str, out: str, *trees: str) -> None:
    """The child: parse each tree's ``feature_repo/`` under that tree's ``src/``. With ``plan`` (two trees), the first
    is applied to the scratch registry of ``SKEWLESS_HOME`` (silently) and the second planned against it."""
    import contextlib
    import importlib
    import io

    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total, parse_repo

    results = []
    for i, tree in enumerate(trees):
        repo, src = Path(tree) / "feature_repo", Path(tree) / "src"
        # Each tree imports its OWN skewless (a revision may lay the package out differently): forget any loaded one.
        for name in [m for m in sys.modules if m == "skewless" or m.startswith("skewless.")]:
            del sys.modules[name]
        sys.path[:0] = [str(repo), str(src)]
        importlib.invalidate_caches()
        os.chdir(repo)
        contents = parse_repo(repo)
        results.append({fs.name: {"tags": dict(fs.tags),
                                  "features": {f"{p.name_to_use()}:{f.name}": str(f.dtype)
                                               for p in fs.feature_view_projections for f in p.features}}
                        for fs in contents.feature_services})
        if mode == "plan":
            config = load_repo_config(repo, repo / "feature_store.yaml")
            if i == 0:
                with contextlib.redirect_stdout(io.StringIO()):
                    apply_total(config, repo, skip_source_validation=True, skip_feature_view_validation=True)
            else:
                from skewless.feast_ext.plan import plan_text  # the short form, from this (head) tree's package

                print(plan_text(config, repo, skip_source_validation=True, skip_feature_view_validation=True))
        # The next tree imports its own `skewless` and declaration modules: forget this tree's.
        for name, mod in list(sys.modules.items()):
            if name != __name__ and str(getattr(mod, "__file__", "") or "").startswith(str(Path(tree)) + os.sep):
                del sys.modules[name]
        sys.path.remove(str(repo))
        sys.path.remove(str(src))
    Path(out).write_text(json.dumps(results, indent=1, sort_keys=True))


def _services(raw: dict) -> dict[str, ServiceDef]:
    return {name: ServiceDef(name, s["tags"], s["features"]) for name, s in raw.items()}


def definitions(*trees: Path) -> list[dict[str, ServiceDef]]:
    """The feature services declared by each project tree (a directory with ``feature_repo/`` and ``src/``), read in
    one child interpreter, each tree under its own package."""
    with tempfile.TemporaryDirectory(prefix="skewless-guard-home-") as home:
        raw, _ = _in_child("parse", [Path(t) for t in trees], Path(home))
    return [_services(r) for r in raw]


# --- which services are in use ----------------------------------------------------------------------------------

def declared_in_use(services: Mapping[str, ServiceDef]) -> dict[str, list[str]]:
    """Services whose tags name the ``model`` they are trained and served with."""
    return {s.name: [f"declared for model {s.tags[MODEL_TAG]!r} (tag {MODEL_TAG})"]
            for s in services.values() if s.tags.get(MODEL_TAG)}


def registered_versions(p: "Profile | None" = None) -> tuple[list[RegisteredVersion], list[str]]:
    """Every model version of the profile's MLflow registry with its service and recorded features, and notes.

    No registry (CI, a fresh home) is a note, not an error; so is a version whose ``features`` tag is unreadable.
    """
    from skewless.core import mlflow_home
    from skewless.ops import lineage

    raw, notes = lineage.registered_model_versions(p)
    out = []
    for mv in raw:
        tags = mv.tags or {}
        try:
            recorded = mlflow_home.recorded_features(tags)
        except ValueError as e:
            recorded = None
            notes.append(f"registered model {mv.name} version {mv.version}: {e}")
        out.append(RegisteredVersion(mv.name, str(mv.version), tags.get(lineage.FEATURE_SERVICE_TAG), recorded))
    return out, notes


def registered_in_use(p: "Profile | None" = None) -> tuple[dict[str, list[str]], list[str]]:
    """Services named by the ``feature_service`` tag of model versions in the profile's MLflow registry.

    Returns (service → reasons, notes). No registry (CI, a fresh home) is a note, not an error.
    """
    versions, notes = registered_versions(p)
    return _in_use_by(versions), notes


def _in_use_by(versions: list[RegisteredVersion]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for v in versions:
        if v.service:
            used.setdefault(v.service, []).append(v.label)
    return used


# --- the check ----------------------------------------------------------------------------------------------------

def compare(base: Mapping[str, ServiceDef], head: Mapping[str, ServiceDef],
            in_use: Mapping[str, list[str]]) -> CheckResult:
    """Compare the services in use between two revisions' definitions (pure: no I/O)."""
    result = CheckResult(in_use={k: list(v) for k, v in in_use.items()})
    for name in sorted(in_use):
        reasons = tuple(in_use[name])
        if name not in base:
            result.notes.append(f"{name} is in use ({'; '.join(reasons)}) but the base revision does not define it")
            continue
        if name not in head:
            result.violations.append(Violation(name, None, "was removed", reasons))
            continue
        old, new = base[name].features, head[name].features
        added = sorted(set(new) - set(old))
        before = len(result.violations)
        for ref in sorted(set(old) - set(new)):
            hint = f"; the service now has {', '.join(f'{a} ({new[a]})' for a in added)}: a rename?" if added else ""
            result.violations.append(Violation(name, ref, f"({old[ref]}) was removed or renamed{hint}", reasons))
        for ref in sorted(set(old) & set(new)):
            if old[ref] != new[ref]:
                result.violations.append(Violation(name, ref, f"was retyped from {old[ref]} to {new[ref]}", reasons))
        if added and len(result.violations) == before:
            result.notes.append(f"{name} gains {', '.join(added)} (additive: allowed, models select features by name)")
    for name in sorted(set(head) - set(base)):
        result.notes.append(f"new service {name}: {len(head[name].features)} features")
    return result


def check_versions(head: Mapping[str, ServiceDef], versions: list[RegisteredVersion]) -> tuple[list[Violation],
                                                                                             list[str]]:
    """What registered model versions were trained on, against ``head`` (the working tree's definitions; pure).

    A version that recorded its features (ADR 0020) breaks when its service is gone, or no longer serves one of
    them with the recorded type. Returns (violations, notes about versions that recorded no feature list).
    """
    violations: list[Violation] = []
    notes: list[str] = []
    for v in versions:
        if not v.service:
            continue
        if v.features is None:
            notes.append(f"{v.label} recorded no feature list (trained before ADR 0020): checked only through the "
                         f"base revision's {v.service}")
            continue
        if v.service not in head:
            violations.append(Violation(v.service, None, f"is not defined in the working tree; the version is served "
                                        f"with it and was trained on {', '.join(v.features)}", (v.label,), v.label))
            continue
        served = head[v.service].features
        for ref, typ in v.features.items():
            if ref not in served:
                violations.append(Violation(v.service, ref, f"({typ}) no longer exists in the working tree's "
                                            "definitions; the version was trained on it", (v.label,), v.label))
            elif served[ref] != typ:
                violations.append(Violation(v.service, ref, f"was retyped from {typ} (what the version was trained "
                                            f"on) to {served[ref]} in the working tree", (v.label,), v.label))
    return violations, notes


def check(base_tree: Path, head_tree: Path, p: "Profile | None" = None, use_registry: bool = True) -> CheckResult:
    """Compare two project trees: the services in use (declared by the base, or registered in MLflow) must keep
    every feature with its type in the head, and registered versions must find the features they were trained on."""
    base, head = definitions(base_tree, head_tree)
    return evaluate(base, head, p, use_registry)


def evaluate(base: Mapping[str, ServiceDef] | None, head: Mapping[str, ServiceDef], p: "Profile | None" = None,
             use_registry: bool = True) -> CheckResult:
    """:func:`compare` with the services in use: declared by ``base``, plus (``use_registry``) those named by model
    versions in the profile's MLflow registry, whose recorded features are also checked against ``head``
    (:func:`check_versions`). ``base`` None: no base revision, only the registered versions are checked."""
    in_use = declared_in_use(base or {})
    notes: list[str] = []
    versions: list[RegisteredVersion] = []
    if use_registry:
        versions, notes = registered_versions(p)
        for svc, reasons in _in_use_by(versions).items():
            in_use.setdefault(svc, []).extend(reasons)
            if base is not None and svc in base and not base[svc].tags.get(MODEL_TAG):
                notes.append(f"{svc} is used by a registered model but does not declare it: add the tag "
                             f"{MODEL_TAG}=<model> to it in feature_repo/feature_services.py")
    if base is not None:
        result = compare(base, head, in_use)
    else:
        result = CheckResult(in_use={k: list(v) for k, v in in_use.items()})
    broken, version_notes = check_versions(head, versions)
    result.violations += broken
    result.notes[:0] = notes + version_notes
    return result


# --- git: the base revision ----------------------------------------------------------------------------------------

def _git(root: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=not binary, timeout=120)


def base_tree(rev: str, dest: Path, root: Path | None = None) -> Path | None:
    """Extract ``feature_repo/`` and ``src/`` of git revision ``rev`` into ``dest``.

    Returns None when there is nothing to compare against (the history has a single commit, or the revision has no
    feature repository); raises GuardError when this is no git checkout, or the revision is unknown (a typo must not
    switch the guard off) or missing from a shallow clone.
    """
    from skewless.core.config import PROJECT_ROOT

    root = Path(root or PROJECT_ROOT)
    if shutil.which("git") is None:
        raise GuardError("git is not installed: the guard compares against a git revision")
    if _git(root, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise GuardError(f"{root} is not a git checkout: the guard compares against a git revision")
    if _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        commits = _git(root, "rev-list", "--count", "HEAD")
        if commits.returncode != 0 or commits.stdout.strip() in ("0", "1"):
            return None
        if _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true":
            raise GuardError(f"revision {rev} is not in this shallow clone: fetch the history (git fetch --unshallow)")
        raise GuardError(f"revision {rev} is not known to git in {root}")
    present = [d for d in TREE_DIRS if _git(root, "cat-file", "-e", f"{rev}:{d}").returncode == 0]
    if "feature_repo" not in present:
        return None
    archive = _git(root, "archive", "--format=tar", rev, "--", *present, binary=True)
    if archive.returncode != 0:
        raise GuardError(f"git archive {rev} failed: {archive.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


@dataclass
class GuardRun:
    """What ``run`` did: the plan text (None when skipped), the check, or why it was skipped."""

    base: str
    plan: str | None = None
    result: CheckResult | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is None or self.result.ok


def run(base: str = DEFAULT_BASE, root: Path | None = None, p: "Profile | None" = None, use_registry: bool = True,
        echo: Callable[[str], None] = print) -> GuardRun:
    """Plan the working tree's definitions against revision ``base`` and check the services in use; check what the
    registered model versions were trained on against the working tree (``use_registry``), even without a base.

    ``root`` is the project checkout (default: this project). Prints Feast's plan and the check through ``echo``.
    """
    from skewless.core.config import PROJECT_ROOT

    root = Path(root or PROJECT_ROOT)
    outcome = GuardRun(base=base)
    with tempfile.TemporaryDirectory(prefix="skewless-guard-") as tmp:
        tree = base_tree(base, Path(tmp) / "base", root)
        if tree is None:
            outcome.skipped = (f"no base to compare with: {base} does not exist in a history of one commit, or has "
                               "no feature_repo/; " + ("checking the registered model versions only" if use_registry
                                                       else "feature guard skipped"))
            echo(outcome.skipped)
            if use_registry:
                (head_raw,), _ = _in_child("parse", [root], Path(tmp) / "home")
                outcome.result = evaluate(None, _services(head_raw), p, use_registry)
                echo("== feature guard: registered model versions -> working tree ==")
                echo(outcome.result.report())
            return outcome
        home = Path(tmp) / "home"
        (base_raw, head_raw), plan_text = _in_child("plan", [tree, root], home)
        outcome.plan = plan_text
        echo(f"== feast plan: working tree against {base} ==")
        echo(plan_text.rstrip() or "(no changes)")
        outcome.result = evaluate(_services(base_raw), _services(head_raw), p, use_registry)
        echo(f"== feature guard: services in use, {base} -> working tree ==")
        echo(outcome.result.report())
    return outcome


if __name__ == "__guard_child__":
    _child_main(*sys.argv[2:])
