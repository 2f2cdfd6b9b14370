"""The host memory estimate (hpccl submit checks it against the site's nodes) against what
real runs hold: each rank's peak proportional set size, which the rank log records.

Two runs of the same rehearsal job differ only in how much data they hold (200 vs 4000
uint8 64x64 images a class): the estimate must not undershoot either, and must predict the
difference between them, which is the part that depends on the job (data shards, buffer,
checkpoint copies) rather than on the Python runtime."""

import glob
import os

import numpy as np
import pytest
import yaml

from helpers import hpccl_cmd, run_cmd, write_job
from hpccl.config import load_job
from hpccl.core import kinds
from hpccl.core.logs import read_h5
from hpccl.data.h5format import write_dataset


def _job(folder, per_class):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    y, y_test = np.repeat(np.arange(10), per_class), np.repeat(np.arange(10), 50)
    data = write_dataset(os.path.join(folder, "data.h5"),
                         rng.integers(0, 256, (len(y), 3, 64, 64), dtype=np.uint8), y,
                         rng.integers(0, 256, (len(y_test), 3, 64, 64), dtype=np.uint8), y_test,
                         num_classes=10, name="images")
    # Candidates enough to fill every slot, and a checkpoint after the first task, so the run
    # holds everything the estimate counts.
    return write_job(os.path.join(folder, "job.yaml"), data={"path": data}, scenario={"num_tasks": 2},
                     learner={"kind": "rehearsal"}, train={"epochs": 1, "batch_size": 64, "lr": 0.01},
                     rehearsal={"buffer_ratio": 0.3, "candidates": 32, "representatives": 8},
                     checkpoint={"every": "task"})


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    base = tmp_path_factory.mktemp("memory")
    return {n: _job(str(base / f"c{n}"), n) for n in (200, 4000)}


def _estimate(job, ranks=2):
    cfg = load_job(job, [])
    return kinds.of_job(cfg).estimate_host_memory(cfg, ranks, on_gpu=False)


def test_the_estimate_bounds_and_predicts_what_ranks_hold(jobs):
    estimated, measured = {}, {}
    for n, job in jobs.items():
        run = os.path.join(os.path.dirname(job), "run")
        r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", run), timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        pss = [read_h5(p)["attrs"]["peak_pss_bytes"] for p in sorted(glob.glob(f"{run}/ranks/rank*.h5"))]
        estimated[n], measured[n] = _estimate(job).per_rank, np.mean(pss)
        assert len(pss) == 2 and max(pss) <= 1.1 * estimated[n], (n, pss, estimated[n])
    grown, predicted = measured[4000] - measured[200], estimated[4000] - estimated[200]
    assert predicted > 250e6          # the data-dependent part dominates the difference
    assert 0.75 * predicted <= grown <= 1.25 * predicted, (grown, predicted)


def _site(tmp_path, memory_gb):
    sites = tmp_path / f"sites{memory_gb}"
    sites.mkdir()
    (sites / "small-nodes.yaml").write_text(yaml.safe_dump(
        {"extends": "local", "memory_per_node_gb": memory_gb, "gpus": False}))
    return {"HPCCL_SITE_DIR": str(sites)}


def test_submit_refuses_a_job_whose_nodes_would_run_out_of_host_memory(jobs, tmp_path):
    job = jobs[4000]
    need = 2 * _estimate(job).per_rank / 1e9
    out = tmp_path / "refused"
    r = run_cmd(hpccl_cmd("submit", job, "--site", "small-nodes", "--gpus", "2", "--dry-run",
                          "--out", str(out)), env=_site(tmp_path, round(0.7 * need, 2)))
    assert r.returncode != 0 and not out.exists()
    assert f"would hold about {need:.1f} GB of host memory per node" in r.stderr
    assert "memory_per_node_gb of site 'small-nodes'" in r.stderr and "training data" in r.stderr
    # Close to the limit: submitted (here: written), with a warning.
    r = run_cmd(hpccl_cmd("submit", job, "--site", "small-nodes", "--gpus", "2", "--dry-run",
                          "--out", str(tmp_path / "tight")), env=_site(tmp_path, round(1.1 * need, 2)))
    assert r.returncode == 0, r.stderr
    assert f"host memory per node: about {need:.2f} GB of" in r.stdout
    assert "warning: the job would use 9" in r.stderr
    # Plenty: no warning.
    r = run_cmd(hpccl_cmd("submit", job, "--site", "small-nodes", "--gpus", "2", "--dry-run",
                          "--out", str(tmp_path / "roomy")), env=_site(tmp_path, round(4 * need, 2)))
    assert r.returncode == 0 and "warning" not in r.stderr
