"""docs/analysis.ipynb runs from top to bottom: it trains its small run and sweep, and every
figure and table it shows comes out of hpccl.analysis without an error."""

import json
import os
import sys

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from helpers import ROOT

NOTEBOOK = os.path.join(ROOT, "docs", "analysis.ipynb")


def kernel_of_this_python(tmp_path) -> KernelManager:
    """A kernel on the interpreter running the tests (the project's virtual environment), not
    whatever a "python3" kernel spec on this machine points at."""
    spec = tmp_path / "kernels" / "hpccl-tests"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hpccl tests", "language": "python"}))
    return KernelManager(kernel_name="hpccl-tests",
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))


def outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if kind in o.get("data", {}) or o.get("output_type") == kind]


def test_the_analysis_notebook_runs_and_shows_its_figures(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit docs/analysis.ipynb without outputs (the suite executes it)"
    client = NotebookClient(nb, km=kernel_of_this_python(tmp_path), timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()        # raises CellExecutionError, naming the cell, on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in outputs(c, "error")]
    figures = [c for c in code if outputs(c, "image/png")]
    assert len(figures) == 4, [c.source[:60] for c in figures]   # matrix, forgetting, timers, scaling
    printed = "".join(o.get("text", "") for c in code for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "continual complete 2 ranks" in printed, printed
    tables = "".join(o["data"]["text/plain"] for c in code for o in outputs(c, "text/plain"))
    assert "efficiency" in tables and "complete" in tables

