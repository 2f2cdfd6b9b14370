"""LoRAC-IPC as a job: hpccl pretrain -> hpccl run on 2 real MPI ranks, with both backends.

What is asserted on the real runs: only the trainable parameters (this task's adapters and
omegas, the head) are allreduced -- the backend's own list of hooked parameters, checked
against an independent count from the adapter shapes; every rank's frozen backbone is
bit-for-bit the pretrained file after every task; every adapter a task trains learns (its B
leaves zero) and each task is learnt well above chance; past adapters never change; pairs IPC
froze get no adapter later; the horovod and torch backends give the same losses; a run
stopped by a signal and resumed equals an uninterrupted one.
"""

import signal
import subprocess

import numpy as np
import pytest
import torch
import yaml

from hpccl.continual.lora.learner import state_digest
from hpccl.core.logs import read_h5

from helpers import ROOT, hpccl_cmd, run_cmd

WIDTH, DEPTH, HIDDEN, RANK, CLASSES = 32, 2, 64, 2, 10
CONTINUAL = [0, 2, 4, 5, 7, 9]


def job_file(tmp_path, **over):
    job = {"name": "lorac_t", "seed": 0, "data": {"builtin": "digits"},
           "scenario": {"classes": CONTINUAL, "num_tasks": 3},
           "model": {"kind": "vit", "patch_size": 4, "width": WIDTH, "depth": DEPTH, "heads": 2,
                     "mlp_ratio": HIDDEN / WIDTH, "pretrained": str(tmp_path / "vit.pt")},
           "learner": {"kind": "lorac"},
           "lora": {"rank": RANK, "alpha": 4, "ortho_weight": 0.1, "ipc_fraction": 0.25},
           "pretrain": {"epochs": 3, "lr": 0.002},
           "train": {"epochs": 2, "batch_size": 16, "lr": 0.005, "optimizer": "adam"},
           "runtime": {"backend": "horovod"}, "log": {"dir": str(tmp_path), "progress": "lines"}}
    for key, value in over.items():
        job[key] = {**job[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return str(path)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    job = job_file(tmp)
    r = run_cmd(hpccl_cmd("pretrain", job, "-n", "2"), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pretrained on classes [1, 3, 6, 8]" in r.stdout
    return tmp / "vit.pt"


def run_lorac(tmp_path, pretrained, name, *sets, np_=2):
    job = job_file(tmp_path, model={"pretrained": str(pretrained)})
    out = tmp_path / name
    args = ["run", job, "-n", str(np_), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    r = run_cmd(hpccl_cmd(*args), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, read_h5(str(out / "log.h5"))


def expected_trainable(frozen_before_task, num_tasks, rank=RANK):
    """Adapters + omegas + head per task, from the shapes alone (independent of hpccl.continual.lora)."""
    shapes = {"q": (WIDTH, WIDTH), "k": (WIDTH, WIDTH), "v": (WIDTH, WIDTH), "proj": (WIDTH, WIDTH),
              "fc1": (HIDDEN, WIDTH), "fc2": (WIDTH, HIDDEN)}
    pairs = [(f"{layer}_{m}", shapes[m]) for layer in range(DEPTH) for m in shapes]
    head = CLASSES * WIDTH + CLASSES
    counts, adapters_at = [], {k: 0 for k, _ in pairs}
    for t in range(num_tasks):
        frozen = frozen_before_task[t]
        n = head
        for key, (out_f, in_f) in pairs:
            if key in frozen:
                continue
            n += rank * (out_f + in_f) + adapters_at[key]   # A, B and one omega per past adapter
        counts.append(n)
        for key, _ in pairs:
            if key not in frozen:
                adapters_at[key] += 1
    return counts


def assert_each_task_learnt(log):
    """The accuracy matrix is tasks x tasks, filled up to the diagonal, and each task is learnt
    when it is trained: its accuracy then is well above chance, which for a prediction over
    every class seen so far (no task id) is 1 / (classes seen)."""
    acc = np.asarray(log["eval/top1"], dtype=float)
    tasks = len(log["tasks/classes"])
    assert acc.shape == (tasks, tasks) and np.isnan(acc[np.triu_indices(tasks, 1)]).all(), acc
    assert ((acc[np.tril_indices(tasks)] >= 0) & (acc[np.tril_indices(tasks)] <= 1)).all(), acc
    seen = np.cumsum([len(c.split()) for c in log["tasks/classes"]])
    assert (np.diag(acc) >= 1.5 / seen).all(), (np.diag(acc), 1 / seen)


def test_pretrain_writes_a_plain_timm_state_dict(pretrained):
    state = torch.load(pretrained, weights_only=True)
    assert "blocks.1.attn.qkv.weight" in state and "head.weight" in state and "cls_token" in state
    assert state["head.weight"].shape == (CLASSES, WIDTH)
    meta = yaml.safe_load((pretrained.parent / "vit.pt.json").read_text())
    assert meta["classes"] == [1, 3, 6, 8] and meta["ranks"] == 2 and meta["epochs"] == 3
    # Pre-training learnt its 4 classes (chance 25%; 3 epochs reach ~90%).
    assert meta["test_accuracy"] >= 0.6, meta


@pytest.fixture(scope="module")
def both_backends(pretrained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    # SGD: Horovod initialises a new Adam's state with one zero-gradient step (bias
    # correction then differs from torch's); with SGD the two backends must agree.
    return {b: run_lorac(tmp, pretrained, b, f"runtime.backend={b}", "train.optimizer=sgd",
                         "train.lr=0.02") for b in ("horovod", "torch", "mpi")}


@pytest.mark.parametrize("backend", ["horovod", "torch", "mpi"])
def test_only_trainable_parameters_are_allreduced_and_the_backbone_never_changes(both_backends, pretrained,
                                                                                   backend):
    out, log = both_backends[backend]
    assert log["attrs"]["status"] == "complete" and log["attrs"]["world_size"] == 2
    frozen_keys = [set(k.split()) for k in log["tasks/ipc_frozen_keys"]]
    # 25% (rounded) of the pairs trained in the task: of 12, then of 9, then of 7
    assert list(log["tasks/ipc_frozen_pairs"]) == [3, 2, 2]
    frozen_before = [set().union(*frozen_keys[:t]) for t in range(3)]
    expected = expected_trainable(frozen_before, 3)
    assert list(log["tasks/trainable_params"]) == expected
    assert list(log["tasks/allreduce_bytes_per_step"]) == [4 * n for n in expected]   # float32
    vit = torch.load(pretrained, weights_only=True)
    full = sum(v.numel() for v in vit.values())
    assert list(log["tasks/full_finetune_bytes_per_step"]) == [4 * full] * 3
    assert max(log["tasks/allreduce_bytes_per_step"]) < 0.5 * 4 * full
    # Every rank's frozen weights after every task are the pretrained file's, bit for bit.
    digest = state_digest(vit)
    for rank in (0, 1):
        rank_log = read_h5(str(out / "ranks" / f"rank{rank:05d}.h5"))
        assert list(rank_log["tasks/backbone_sha256"]) == [digest] * 3
    # Past adapters never change; IPC-frozen pairs get no adapter (and fixed omegas) later.
    saved = [torch.load(out / "adapters" / f"task{t:03d}.pt", weights_only=True) for t in range(3)]
    for t in range(3):
        for later in range(t + 1, 3):
            for name, value in saved[t]["state"].items():
                if name.startswith(f"tasks.{t}."):
                    assert torch.equal(saved[later]["state"][name], value), (name, later)
    for t in (1, 2):
        state = saved[t]["state"]
        for key in frozen_before[t]:
            assert f"tasks.{t}.lora_A.{key}" not in state and f"tasks.{t}.lora_B.{key}" not in state
            # Its omegas are the last trained ones, then omega_init (1) for the adapter frozen with it.
            omega = state[f"tasks.{t}.omega.{key}"]
            prev = saved[t - 1]["state"].get(f"tasks.{t - 1}.omega.{key}", torch.empty(0))
            assert torch.equal(omega[:len(prev)], prev) and torch.equal(omega[len(prev):],
                                                                       torch.ones(len(omega) - len(prev)))
        trained = {k.split(".")[-1] for k in state if k.startswith(f"tasks.{t}.lora_A.")}
        assert trained == {f"{layer}_{m}" for layer in range(DEPTH)
                           for m in ("q", "k", "v", "proj", "fc1", "fc2")} - frozen_before[t]
    assert saved[2]["structure"]["frozen_at"].count(-1) == 12 - 7
    # Every adapter a task trained learnt something: B starts at zero (as in LoRA), and stays
    # zero in an adapter whose update never reaches the output or the optimizer.
    for t in range(3):
        b = {k: v for k, v in saved[t]["state"].items() if k.startswith(f"tasks.{t}.lora_B.")}
        assert len(b) == 12 - len(frozen_before[t])
        assert not [k for k, v in b.items() if not v.abs().max() > 0], (t, "adapters that never trained")


@pytest.mark.parametrize("backend", ["horovod", "torch", "mpi"])
def test_each_task_is_learnt(both_backends, backend):
    assert_each_task_learnt(both_backends[backend][1])


@pytest.mark.parametrize("other", ["torch", "mpi"])
def test_backends_give_the_same_losses(both_backends, other):
    (_, h), (_, t) = both_backends["horovod"], both_backends[other]
    assert t["attrs"]["backend"] == other
    np.testing.assert_allclose(h["epochs/loss"], t["epochs/loss"], rtol=1e-4)
    np.testing.assert_allclose(h["eval/top1"], t["eval/top1"], atol=1e-6)
    assert list(h["tasks/ipc_frozen_keys"]) == list(t["tasks/ipc_frozen_keys"])


def test_analyze_shows_bytes_and_frozen_pairs(both_backends):
    out, _ = both_backends["torch"]
    r = run_cmd(hpccl_cmd("analyze", str(out)))
    assert r.returncode == 0, r.stderr
    assert "allreduced gradients:" in r.stdout and "of full fine-tuning" in r.stdout
    assert "IPC-frozen (layer, matrix) pairs per task: T0: 3" in r.stdout
    r = run_cmd(hpccl_cmd("analyze", "--compare", str(out), str(both_backends["horovod"][0])))
    assert "allreduce kB/step" in r.stdout and "% of full FT" in r.stdout


@pytest.mark.parametrize("variant, sets", [
    ("shared", ["lora.shared=true"]),
    ("finetune", ["learner=finetune"]),
])
def test_baselines_run_in_the_same_harness(tmp_path, pretrained, variant, sets):
    out, log = run_lorac(tmp_path, pretrained, variant, *sets, "runtime.backend=torch")
    assert log["attrs"]["status"] == "complete"
    assert_each_task_learnt(log)
    vit = torch.load(pretrained, weights_only=True)
    full = 4 * sum(v.numel() for v in vit.values())
    if variant == "finetune":
        assert list(log["tasks/allreduce_bytes_per_step"]) == [full] * 3
    else:   # one adapter, trained on and on: the same bytes every task, no omegas, nothing frozen
        per_task = list(log["tasks/allreduce_bytes_per_step"])
        assert len(set(per_task)) == 1 and per_task[0] < full
        assert list(log["tasks/ipc_frozen_total"]) == [0, 0, 0]
        assert list(log["tasks/adapter_tasks"]) == [1, 1, 1]


def test_resumed_run_equals_uninterrupted_run(tmp_path, pretrained):
    job = job_file(tmp_path, model={"pretrained": str(pretrained)}, train={"epochs": 3})
    full, part = tmp_path / "full", tmp_path / "part"
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(full)), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    proc = subprocess.Popen(hpccl_cmd("run", job, "-n", "2", "--out", str(part)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:   # mid-task 1: adapters, omegas, optimizer and IPC scores restored
        lines.append(line)
        if "task 1 epoch 1:" in line:
            proc.send_signal(signal.SIGUSR1)
            break
    rest, _ = proc.communicate(timeout=240)
    assert proc.returncode == 99, "".join(lines) + rest
    r = run_cmd(hpccl_cmd("run", "--resume", str(part), "-n", "2"), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = read_h5(str(full / "log.h5")), read_h5(str(part / "log.h5"))
    assert b["attrs"]["status"] == "complete" and len(b["resumes/task"]) == 1
    np.testing.assert_array_equal(a["eval/top1"], b["eval/top1"])
    np.testing.assert_array_equal(a["epochs/loss"], b["epochs/loss"])
    assert list(a["tasks/ipc_frozen_keys"]) == list(b["tasks/ipc_frozen_keys"])


def test_run_without_the_pretrained_file_says_how_to_make_it(tmp_path):
    job = job_file(tmp_path)
    r = run_cmd(hpccl_cmd("run", job, "-n", "2"), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "model.pretrained" in r.stderr and "does not exist" in r.stderr and "hpccl pretrain" in r.stderr
    r = run_cmd(hpccl_cmd("validate", job), timeout=60)
    assert r.returncode == 2 and "hpccl pretrain" in r.stderr


def test_pretrain_needs_a_disjoint_class_subset(tmp_path):
    job = job_file(tmp_path, scenario={"classes": None, "num_tasks": 3})
    r = run_cmd(hpccl_cmd("pretrain", job), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pretrain.classes" in r.stderr and "scenario.classes" in r.stderr
