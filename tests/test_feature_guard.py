"""The CI guard for feature changes: breaking changes to a service in use fail, naming service and feature; a new
`_v2` service or an unrelated feature passes; `feast plan` of the change is printed; a first commit is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skewless.ops import feature_guard as fg
from skewless.core.config import PROJECT_ROOT

SERVICE = "next_week_commits_v1"


def _copy_tree(dest: Path) -> Path:
    """A project tree (feature_repo/ and src/) copied from this checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db")
    for d in fg.TREE_DIRS:
        shutil.copytree(PROJECT_ROOT / d, dest / d, ignore=ignore)
    return dest


def _plant(tree: Path, relpath: str, old: str, new: str) -> None:
    path = tree / relpath
    text = path.read_text()
    assert text.count(old) == 1, f"{relpath} no longer contains {old!r} exactly once: update the planted change"
    path.write_text(text.replace(old, new))


# Planted changes, each in its own copy of the project tree: (file, old text, new text), applied in order.
DEFS = "src/skewless/features/definitions.py"
#: The text of next_week_commits_v1's feature list in the definitions (ADR 0020: the list is written there, once).
V1_LIST = '("commits_last_7d", "commits_last_30d", "active_authors_last_30d"'
RENAME = [(DEFS, 'Feature("commits_last_7d"', 'Feature("commits_7d"'),
          (DEFS, V1_LIST, V1_LIST.replace('"commits_last_7d"', '"commits_7d"'))]
RETYPE = [
    ("feature_repo/repo_features.py", "    schema=fields_of(REPO_ACTIVITY),",
     "    schema=[Field(name=f.name, dtype=Float64 if f.name == 'commits_last_30d' else f.dtype)\n"
     "            for f in fields_of(REPO_ACTIVITY)],"),
    ("feature_repo/repo_features.py", "from feast import FeatureView",
     "from feast import FeatureView, Field\nfrom feast.types import Float64"),
]
V2 = [  # the documented path: v1 keeps its features, the new service leaves one out (and would carry new ones)
    ("feature_repo/feature_services.py", "\nauthor_profile_v1 = FeatureService(",
     "\nnext_week_commits_v2 = FeatureService(\n"
     "    name=\"next_week_commits_v2\",\n"
     "    features=[repo_activity_fv[[f.name for f in repo_activity_fv.features\n"
     "                                if f.name != \"days_since_last_commit\"]]],\n"
     "    owner=\"ml@skewless.dev\",\n"
     ")\n\nauthor_profile_v1 = FeatureService("),
]
UNRELATED = [  # author_profile_v1 declares no model: a feature added to (and one dropped from) its list
    (DEFS, '        Feature("commits_total", pa.int64(),',
     '        Feature("commits_last_year", pa.int64(), "commits in [D-365d, D)"),\n'
     '        Feature("commits_total", pa.int64(),'),
    (DEFS, '("commits_total", "langs_used", "weekly_streak")', '("commits_total", "langs_used", "commits_last_year")'),
]
NEW_FEATURE = [  # README "Adding a feature": a feature in the view's definitions, and a v2 service that lists it
    (DEFS, '        Feature("days_since_last_commit", pa.float64(),',
     '        Feature("commits_last_14d", pa.int64(), "commits with committed_at in [D-14d, D)"),\n'
     '        Feature("days_since_last_commit", pa.float64(),'),
    (DEFS, "\nSERVICES: tuple[ServiceFeatures, ...] = (",
     '\nNEXT_WEEK_COMMITS_V2 = ServiceFeatures("next_week_commits_v2", (\n'
     '    (REPO_ACTIVITY, ("commits_last_7d", "commits_last_14d", "commits_last_30d")),\n))\n'
     "SERVICES: tuple[ServiceFeatures, ...] = (NEXT_WEEK_COMMITS_V2, "),
    ("feature_repo/feature_services.py", "\nauthor_profile_v1 = FeatureService(",
     "\nfrom skewless.features.definitions import NEXT_WEEK_COMMITS_V2\n\n"
     "next_week_commits_v2 = FeatureService(\n"
     "    name=NEXT_WEEK_COMMITS_V2.name,\n"
     "    features=projections(NEXT_WEEK_COMMITS_V2, repo_activity_fv),\n"
     "    owner=\"ml@skewless.dev\",\n"
     ")\n\nauthor_profile_v1 = FeatureService("),
]
SCENARIOS = {"base": [], "rename": RENAME, "retype": RETYPE, "v2": V2, "unrelated": UNRELATED,
             "new_feature": NEW_FEATURE}


@pytest.fixture(scope="module")
def defs(tmp_path_factory) -> dict[str, dict[str, fg.ServiceDef]]:
    """Every scenario's definitions, read in one child interpreter (each tree under its own package)."""
    trees = []
    for name, changes in SCENARIOS.items():
        tree = _copy_tree(tmp_path_factory.mktemp(name))
        for change in changes:
            _plant(tree, *change)
        trees.append(tree)
    return dict(zip(SCENARIOS, fg.definitions(*trees)))


def _evaluate(defs, scenario: str) -> fg.CheckResult:
    return fg.evaluate(defs["base"], defs[scenario], use_registry=False)


def test_base_definitions_match_the_repository(defs):
    # The definitions read in the child interpreter are Feast's own: the service of the model and its 6 features.
    base = defs["base"]
    assert SERVICE in base and base[SERVICE].tags.get(fg.MODEL_TAG) == "next_week_commits"
    assert base[SERVICE].features["repo_activity:commits_last_7d"] == "Int64"
    assert base[SERVICE].features["repo_activity:days_since_last_commit"] == "Float64"
    assert len(base[SERVICE].features) == 6
    assert set(fg.declared_in_use(base)) == {SERVICE}


def test_renaming_a_feature_in_the_feature_code_fails(defs):
    # A rename happens where features are defined (skewless.features): the guard reads each revision's own src/.
    result = _evaluate(defs, "rename")
    assert not result.ok
    [v] = result.violations
    assert (v.service, v.feature) == (SERVICE, "repo_activity:commits_last_7d")
    assert "removed or renamed" in v.problem and "repo_activity:commits_7d" in v.problem
    assert SERVICE in result.report() and "repo_activity:commits_last_7d" in result.report()


def test_retyping_a_feature_fails(defs):
    [v] = _evaluate(defs, "retype").violations
    assert (v.service, v.feature) == (SERVICE, "repo_activity:commits_last_30d")
    assert v.problem == "was retyped from Int64 to Float64"


def test_a_v2_service_carrying_the_change_passes(defs):
    assert len(defs["v2"]["next_week_commits_v2"].features) == 5
    result = _evaluate(defs, "v2")
    assert result.ok, result.report()
    assert any("new service next_week_commits_v2" in n for n in result.notes)


def test_adding_a_feature_to_a_view_leaves_the_services_of_models_unchanged(defs):
    # ADR 0020: next_week_commits_v1 lists its features; the view's new feature joins only the service listing it.
    base, head = defs["base"], defs["new_feature"]
    assert head[SERVICE].features == base[SERVICE].features
    v2 = head["next_week_commits_v2"].features
    assert set(v2) == {"repo_activity:commits_last_7d", "repo_activity:commits_last_14d",
                       "repo_activity:commits_last_30d"} and v2["repo_activity:commits_last_14d"] == "Int64"
    result = _evaluate(defs, "new_feature")
    assert result.ok and not any(f"{SERVICE} gains" in n for n in result.notes), result.report()


def test_a_service_cannot_list_a_feature_its_view_lacks():
    from skewless.features.definitions import REPO_ACTIVITY, ServiceFeatures

    with pytest.raises(ValueError, match="lists commits_last_99d, which view repo_activity does not define"):
        ServiceFeatures("s_v1", ((REPO_ACTIVITY, ("commits_last_7d", "commits_last_99d")),))
    with pytest.raises(ValueError, match="lists commits_last_7d twice"):
        ServiceFeatures("s_v1", ((REPO_ACTIVITY, ("commits_last_7d", "commits_last_7d")),))


def test_changing_a_service_no_model_uses_passes(defs):
    assert "author_activity:commits_last_year" in defs["unrelated"]["author_profile_v1"].features
    assert "author_activity:weekly_streak" not in defs["unrelated"]["author_profile_v1"].features
    result = _evaluate(defs, "unrelated")
    assert result.ok, result.report()


# --- pure comparison -------------------------------------------------------------------------------------------------

def _svc(name: str, tags=None, **features: str) -> fg.ServiceDef:
    return fg.ServiceDef(name, tags or {}, {f"v:{k}": t for k, t in features.items()})


def test_compare_flags_removal_of_a_whole_service_and_allows_additions():
    base = {"s1": _svc("s1", a="Int64", b="Float64"), "s2": _svc("s2", a="Int64")}
    head = {"s1": _svc("s1", a="Int64", b="Float64", c="String")}
    result = fg.compare(base, head, {"s1": ["declared"], "s2": ["declared"]})
    assert [(v.service, v.feature, v.problem) for v in result.violations] == [("s2", None, "was removed")]
    assert any("s1 gains v:c" in n for n in result.notes)


def test_compare_ignores_services_not_in_use():
    base = {"s1": _svc("s1", a="Int64")}
    assert fg.compare(base, {"s1": _svc("s1", a="String")}, {}).ok
    assert not fg.compare(base, {"s1": _svc("s1", a="String")}, {"s1": ["declared"]}).ok


def test_a_service_registered_in_mlflow_is_in_use_even_undeclared(home):
    from mlflow.tracking import MlflowClient

    from skewless.core.config import profile

    uri = profile().mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("author_model")
    client.create_model_version("author_model", source=(home / "model").as_uri(),
                                tags={"feature_service": "author_profile_v1"})
    base = {"author_profile_v1": _svc("author_profile_v1", a="Int64", b="Int64")}
    head = {"author_profile_v1": _svc("author_profile_v1", a="Int64")}
    result = fg.evaluate(base, head)
    [v] = result.violations
    assert (v.service, v.feature) == ("author_profile_v1", "v:b")
    assert v.in_use_because == ("registered model author_model version 1",)
    assert any("does not declare it" in n for n in result.notes)
    assert fg.evaluate(base, head, use_registry=False).ok


# --- from git, as CI runs it ------------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def _git_repo(path: Path) -> Path:
    _copy_tree(path)
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "base")
    return path


def test_guard_from_a_clone_prints_the_plan_and_fails_on_a_removed_feature(tmp_path):
    # As CI runs it: `skewless guard` of the checkout's own package, in the checkout, against the previous commit.
    repo = _git_repo(tmp_path / "repo")
    _plant(repo, "feature_repo/repo_features.py", "    schema=fields_of(REPO_ACTIVITY),",
           "    schema=[f for f in fields_of(REPO_ACTIVITY) if f.name != 'days_since_last_commit'],")
    _plant(repo, DEFS, '"mean_files_per_commit_last_30d", "days_since_last_commit")),',
           '"mean_files_per_commit_last_30d")),')
    _git(repo, "commit", "-q", "-am", "drop a feature")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_"))}
    env.update({"PYTHONPATH": str(repo / "src"), "SKEWLESS_HOME": str(tmp_path / "home")})
    proc = subprocess.run([sys.executable, "-m", "skewless.cli", "guard"], cwd=repo, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "== feast plan: working tree against HEAD~1 ==" in out
    plan = out.split("== feast plan: working tree against HEAD~1 ==\n")[1].split("\n== feature guard:")[0]
    assert plan.splitlines() == [  # the short form (skewless.feast_ext.plan), not Feast's proto dumps
        "feature view repo_activity: changed",
        "  removed feature days_since_last_commit (Float64)",
        "feature service next_week_commits_v1: changed",
        "  removed feature repo_activity:days_since_last_commit (Float64)",
    ], out
    assert ("BREAKING: next_week_commits_v1: feature repo_activity:days_since_last_commit (Float64) was removed or "
            "renamed") in out
    assert "FEATURE GUARD FAILED" in out


def test_guard_skips_a_first_commit(tmp_path):
    repo = _git_repo(tmp_path / "repo")
    printed: list[str] = []
    outcome = fg.run("HEAD~1", root=repo, use_registry=False, echo=printed.append)
    assert outcome.ok and outcome.result is None and "skipped" in outcome.skipped
    assert printed == [outcome.skipped]


def test_guard_refuses_an_unknown_revision(tmp_path):
    repo = _git_repo(tmp_path / "repo")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    with pytest.raises(fg.GuardError, match="origin/mian is not known"):
        fg.run("origin/mian", root=repo, use_registry=False, echo=lambda _: None)


def test_guard_names_a_directory_that_is_no_git_checkout(tmp_path):
    with pytest.raises(fg.GuardError, match="not a git checkout"):
        fg.run("HEAD~1", root=_copy_tree(tmp_path / "plain"), use_registry=False, echo=lambda _: None)


# --- what registered model versions were trained on, against the working tree (ADR 0020) ---------------------------

def _register(home: Path, service: str, features: dict[str, str]) -> str:
    """A next_week_commits version tagged as training tags one: its service and its exact feature list."""
    from mlflow.tracking import MlflowClient

    from skewless.core import mlflow_home
    from skewless.core.config import FEATURE_SERVICE_TAG, FEATURES_TAG, profile

    uri = profile().mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if not client.search_registered_models("name = 'next_week_commits'"):
        client.create_registered_model("next_week_commits")
    mv = client.create_model_version("next_week_commits", source=(home / "model").as_uri(), tags={
        FEATURE_SERVICE_TAG: service, FEATURES_TAG: mlflow_home.features_tag(features)})
    return str(mv.version)


def test_a_version_trained_on_uncommitted_definitions_fails_the_guard_once_they_are_gone(tmp_path, home):
    # The case: a version is trained on definitions that were never committed (a new feature and the v2
    # service listing it); they are then stashed. The git comparison sees no change (HEAD -> working tree), but
    # the guard reads what the version was trained on from MLflow and names the version and what it lost.
    repo = _git_repo(tmp_path / "repo")
    for change in NEW_FEATURE:
        _plant(repo, *change)
    [head] = fg.definitions(repo)
    trained_on = dict(head["next_week_commits_v2"].features)
    assert "repo_activity:commits_last_14d" in trained_on
    version = _register(home, "next_week_commits_v2", trained_on)

    printed: list[str] = []
    assert fg.run("HEAD", root=repo, echo=printed.append).ok, "\n".join(printed)  # the definitions are there

    _git(repo, "stash")  # the uncommitted definitions are gone from the working tree
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "FEAST_", "MLFLOW_"))}
    env.update({"PYTHONPATH": str(repo / "src"), "SKEWLESS_HOME": str(home)})
    proc = subprocess.run([sys.executable, "-m", "skewless.cli", "guard", "--base", "HEAD"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (f"BREAKING: registered model next_week_commits version {version}: service next_week_commits_v2 is not "
            "defined in the working tree") in proc.stdout
    assert "repo_activity:commits_last_14d" in proc.stdout and "FEATURE GUARD FAILED" in proc.stdout

    # Without any base revision (a history of one commit), the registered versions are still checked.
    printed.clear()
    outcome = fg.run("HEAD~1", root=repo, echo=printed.append)
    assert outcome.skipped and "registered model versions only" in outcome.skipped
    assert not outcome.ok and [v.version for v in outcome.result.violations] == [
        f"registered model next_week_commits version {version}"]


def test_a_version_whose_features_left_its_service_fails_even_when_git_sees_no_change(defs, home):
    # Before ADR 0020 next_week_commits_v1 selected its whole view: a version trained while it had grown a feature
    # (commits_last_14d) was tagged with v1. The base and the working tree agree (no git change): main printed
    # FEATURE GUARD OK. The version's recorded features say what it needs.
    base = defs["base"]
    grown = {**base[SERVICE].features, "repo_activity:commits_last_14d": "Int64"}
    version = _register(home, SERVICE, grown)
    retyped = _register(home, SERVICE, {**base[SERVICE].features, "repo_activity:commits_last_30d": "Float64"})
    result = fg.evaluate(base, base)
    assert not result.ok
    assert [(v.version, v.feature) for v in result.violations] == [
        (f"registered model next_week_commits version {version}", "repo_activity:commits_last_14d"),
        (f"registered model next_week_commits version {retyped}", "repo_activity:commits_last_30d")]
    assert "no longer exists in the working tree's definitions" in str(result.violations[0])
    assert "retyped from Float64 (what the version was trained on) to Int64" in str(result.violations[1])
    report = result.report()
    assert f"registered model next_week_commits version {version}: feature repo_activity:commits_last_14d" in report
    # a version that recorded exactly v1's features passes
    _register(home, SERVICE, dict(base[SERVICE].features))
    assert len(fg.evaluate(base, base).violations) == 2
