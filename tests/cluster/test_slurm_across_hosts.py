"""Slurm across the test bed's hosts (one slurmd each, conftest.cluster_slurm), with the site
file shipped beside these tests (sites/testbed.yaml): ``hpccl submit`` of the quickstart on 3
nodes end to end, and a weak-scaling sweep over 1, 2 and 3 nodes through sbatch, ending in
``hpccl analyze SWEEP``. Clients run on node1, the login node."""

from __future__ import annotations

import json
import os
import sys

from hpccl.analysis.report import summarize
from hpccl.core.logs import read_h5

from cluster_helpers import ROOT, SITES
from slurm_cluster import FINAL_STATES     # tests/sched: on the path through conftest.py

QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")


def client_env(slurm, shared):
    # The data cache must be on the shared file system: each host's /tmp is its own.
    return {**os.environ, **slurm.client_env, "HPCCL_SITE_DIR": SITES,
            "HPCCL_DATA_CACHE": str(shared.parent / "data")}


def hpccl_on_login(testbed, slurm, shared, *args, timeout=300):
    return testbed.run("node1", [sys.executable, "-m", "hpccl", *args], timeout=timeout,
                       env=client_env(slurm, shared), cwd=ROOT)


def job_output(run_dir) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(run_dir.iterdir())
                     if p.name.startswith("slurm-") or p.name == "attempts.log")


def test_quickstart_submitted_on_three_nodes(testbed, cluster_slurm, shared):
    out = shared / "quickstart"
    r = hpccl_on_login(testbed, cluster_slurm, shared, "submit", QUICKSTART, "--site", "testbed",
                       "--gpus", "6", "--set", "runtime.threads_per_rank=1", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.loads((out / "submission.json").read_text())["job_id"]
    info = cluster_slurm.wait_state(job_id, FINAL_STATES, 400)
    assert info["JobState"] == "COMPLETED", job_output(out)
    assert (info["NumNodes"], info["NumTasks"]) == ("3", "6"), info
    assert info["NodeList"] == "node[1-3]", info
    text = (out / f"slurm-{job_id}.out").read_text()
    # the pre-flight ran across the three hosts before training
    assert "hpccl check: 6 rank(s) on 3 host(s)" in text and "all checks passed" in text, text
    assert text.index("all checks passed") < text.index("task 0 epoch 1")
    s = summarize(str(out))
    assert (s["status"], s["world_size"], s["tasks_completed"]) == ("complete", 6, 5)
    hosts = json.loads(read_h5(str(out / "log.h5"))["attrs"]["hostnames"])
    assert hosts == ["node1", "node1", "node2", "node2", "node3", "node3"]
    assert s["final_average_accuracy"] > 0.85, s["final_average_accuracy"]
    # what squeue and the run's status say at the end
    r = hpccl_on_login(testbed, cluster_slurm, shared, "analyze", str(out))
    assert r.returncode == 0 and "complete" in r.stdout, r.stdout + r.stderr


def test_weak_scaling_sweep_over_one_two_and_three_nodes(testbed, cluster_slurm, shared):
    out = shared / "sweep"
    r = hpccl_on_login(testbed, cluster_slurm, shared, "submit", QUICKSTART, "--site", "testbed",
                       "--scaling", "weak", "--gpus", "2,4,6", "--set", "train.epochs=2",
                       "--set", "runtime.threads_per_rank=1", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    points = json.loads((out / "manifest.json").read_text())["points"]
    assert [(p["gpus"], p["nodes"]) for p in points] == [(2, 1), (4, 2), (6, 3)]
    for p in points:
        run = out / p["run_dir"]
        info = cluster_slurm.wait_state(p["job_id"], FINAL_STATES, 400)
        assert info["JobState"] == "COMPLETED", job_output(run)
        assert info["NumNodes"] == str(p["nodes"])
        attrs = read_h5(str(run / "log.h5"))["attrs"]
        assert len(set(json.loads(attrs["hostnames"]))) == p["nodes"]
    r = hpccl_on_login(testbed, cluster_slurm, shared, "analyze", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [row.split()[:2] for row in rows][:3] == [["2", "1"], ["4", "2"], ["6", "3"]], r.stdout
    assert "efficiency" in r.stdout and all("complete" in row for row in rows[:3]), r.stdout
    print(r.stdout)
