"""The README's feature catalogue is generated from the Feast definitions and cannot drift from them."""

from skewless.ops import catalog_doc
from skewless.core.config import PROJECT_ROOT


def test_readme_feature_catalogue_is_current(home):
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert catalog_doc.readme_section(readme) == catalog_doc.markdown(), (
        "README feature catalogue is stale: run `skewless features describe --write-readme`")


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()
