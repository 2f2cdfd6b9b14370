"""Exact resume of rehearsal on 2 ranks, from a checkpoint taken mid-task with the
representatives for the next mini-batch already fetched (checkpoint.py: "on the same number,
every rank continues exactly"; buffer.py: "a resumed run draws exactly what an uninterrupted
one would have").

Two runs of a multi-rank rehearsal job do not agree bit for bit: a draw sees the other
ranks' shards as they are at that moment, and their inserts race with it (test_resume.py).
So the resumed run is compared with the very run that wrote the checkpoint: an uninterrupted
run with a periodic checkpoint every epoch, one mini-batch per epoch, and 4 checkpoints kept.
Its checkpoint before the last epoch of task 1 is resumed in a copy of its directory. That
epoch's single mini-batch trains with the representatives the checkpoint holds; the
representatives fetched after it are never used, and the next task starts with a fresh draw.
So the two runs must agree exactly up to the checkpoint written at the end of task 1: model
and optimizer, every rank's buffer (samples, reservoir counts, RNG states, totals seen) and
the logged metrics. The copy also holds the leftovers of a save killed while writing, which
the resumed run must not carry into its own checkpoints.
"""

import json
import shutil

import h5py
import numpy as np
import torch

from hpccl.core.logs import read_h5

from helpers import hpccl_cmd, run_cmd, write_job

EPOCHS, RANKS = 3, 2


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same(a, b, where):
    """Equal structure, and bit-equal tensors and arrays."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def _shard_file(path):
    with h5py.File(path, "r") as f:
        return {**{k: f[k][...] for k in f}, **{k: str(v) for k, v in f.attrs.items()}}


def test_a_multi_rank_rehearsal_run_resumed_with_pending_representatives_continues_exactly(tmp_path):
    job = write_job(tmp_path / "job.yaml", learner={"kind": "rehearsal"}, scenario={"num_tasks": 3},
                    # one mini-batch per epoch on each rank (digits: ~240 samples per task and rank)
                    train={"epochs": EPOCHS, "batch_size": 512, "lr": 0.05, "momentum": 0.5},
                    # every rank its own node: the other rank's total is known only from the
                    # sampler's snapshot, which the checkpoint must carry too
                    rehearsal={"candidates": 32, "representatives": 8, "slots_per_class": 2,
                               "async": True, "ranks_per_node": 1, "transport": "rma"},
                    checkpoint={"every": 1, "keep": 4}, runtime={"backend": "torch"})
    full, part = tmp_path / "full", tmp_path / "part"
    r = run_cmd(hpccl_cmd("run", job, "-n", str(RANKS), "--out", str(full)), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    state = lambda d: json.loads((d / "state.json").read_text())            # noqa: E731
    # newest first: task 2's two mid-task ones, task 1's end, task 1 before its last epoch
    assert [(state(full / n)["task"], state(full / n)["epoch"]) for n in
            ("checkpoint", "checkpoint.prev1", "checkpoint.prev2", "checkpoint.prev3")] == \
        [(2, 2), (2, 1), (2, 0), (1, EPOCHS - 1)]
    resumed_from, task_end = full / "checkpoint.prev3", "checkpoint.prev2"
    for rank in range(RANKS):
        buffer = _load(resumed_from / f"rank{rank:05d}.pt")["learner"]["buffer"]
        assert buffer["has_pending"] and len(buffer["pending"][1]) == 8, rank

    shutil.copytree(full, part, ignore=shutil.ignore_patterns("checkpoint*"))
    shutil.copytree(resumed_from, part / "checkpoint")
    # The copy stands for the run killed right after that checkpoint: its log says 'running',
    # as a SIGKILL leaves it (a log that says complete is refused a resume).
    from hpccl.core.logs import H5Log
    H5Log.reopen(str(part / "log.h5")).close(status="running")
    leftover = part / "checkpoint.new1"       # the name the resumed run's first save uses
    leftover.mkdir()
    (leftover / "rank00005.pt").write_bytes(b"from a 6-rank save killed while writing")
    r = run_cmd(hpccl_cmd("run", "--resume", str(part), "-n", str(RANKS)), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming {part} at task 1, epoch {EPOCHS - 1}" in r.stdout
    assert not list(part.glob("checkpoint.new*"))
    assert state(part / task_end)["task"] == 2 and state(part / task_end)["epoch"] == 0

    a, b = full / task_end, part / task_end
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    _assert_same(_load(a / "model.pt"), _load(b / "model.pt"), "model.pt")
    for rank in range(RANKS):
        _assert_same(_load(a / f"rank{rank:05d}.pt")["learner"], _load(b / f"rank{rank:05d}.pt")["learner"],
                     f"rank {rank}")
        _assert_same(_shard_file(a / f"buffer_rank{rank:05d}.h5"), _shard_file(b / f"buffer_rank{rank:05d}.h5"),
                     f"buffer of rank {rank}")

    la, lb = read_h5(str(full / "log.h5")), read_h5(str(part / "log.h5"))
    # the premise: a second mini-batch after the checkpoint would train on a racy draw
    assert set(la["epochs/iterations"].tolist()) == {1}
    assert lb["attrs"]["status"] == "complete" and len(lb["resumes/task"]) == 1
    rows = 2 * EPOCHS               # tasks 0 and 1
    for name in ("task", "epoch", "loss", "train_accuracy", "lr", "samples"):
        np.testing.assert_array_equal(la[f"epochs/{name}"][:rows], lb[f"epochs/{name}"][:rows], err_msg=name)
    for name in ("eval/top1", "eval/top5"):
        np.testing.assert_array_equal(la[name][:2], lb[name][:2], err_msg=name)
    for name in ("average_accuracy", "samples", "iterations"):
        np.testing.assert_array_equal(la[f"tasks/{name}"][:2], lb[f"tasks/{name}"][:2], err_msg=name)
    assert len(lb["epochs/loss"]) == 3 * EPOCHS        # and the run went on to its end
