"""The training notebook runs top to bottom in a fresh home on the sample, and is committed without outputs."""

from __future__ import annotations

import json
import sys
from datetime import timezone
from pathlib import Path

import pytest

from skewless.core.config import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "training" / "notebooks" / "next_week_commits.ipynb"


def test_notebook_is_stripped():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the notebook has no code cell"
    for c in code:
        assert c["outputs"] == [] and c["execution_count"] is None, "commit the notebook with outputs stripped"


@pytest.fixture
def python3_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec named python3 that runs this interpreter (the project's .venv), first on JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (skewless .venv)", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return "python3"


def test_notebook_executes_on_sample(home: Path, sample_parquet: Path, python3_kernel: str, tmp_path: Path):
    import nbformat
    import pyarrow.compute as pc
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    from skewless import features, lake
    from skewless.ops import feast_ops
    from skewless.lake import ingest

    assert KernelSpecManager().get_kernel_spec(python3_kernel).argv[0] == sys.executable
    ingest.ingest([sample_parquet])
    day = pc.max(lake.commits_table().scan(selected_fields=("committed_at",)).to_arrow()["committed_at"])
    features.build(day.as_py().astimezone(timezone.utc).date())
    feast_ops.apply()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    workdir = tmp_path / "run"
    workdir.mkdir()
    NotebookClient(nb, kernel_name=python3_kernel, timeout=600,
                   resources={"metadata": {"path": str(workdir)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "feature service next_week_commits_v1" in text
    assert f"'abukix.commits': {lake.snapshot_id(lake.commits_table())}" in text
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("commits_last_7d" in h and "label" in h for h in html), "the head of the training set is not shown"
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2, "both plots (model, fresh vs daily) render"
    assert any("daily+fresh" in h and "midweek" in h for h in html), "the fresh vs daily comparison is not shown"
