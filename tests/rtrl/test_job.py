"""``kind: online_rnn`` end to end: config, a real 2-rank `hpccl run`, its log, `hpccl analyze`."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers import hpccl_cmd, run_cmd  # noqa: E402

from hpccl.config import job_from_dict  # noqa: E402
from hpccl.core.errors import ConfigError  # noqa: E402
from hpccl.core.logs import read_h5  # noqa: E402


def write_rnn_job(path, **rnn) -> str:
    """A short spiral job that learns well above chance in ~2 s per rank."""
    job = {"name": "rnn_t", "kind": "online_rnn", "seed": 0,
           "rnn": {"task": "spiral", "num_examples": 1024, "hidden": 16, "weight_sparsity": 0.5,
                   "input_gain": 3.0, "mode": "rtrl_sparse", "lr": 0.01, "num_sequences": 240,
                   "eval_every": 80, **rnn},
           "runtime": {"device": "cpu"},
           "log": {"dir": str(os.path.dirname(path)), "progress": "lines"}}
    with open(path, "w") as f:
        yaml.safe_dump(job, f)
    return str(path)


def test_config_defaults_and_errors(tmp_path):
    cfg = job_from_dict({"name": "x", "kind": "online_rnn"})
    assert cfg.data is None and cfg.rnn.mode == "rtrl_sparse" and cfg.rnn.task == "spiral"
    assert (cfg.rnn.thr_mean, cfg.rnn.pseudo_support, cfg.rnn.dampening) == (0.3, 1.0, 0.7)
    with pytest.raises(ConfigError) as e:
        job_from_dict({"name": "x", "kind": "online_rnn", "rnn": {"mode": "rtrl_sprase"}}, "j.yaml")
    msg = str(e.value)
    assert "j.yaml" in msg and "'rnn.mode'" in msg and "'rtrl_sprase'" in msg
    assert "Did you mean 'rtrl_sparse'?" in msg and "'bptt'" in msg
    with pytest.raises(ConfigError, match=r"rnn\.weight_sparsity.*\[0, 1\)"):
        job_from_dict({"name": "x", "kind": "online_rnn", "rnn": {"weight_sparsity": 1.0}})
    with pytest.raises(ConfigError, match=r"rnn\.path.*task: file"):
        job_from_dict({"name": "x", "kind": "online_rnn", "rnn": {"task": "file"}})
    with pytest.raises(ConfigError, match=r"unknown key 'rnn\.hiden'.*Did you mean 'hidden'"):
        job_from_dict({"name": "x", "kind": "online_rnn", "rnn": {"hiden": 8}})


def test_h5_file_task(tmp_path):
    import h5py
    from hpccl.rtrl.job import load_task
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "seq.h5", "w") as f:
        f["x"] = rng.normal(size=(50, 6, 3)).astype(np.float32)
        f["y"] = rng.integers(0, 3, size=50)
    cfg = job_from_dict({"name": "x", "kind": "online_rnn",
                         "rnn": {"task": "file", "path": str(tmp_path / "seq.h5")}})
    train, test = load_task(cfg.rnn, 0)
    assert (train.seq_len, train.input_size, train.num_classes) == (6, 3, 3)
    assert len(train) + len(test) == 50
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["x"] = np.zeros((5, 3))
        f["y"] = np.zeros(5, dtype=int)
    cfg.rnn.path = str(tmp_path / "bad.h5")
    with pytest.raises(ConfigError, match=r"rnn\.path.*x \[N, T, D\]"):
        load_task(cfg.rnn, 0)


def test_two_rank_spiral_run_log_and_analyze(tmp_path):
    out = tmp_path / "run"
    job = write_rnn_job(tmp_path / "spiral.yaml")
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=240,
                env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "final test accuracy" in r.stdout and "seq 240/240 (x2 ranks)" in r.stderr + r.stdout

    log = read_h5(str(out / "log.h5"))
    a = log["attrs"]
    assert a["job_kind"] == "online_rnn" and a["status"] == "complete" and a["kind"] == "run"
    assert a["schema_version"] == 1 and a["world_size"] == 2 and "config_yaml" in a
    assert json.loads(a["versions"])["torch"]
    assert a["final_test_accuracy"] >= 0.75 > a["chance_accuracy"] + 0.15   # chance ~0.5
    # per-sequence metrics of rank 0's stream
    n = len(log["stream/sequence"])
    assert n == 240 and list(log["stream/sequence"][:3]) == [1, 2, 3]
    act, nnz = log["stream/activity"], log["stream/influence_nnz"]
    assert ((act >= 0) & (act <= 1)).all() and 0 < act.mean() < 1
    assert ((nnz > 0) & (nnz <= 1)).all()
    assert (log["stream/macs_per_step"] > 0).all() and (log["stream/mem_bytes"] > 0).all()
    assert np.mean(log["stream/correct"][-80:]) >= 0.75
    assert list(log["evals/sequence"]) == [80, 160, 240]
    assert list(log["evals/sequences_total"]) == [160, 320, 480]
    assert log["evals/updates"][-1] == 240     # one update per sequence, the same on all ranks
    # masked weights stayed exactly zero and the two replicas stayed identical
    assert a["masked_weight_max_abs"] == 0.0 and a["replica_max_abs_diff"] == 0.0
    import torch
    state = torch.load(out / "rnn_state.pt")["state_dict"]
    off = state["cell.mask"] == 0
    assert off.any() and (state["cell.U"][:, off] == 0).all()
    assert len(list((out / "ranks").iterdir())) == 2
    from hpccl.config import load_job
    from hpccl.rtrl.host_memory import estimate
    bound = estimate(load_job(job), 2, False).per_rank        # hpccl submit checks nodes with it
    for rank in (out / "ranks").iterdir():
        assert read_h5(str(rank))["attrs"]["peak_pss_bytes"] <= 1.15 * bound

    # analyze: json and text, a run of dense RTRL to compare against
    j = run_cmd(hpccl_cmd("analyze", str(out), "--format", "json"), timeout=60)
    assert j.returncode == 0, j.stderr
    s = json.loads(j.stdout)
    assert s["job_kind"] == "online_rnn" and s["mode"] == "rtrl_sparse"
    assert s["final_test_accuracy"] == pytest.approx(a["final_test_accuracy"])
    assert 0 < s["mean_activity"] < 1 and 0 < s["mean_influence_nnz"] <= 1
    assert s["macs_per_step"] > 0 and s["mem_bytes_per_step"] > 0
    from hpccl.analysis.report import format_report, summarize
    text = format_report([summarize(str(out))], "text")
    for words in ("final test accuracy", "mean activity", "influence matrix non-zeros",
                  "MACs/step", "KiB/step"):
        assert words in text

    from hpccl.rtrl.report import plot_rnn
    paths = plot_rnn([s], str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["rnn_accuracy.png", "rnn_activity.png"]
    assert all(os.path.getsize(p) > 0 for p in paths)


def test_sparse_vs_dense_compare(tmp_path):
    """One rank each, a short stream: same exact gradients, fewer MACs for sparse RTRL."""
    outs = []
    for mode in ("rtrl_sparse", "rtrl_dense"):
        out = tmp_path / mode
        job = write_rnn_job(tmp_path / f"{mode}.yaml", mode=mode, num_sequences=30, eval_every=30)
        r = run_cmd(hpccl_cmd("run", job, "--out", str(out)), timeout=120, env={"OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(str(out))
    logs = [read_h5(os.path.join(o, "log.h5")) for o in outs]
    np.testing.assert_allclose(logs[0]["stream/loss"], logs[1]["stream/loss"], rtol=1e-4, atol=1e-6)
    assert logs[0]["stream/macs_per_step"].mean() < 0.6 * logs[1]["stream/macs_per_step"].mean()
    assert logs[0]["stream/mem_bytes"].max() < logs[1]["stream/mem_bytes"].max()
    from hpccl.analysis.report import format_report, summarize
    lines = format_report([summarize(o) for o in outs], "text", compare=True).splitlines()
    assert "MACs/step" in lines[0] and "infl nnz" in lines[0]
    assert any("rtrl_sparse" in ln for ln in lines) and any("rtrl_dense" in ln for ln in lines)



def test_host_memory_estimate_is_what_the_learner_allocates_and_refuses_what_cannot_fit(capsys):
    """The online_rnn estimate (hpccl/rtrl/host_memory.py) counts the influence matrices and
    the network the RTRL learner really allocates; sizes no machine can hold are refused
    before any rank starts (``rnn.hidden: 1000000`` was a MemoryError on the ranks, exit 1),
    and hpccl submit checks a site's nodes with it. (The 2-rank run above bounds a real peak.)"""
    from hpccl.cli import main
    from hpccl.config import load_job
    from hpccl.rtrl.cell import EGRUNet
    from hpccl.rtrl.host_memory import FLOAT, estimate
    from hpccl.rtrl.rtrl import RTRLLearner
    for mode, copies, sparsity in (("rtrl_dense", 2, 0.5), ("rtrl_sparse", 3, 0.5), ("rtrl_sparse", 3, 0.0)):
        cfg = load_job("jobs/rnn_spiral.yaml", [f"rnn.mode={mode}", "rnn.hidden=48",
                                                f"rnn.weight_sparsity={sparsity}"])
        parts = estimate(cfg, 1, False).parts
        net = EGRUNet(2, 48, 2, seed=0, weight_sparsity=sparsity)
        allocated = copies * RTRLLearner(net, sparse=mode == "rtrl_sparse").influence_bytes()
        if mode == "rtrl_sparse" and sparsity:    # the mask is drawn: its expected count is estimated
            assert parts["influence matrix"] == pytest.approx(allocated, rel=0.05)
        else:
            assert parts["influence matrix"] == allocated
        weights = sum(p.numel() for p in net.parameters())
        assert 4 * weights * FLOAT <= parts["network and optimizer"] <= 4 * (weights + 48 * 48 + 48) * FLOAT

    for sets, part, hint in ((["rnn.hidden=1000000"], "influence matrix", "grows as hidden^3"),
                             (["rnn.seq_len=100000000"], "task data", "rnn.seq_len"),
                             (["rnn.mode=bptt", "rnn.hidden=64", "rnn.num_examples=40",
                               "rnn.seq_len=10000000000"], "BPTT graph", "rnn.update_every")):
        args = [x for s in sets for x in ("--set", s)]
        # hpccl run refuses it; hpccl validate, often on a login node, says so in a note.
        for command, code, start in ((["run", "jobs/rnn_spiral.yaml", "-n", "2", "--out", "/nonexistent/never"],
                                      2, "hpccl: error: "),
                                     (["validate", "jobs/rnn_spiral.yaml"], 0, "hpccl: note: ")):
            capsys.readouterr()
            assert main(command + args) == code
            err = capsys.readouterr().err
            assert err.startswith(start + "jobs/rnn_spiral.yaml: section 'rnn'"), err
            # The sizes are listed, and the hint is the one for the largest part.
            assert f"{part} " in err and hint in err and "more than this machine's" in err, err


def test_submit_checks_an_online_rnn_job_against_the_site_nodes(tmp_path):
    """A size this machine holds, on a site whose nodes do not: hpccl submit refuses it."""
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "small-nodes.yaml").write_text(yaml.safe_dump(
        {"extends": "local", "memory_per_node_gb": 1, "gpus": False}))
    job = write_rnn_job(tmp_path / "big.yaml", hidden=400, mode="rtrl_dense")
    r = run_cmd(hpccl_cmd("submit", job, "--site", "small-nodes", "--gpus", "1", "--dry-run",
                          "--out", str(tmp_path / "refused")), env={"HPCCL_SITE_DIR": str(sites)})
    assert r.returncode == 2 and not (tmp_path / "refused").exists(), r.stderr
    assert "influence matrix 1.5" in r.stderr and "memory_per_node_gb of site 'small-nodes'" in r.stderr
    # Judged by the site's nodes, not by the machine it is submitted from: a job one rank of
    # which needs more than this machine (about 32 GB here) goes to a site of 1 TB nodes.
    (sites / "big-nodes.yaml").write_text(yaml.safe_dump(
        {"extends": "local", "memory_per_node_gb": 1024, "gpus": False}))
    job = write_rnn_job(tmp_path / "huge.yaml", hidden=1100, mode="rtrl_dense")
    r = run_cmd(hpccl_cmd("submit", job, "--site", "big-nodes", "--gpus", "1", "--dry-run",
                          "--out", str(tmp_path / "written")), env={"HPCCL_SITE_DIR": str(sites)})
    assert r.returncode == 0 and (tmp_path / "written" / "job.sh").exists(), r.stderr
