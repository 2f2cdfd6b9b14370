"""hpccl model's calibration on run logs with known timings (written with the real log
writer): which run each term comes from, the allreduce link fitted per backend by the
algorithm that backend uses, the refusal of a term without data, and the algorithm and
owner arithmetic the prediction rests on. (tests/cluster/test_model_validation.py checks a
prediction against hosts on a real network.)"""

import json
import os

import numpy as np
import pytest

from hpccl.analysis import model
from hpccl.core.errors import HpcclError
from hpccl.core.logs import H5Log

from helpers import hpccl_cmd, run_cmd

GRAD = 1_200_000          # gradient bytes
B, R, C = 16, 16, 8       # batch, representatives, candidates
ITS = 20


def timed_run(run_dir, *, world, backend="torch", fb=0.002, ar=0.0004, hosts=None, fetch_s=0.0, fetched=0,
              shape="[64]"):
    """A run whose every rank logs the same per-iteration phases (seconds)."""
    os.makedirs(os.path.join(run_dir, "ranks"))
    hosts = hosts or [f"node{i + 1}" for i in range(world)]
    cfg = (f"learner: {{kind: rehearsal}}\ntrain: {{batch_size: {B}}}\n"
           f"rehearsal: {{representatives: {R}, candidates: {C}, start_task: 1, async: true}}\n")
    log = H5Log(os.path.join(run_dir, "log.h5"), "run", {
        "name": "t", "learner": "rehearsal", "world_size": world, "backend": backend, "device": "cpu",
        "tasks_completed": 2, "train_time_s": 1.0, "sample_shape": shape, "config_yaml": cfg,
        "model_gradient_bytes": GRAD, "hostnames": json.dumps(hosts)})
    log.append("epochs", task=1, epoch=0, loss=1.0, train_accuracy=0.5, lr=0.1, samples=720,
               time_s=1.0, iterations=ITS)
    log.close("complete")
    for rank in range(world):
        rl = H5Log(os.path.join(run_dir, "ranks", f"rank{rank:05d}.h5"), "rank",
                   {"rank": rank, "hostname": hosts[rank], "local_rank": 0})
        phases = {"data_load": B * 1e-5, "rehearsal_wait": 1e-4, "forward_backward": fb,
                  "allreduce_step": ar, "other": 2e-4}
        for k, v in phases.items():
            rl.put(f"timers/{k}", np.full(ITS, v))
        rl.put("timers/total", np.full(ITS, sum(phases.values())))
        rl.put("timers/task", np.ones(ITS, dtype=int))
        rl.put("timers/epoch", np.zeros(ITS, dtype=int))
        for k, v in {"buffer_fetch_s": fetch_s or ITS * R * 5e-6, "buffer_fetched": fetched or ITS * R,
                     "buffer_insert_s": ITS * C * 1e-5, "buffer_offered": ITS * C}.items():
            rl.put(f"tasks/{k}", np.array([0.0, v]))
        rl.close()
    return str(run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    one = timed_run(root / "one", world=1)
    step, compute = 0.0004, 0.002
    # 2 ranks across 2 hosts: gloo's ring swaps G with the peer at 6 MB/s (0.2 s); the mpi
    # backend's Rabenseifner swaps G at 3 MB/s (0.4 s); both add it to the step
    # a draw: the copies, 0.02 s of remote overhead, and its bytes at the wire, slowed by the
    # allreduce's share of the owner's NIC (0.2 / (0.2 + 0.002) for gloo, capped at 0.95), for
    # which it has half the link
    rho = min(0.95, (GRAD / 6e6) / (compute + GRAD / 6e6))
    draw = R * 5e-6 + 0.02 + R / 2 * 256 / 6e6 * (1 + rho)
    two_torch = timed_run(root / "two_torch", world=2, ar=step + GRAD / 6e6, fetch_s=ITS * draw, fetched=ITS * R)
    two_mpi = timed_run(root / "two_mpi", world=2, backend="mpi", ar=step + GRAD / 3e6,
                        fetch_s=ITS * draw, fetched=ITS * R)
    same_host = timed_run(root / "same_host", world=2, ar=step + GRAD / 6e6, hosts=["h", "h"])
    return {"one": one, "two_torch": two_torch, "two_mpi": two_mpi, "same_host": same_host,
            "compute": compute}


def test_each_term_comes_from_the_run_that_measures_it(runs):
    m = model.calibrate([runs["two_torch"], runs["one"], runs["two_mpi"]])
    assert m.ranks == 1 and m.sources["compute"] == runs["one"] and m.sources["step"] == runs["one"]
    assert m.compute_s_per_sample == pytest.approx(runs["compute"] / (B + R))
    assert m.step_s == pytest.approx(0.0004) and m.other_s == pytest.approx(2e-4)
    assert m.fetch_s_per_rep == pytest.approx(5e-6) and m.insert_s_per_candidate == pytest.approx(1e-5)
    # the ring at 2 ranks and Rabenseifner at 2 ranks both swap G with the one peer
    assert m.links["torch"]["bandwidth"] == pytest.approx(6e6)
    assert m.links["mpi"]["bandwidth"] == pytest.approx(3e6)
    assert m.links["torch"]["source"] == runs["two_torch"] and m.links["mpi"]["source"] == runs["two_mpi"]
    assert m.wire_bandwidth == pytest.approx(6e6) and m.allreduce_scope == "inter"
    # a draw of 16 from 2 ranks: 0.02 s per draw beyond the copies and bytes, over its remote owner
    remote = model.expected_owners(2, R) - (1 - 0.5 ** R)
    assert m.fetch_s_per_owner == pytest.approx(0.02 / remote)
    assert m.sources["fetch_per_owner"] == f"{runs['two_torch']}, {runs['two_mpi']}"


def test_predictions_follow_each_backends_algorithm(runs):
    m = model.calibrate([runs["one"], runs["two_torch"], runs["two_mpi"]])
    from dataclasses import replace
    torch3 = model.iteration_time(m, 3, 1, None)
    mpi3 = model.iteration_time(replace(m, backend="mpi"), 3, 1, None)
    assert torch3["allreduce_algorithm"] == "ring" and mpi3["allreduce_algorithm"] == "recursive_halving_doubling"
    # ring at 3: 4/3 G one way at the wire; Rabenseifner at 3: fold G in, swap G, send G back
    assert torch3["t_allreduce"] == pytest.approx(4 / 3 * GRAD / 6e6)
    assert mpi3["t_allreduce"] == pytest.approx(GRAD / 3e6 + 2 * GRAD / 6e6)
    assert torch3["t_compute"] == pytest.approx(runs["compute"])


def test_a_term_without_data_is_refused_not_guessed(runs):
    only_one = model.calibrate([runs["one"]])
    with pytest.raises(HpcclError, match="no run at 2\\+ ranks and no site network"):
        model.iteration_time(only_one, 2, 1, None)
    torch_only = model.calibrate([runs["one"], runs["two_torch"]])
    with pytest.raises(HpcclError, match="none for 'mpi'"):
        model.iteration_time(model.Measured(**{**torch_only.__dict__, "backend": "mpi"}), 2, 1, None)
    # a link fitted inside one node says nothing about the network between nodes
    intra = model.calibrate([runs["one"], runs["same_host"]])
    assert intra.allreduce_scope == "intra"
    assert model.iteration_time(intra, 2, 2, None)["t_allreduce"] == pytest.approx(GRAD / 6e6)
    with pytest.raises(HpcclError, match="only a link fitted intra-node"):
        model.iteration_time(intra, 4, 2, None)
    with pytest.raises(HpcclError, match="none of .* is a 1-rank run"):
        model.calibrate([runs["two_torch"]])
    r = run_cmd(hpccl_cmd("model", runs["one"], "--gpus", "1,2"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot predict the gradient allreduce on 2 ranks" in r.stderr
    r = run_cmd(hpccl_cmd("model", runs["one"], runs["two_torch"], "--gpus", "1,2,3", "--gpus-per-node", "1"))
    assert r.returncode == 0, r.stderr
    assert f"compute <- {runs['one']}" in r.stdout and f"allreduce <- torch: {runs['two_torch']}" in r.stdout


def test_openmpi_decision_and_traffic():
    # Open MPI 4.1's fixed decision: Rabenseifner from 256 KiB below 4 ranks, 8 KiB below 16
    assert model.allreduce_algorithm("mpi", 300_000, "cpu", 3) == "recursive_halving_doubling"
    assert model.allreduce_algorithm("mpi", 200_000, "cpu", 3) == "recursive_doubling"
    assert model.allreduce_algorithm("mpi", 10_000, "cpu", 8) == "recursive_halving_doubling"
    assert model.allreduce_algorithm("torch", 10, "cpu", 3) == "ring"
    assert model.allreduce_traffic("recursive_doubling", 8, 1.0) == (3, 3.0, 0.0)
    assert model.allreduce_traffic("recursive_halving_doubling", 8, 1.0) == (6, 1.75, 0.0)
    assert model.allreduce_traffic("ring", 4, 1.0) == (6, 0.0, 1.5)
    assert model.allreduce_counts("ring", 4, 1.0) == (6, 1.5)


@pytest.mark.parametrize("p, r", [(1, 7), (2, 1), (4, 7), (64, 7), (3, 50)])
def test_expected_owners_matches_draws(p, r):
    rng = np.random.default_rng(0)
    draws = rng.integers(0, p, size=(20000, r))
    seen = np.mean([len(set(row)) for row in draws])
    assert model.expected_owners(p, r) == pytest.approx(seen, rel=0.02)
