"""docs/analysis.ipynb runs from top to bottom: it trains its small run and sweep, draws its
four figures without an error, and what it drew (the accuracy matrix, forgetting, time per
phase and rank, scaling efficiency) is what ``hpccl analyze --format json`` says of the same
run and sweep."""

import json
import os
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from hpccl.cli import main

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


# Run in the notebook's kernel after its cells: what its figures were drawn from.
PROBE = """
import json, math
_clean = lambda rows: [[None if isinstance(v, float) and math.isnan(v) else v for v in r] for r in rows]
print("PROBE" + json.dumps({
    "run_dir": str(run_dir), "sweep_dir": str(sweep_dir), "matrix": _clean(acc.to_numpy().tolist()),
    "forgetting": f["forgetting"].tolist(), "average_accuracy": f["average_accuracy"].tolist(),
    "seconds": {str(r): {ph: tb.loc[r, ph + "_s"] for ph in phases} for r in tb.index},
    "gpus": p["gpus"].tolist(), "efficiency": p["efficiency"].tolist()}))
"""


def analyze_json(path, capsys):
    capsys.readouterr()
    assert main(["analyze", path, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_analysis_notebook_runs_and_shows_what_analyze_says(tmp_path, capsys):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit docs/analysis.ipynb without outputs (the suite executes it)"
    km = kernel_of_this_python(tmp_path)
    client = NotebookClient(nb, km=km, timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    probe = nbformat.v4.new_code_cell(PROBE)
    nb.cells.append(probe)
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):     # raises CellExecutionError, naming the cell
                client.execute_cell(cell, index)
    finally:
        # a client given its kernel manager leaves the kernel running (it owns only those it
        # made): without this the kernel outlived the test for the rest of the suite
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    code = [c for c in nb.cells[:-1] if c.cell_type == "code"]
    figures = [c for c in code if outputs(c, "image/png")]
    assert len(figures) == 4, [c.source[:60] for c in figures]   # matrix, forgetting, timers, scaling
    [drawn] = [json.loads(o["text"].split("PROBE", 1)[1]) for o in probe.outputs if "PROBE" in o.get("text", "")]

    run = analyze_json(drawn["run_dir"], capsys)
    assert (run["job_kind"], run["status"], run["world_size"]) == ("continual", "complete", 2)
    assert drawn["matrix"] == run["accuracy_matrix"] and len(drawn["matrix"]) == run["tasks_completed"]
    assert drawn["forgetting"] == pytest.approx(run["forgetting_per_task"])
    assert drawn["average_accuracy"] == pytest.approx(run["average_accuracy"])
    assert drawn["seconds"] == {str(r["rank"]): pytest.approx(r["seconds"]) for r in run["timers"]["per_rank"]}
    sweep = analyze_json(drawn["sweep_dir"], capsys)
    assert drawn["gpus"] == [pt["gpus"] for pt in sweep["points"]] == [1, 2]
    assert drawn["efficiency"] == pytest.approx([pt["efficiency"] for pt in sweep["points"]])
    assert all(pt["status"] == "complete" for pt in sweep["points"])
