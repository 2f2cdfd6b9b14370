"""``kind: online_rnn`` -- online learning of an EGRU by sparse RTRL, dense RTRL or BPTT.

A job file::

    name: rnn_spiral
    kind: online_rnn
    seed: 0
    rnn:
      task: spiral            # spiral | digits | file
      hidden: 32
      weight_sparsity: 0.5
      mode: rtrl_sparse       # rtrl_sparse | rtrl_dense | bptt
      lr: 0.01
      num_sequences: 600      # per rank
      eval_every: 100
    runtime: {backend: mpi}   # the default and only choice: updates averaged with MPI

Keys of the ``rnn`` section (defaults in brackets); no ``data`` section is needed.

Task
  ``task`` [spiral]: ``spiral`` (rotation sense of a decaying 2-D spiral, 2 classes),
  ``digits`` (scikit-learn's 8x8 digits read row by row: T=8, D=8, 10 classes) or ``file``.
  ``path`` [null]: with ``task: file``, an HDF5 file holding ``x`` [N, T, D] (float) and
  ``y`` [N] (int labels 0..K-1); optional ``x_test``/``y_test`` (else a seeded split of
  ``test_fraction``) and a root attribute ``num_classes`` (else max(y)+1).
  ``num_examples`` [4096], ``seq_len`` [17]: size of the generated spiral set.
  ``test_fraction`` [0.2]: held-out share, split with the job seed.

Network (EGRU, Subramoney et al. 2023; defaults are the EGRU paper's)
  ``hidden`` [32]: units. ``weight_sparsity`` [0.0]: share of recurrent weights fixed at
  zero by a random mask, in [0, 1). ``activity_sparse`` [true]: event-based units (false:
  a plain GRU, every unit always active). ``thr_mean`` [0.3]: mean of the Beta(alpha, 3)
  initial thresholds. ``learn_threshold`` [true]. ``pseudo_support`` [1.0] and
  ``dampening`` [0.7]: half-width and height of the piecewise-linear pseudo-derivative.
  ``input_gain`` [1.0]: scale of the input weights at initialisation (3 suits the spiral,
  whose amplitude decays as 1/(1+t)).

Learning
  ``mode`` [rtrl_sparse]: ``rtrl_sparse`` (exact RTRL exploiting activity and parameter
  sparsity), ``rtrl_dense`` (exact dense RTRL) or ``bptt`` (reference).
  ``update_every`` [null]: steps between parameter updates (1 = fully online); null = once
  at the end of every sequence. ``loss_at`` [last]: ``last`` or ``all`` steps.
  ``optimizer`` [adam]: ``adam`` | ``sgd``; ``lr`` [0.01]; ``grad_clip`` [null].
  ``num_sequences`` [1000]: stream length *per rank*. ``eval_every`` [200]: sequences per
  rank between test-set evaluations, progress lines and log flushes. ``acc_window`` [100]:
  sequences in the running stream accuracy. ``track_nnz`` [true]: count the influence
  matrix's non-zeros every step (one pass over it). ``spmm`` [csr]: product kernel of the
  sparse engine: ``csr`` multiplies only the non-zero Jacobian entries; ``dense`` scatters
  them into an N x N GEMM (more multiply-adds, often faster on CPUs for small N); ``auto``
  picks GEMM above 10% density. Same result; the logged MACs are those the kernel did.
  ``save_state`` [true]: rank 0 writes the final network to ``RUN/rnn_state.pt``.

Parallelism: every rank runs its own stream (its shard of the training examples, shuffled
with a seed made of the job seed and the rank); all ranks start from the same network (job
seed) and at every update the gradient sums and loss counts are averaged over ranks with one
MPI allreduce on ``world.comm`` (``world.collectives.mean_tensors``; ``runtime.backend`` is
``mpi`` for this kind), so the replicas stay identical. Every rank runs the same number
of sequences of the same length, hence the same number of updates. Unless
``runtime.threads_per_rank`` is set, each rank uses one torch thread (per-step tensors are
tiny). Resuming (``--resume``) is not supported for this kind.

Logs (``log.h5``, rank 0; conventions of :class:`hpccl.continual.job.RunRecorder`): root attributes
``schema_version``, ``kind=run``, ``job_kind=online_rnn``, ``status``, ``name``,
``config_yaml``, ``command_line``, ``world_size``, ``num_nodes``, ``hostnames``, ``backend``,
``device``, ``versions``, ``start_time``, ``mode``, ``task``, ``num_classes``,
``chance_accuracy``, ``seq_len``, ``input_size``, ``hidden``, ``weight_density``,
``num_params``, ``num_train``, ``num_test``, ``activity_sparse``, and updated at every
evaluation ``sequences_completed`` (per rank), ``train_time_s``, ``test_accuracy``; at the end
``updates``,
``final_test_accuracy``, ``masked_weight_max_abs`` (largest |U| under the mask: 0 when masked
weights stayed zero), ``replica_max_abs_diff`` (largest parameter difference between ranks).
Tables: ``stream/{sequence, loss, correct, acc_window, acc_stream, activity, relevant,
influence_nnz, macs_per_step, mem_bytes, time_per_step, updates}`` one row per sequence of
rank 0's stream (``influence_nnz`` NaN for bptt); ``evals/{sequence, sequences_total,
test_accuracy, stream_accuracy, loss, activity, influence_nnz, macs_per_step, mem_bytes,
time_per_step, time_s, updates}`` one row per evaluation, averaged over all ranks'
sequences since the previous one (``mem_bytes`` the maximum). ``ranks/rankNNNNN.h5``: that
rank's ``evals/{sequence, sequences, correct, activity, time_s}``. Flushed every
``eval_every`` sequences.

Metrics: ``activity`` is the fraction of units emitting an event per step (1 with
``activity_sparse: false``), averaged over the sequence; ``relevant`` the fraction of units
inside the pseudo-derivative's support; ``influence_nnz`` the non-zero fraction of the
influence matrix dc/dtheta (relative to the dense parameter count); ``macs_per_step`` the
multiply-adds the learner actually did per step (forward + influence update + gradient);
``mem_bytes`` the learner's state: the influence matrix for RTRL (constant in T), the saved
activations for BPTT (grows with T).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from collections import deque

import numpy as np
import torch

from hpccl.core.errors import ConfigError
from hpccl.core.session import RunSession

from .cell import EGRUNet
from .tasks import SequenceTask, digits_task, from_arrays, spiral_task
from .trainer import OnlineTrainer, evaluate

STREAM_KEYS = ("sequence", "loss", "correct", "acc_window", "acc_stream", "activity", "relevant",
               "influence_nnz", "macs_per_step", "mem_bytes", "time_per_step", "updates")


def load_task(rc, seed: int, source: str = "rnn") -> tuple[SequenceTask, SequenceTask]:
    """(train, test) tasks of the ``rnn`` section ``rc``."""
    if rc.task == "spiral":
        return spiral_task(rc.num_examples, seq_len=rc.seq_len, seed=seed).split(rc.test_fraction, seed)
    if rc.task == "digits":
        return digits_task().split(rc.test_fraction, seed)
    return load_h5_task(rc.path, rc.test_fraction, seed)


def check_input(cfg, source: str) -> list[str]:
    """Before any rank starts: a 'task: file' job's HDF5 file is read as the ranks will read
    it, so a wrong layout is exit 2 naming the file, not exit 1 after launch."""
    rc = cfg.rnn
    if rc.task == "file":
        load_h5_task(rc.path, rc.test_fraction, cfg.seed)
    return []


def load_h5_task(path: str, test_fraction: float, seed: int):
    import h5py
    where = f"key 'rnn.path' ({path})"
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ConfigError(f"{where}: not a readable HDF5 file ({e}).") from None
    with f:
        for name in ("x", "y"):
            if name not in f:
                raise ConfigError(f"{where}: expected datasets 'x' [N, T, D] and 'y' [N], "
                                  f"found {sorted(f.keys())}.")
        x, y = f["x"][...], f["y"][...]
        test = (f["x_test"][...], f["y_test"][...]) if "x_test" in f and "y_test" in f else None
        k = f.attrs.get("num_classes")
    if x.ndim != 3 or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ConfigError(f"{where}: expected x [N, T, D] and y [N], found x {list(x.shape)} "
                          f"and y {list(y.shape)}.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ConfigError(f"{where}: expected integer labels >= 0 in y, found {y.dtype} "
                          f"(min {y.min()}).")
    ys = y if test is None else np.concatenate([y, test[1]])
    k = int(k) if k is not None else int(ys.max()) + 1
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        if test is None:
            return from_arrays(x, y, k, name).split(test_fraction, seed)
        return from_arrays(x, y, k, name), from_arrays(test[0], test[1], k, name)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}.") from None


def _flat_params(net) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1).cpu().double() for p in net.parameters()]).numpy()


class _Interval:
    """Sums of this rank's sequence records since the last evaluation."""

    FIELDS = ("n", "correct", "loss", "activity", "nnz", "n_nnz", "macs", "time", "steps")

    def __init__(self):
        self.v = dict.fromkeys(self.FIELDS, 0.0)
        self.mem = 0

    def add(self, r):
        v = self.v
        v["n"] += 1
        v["correct"] += r["correct"]
        v["loss"] += r["loss"] if math.isfinite(r["loss"]) else 0.0
        v["activity"] += r["activity"]
        if r["influence_nnz"] is not None:
            v["nnz"] += r["influence_nnz"]
            v["n_nnz"] += 1
        v["macs"] += r["macs_per_step"] * r["steps"]
        v["time"] += r["time_per_step"] * r["steps"]
        v["steps"] += r["steps"]
        self.mem = max(self.mem, int(r["mem_bytes"]))


def run(cfg, run_dir: str, argv: list[str], world, resume: bool = False) -> dict:
    """One rank's part of an ``online_rnn`` job; returns the summary (same on every rank)."""
    session = RunSession(cfg, run_dir, argv, world, resume)
    rc = cfg.rnn
    if cfg.runtime.threads_per_rank is None:
        torch.set_num_threads(1)

    train, test = load_task(rc, cfg.seed)
    device = world.device
    net = EGRUNet(train.input_size, rc.hidden, train.num_classes, seed=cfg.seed, device=device,
                  weight_sparsity=rc.weight_sparsity, activity_sparse=rc.activity_sparse,
                  thr_mean=rc.thr_mean, pseudo_support=rc.pseudo_support, dampening=rc.dampening,
                  learn_threshold=rc.learn_threshold, input_gain=rc.input_gain)
    trainer = OnlineTrainer(net, rc.mode, update_every=rc.update_every, lr=rc.lr,
                            optimizer=rc.optimizer, loss_at=rc.loss_at,
                            allreduce_mean=world.collectives.mean_tensors if world.size > 1 else None,
                            grad_clip=rc.grad_clip, track_nnz=rc.track_nnz,
                            acc_window=rc.acc_window, spmm=rc.spmm)
    test_x, test_y = test.x[world.rank::world.size], test.y[world.rank::world.size]
    n_test = int(world.allreduce_sum([len(test_y)])[0])

    session.open_logs(rank_attrs={"device": str(device), "job_kind": "online_rnn"}, run_attrs={
            "device": str(device),
            "mode": rc.mode, "task": train.name, "num_classes": train.num_classes,
            "chance_accuracy": float(np.bincount(test.y, minlength=train.num_classes).max() / len(test)),
            "seq_len": train.seq_len, "input_size": train.input_size, "hidden": rc.hidden,
            "weight_density": net.cell.density, "activity_sparse": rc.activity_sparse,
            "num_params": sum(p.numel() for p in net.parameters()),
            "num_train": len(train), "num_test": len(test), "sequences_completed": 0,
            "train_time_s": 0.0})
    rank_log, log, progress = session.rank_log, session.log, session.progress
    progress.message(f"hpccl: {cfg.name}: online_rnn {rc.mode} on {train.name} "
                     f"(T={train.seq_len}, D={train.input_size}, {train.num_classes} classes), "
                     f"EGRU {rc.hidden} units, weight density {net.cell.density:.2f}, activity "
                     f"sparse {rc.activity_sparse}; {world.size} rank(s) x {rc.num_sequences} "
                     f"sequences, device {device.type}")

    interval = _Interval()
    state = {"train_time": 0.0, "last_eval": 0, "test_acc": float("nan")}

    recent = deque(maxlen=rc.acc_window)
    seen = {"n": 0, "correct": 0}

    def on_sequence(r):
        # The trainer's window and stream accuracy restart with every run() call (one per
        # evaluation interval); keep them over the whole stream here.
        recent.append(r["correct"])
        seen["n"] += 1
        seen["correct"] += r["correct"]
        r = dict(r, sequence=seen["n"], acc_window=sum(recent) / len(recent),
                 acc_stream=seen["correct"] / seen["n"])
        interval.add(r)
        if log is not None:
            log.append("stream", **{k: (float("nan") if r[k] is None else r[k]) for k in STREAM_KEYS})

    def evaluate_now(done: int):
        """Collective: test accuracy, interval metrics over all ranks, log + progress line."""
        acc_local = evaluate(net, test_x, test_y) * len(test_y) if len(test_y) else 0.0
        v = interval.v
        tot = world.allreduce_sum([acc_local] + [v[f] for f in _Interval.FIELDS])
        mem = world.collectives.max(interval.mem)
        s = dict(zip(_Interval.FIELDS, tot[1:]))
        test_acc = float(tot[0]) / max(n_test, 1)
        n, steps = max(s["n"], 1.0), max(s["steps"], 1.0)
        row = {"sequence": done, "sequences_total": done * world.size, "test_accuracy": test_acc,
               "stream_accuracy": s["correct"] / n, "loss": s["loss"] / n,
               "activity": s["activity"] / n,
               "influence_nnz": s["nnz"] / s["n_nnz"] if s["n_nnz"] else float("nan"),
               "macs_per_step": s["macs"] / steps, "mem_bytes": mem,
               "time_per_step": s["time"] / steps, "time_s": state["train_time"],
               "updates": trainer.updates}
        rank_log.append("evals", sequence=done, sequences=v["n"], correct=v["correct"],
                        activity=v["activity"] / max(v["n"], 1), time_s=state["train_time"])
        rank_log.flush()
        if log is not None:
            log.append("evals", **row)
            log.set_attrs(sequences_completed=done, train_time_s=state["train_time"],
                          test_accuracy=test_acc)
            log.flush()
        nnz = "" if math.isnan(row["influence_nnz"]) else f", influence nnz {row['influence_nnz']:.3f}"
        progress.message(
            f"seq {done}/{rc.num_sequences} (x{world.size} ranks): test acc {test_acc * 100:.1f}%, "
            f"stream acc {row['stream_accuracy'] * 100:.1f}%, loss {row['loss']:.4f}, activity "
            f"{row['activity']:.3f}{nnz}, {row['macs_per_step']:.3g} MACs/step, "
            f"{mem / 1024:.1f} KiB, {row['time_per_step'] * 1e3:.2f} ms/step")
        state["last_eval"], state["test_acc"] = done, test_acc
        interval.__init__()

    with session.running():
        done = 0
        stream = train.stream(None, seed=cfg.seed, rank=world.rank, world_size=world.size,
                              device=device)
        while done < rc.num_sequences:
            chunk = min(rc.eval_every, rc.num_sequences - done)
            world.barrier()
            t0 = time.perf_counter()
            trainer.run(itertools.islice(stream, chunk), callback=on_sequence)
            state["train_time"] += time.perf_counter() - t0
            done += chunk
            evaluate_now(done)
        # Checks that the run did what sparse RTRL promises: masked weights never moved, and
        # the replicas stayed identical.
        cell = net.cell
        off = cell.mask == 0
        masked_max = float(cell.U.detach()[:, off].abs().max()) if bool(off.any()) else 0.0
        flat = _flat_params(net)
        ref = world.comm.bcast(flat if world.is_root else None, root=0)
        replica_diff = world.collectives.max(float(np.max(np.abs(flat - ref))) if flat.size else 0.0)
        if world.is_root and rc.save_state:
            torch.save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                        "rnn": dataclasses.asdict(rc), "input_size": train.input_size,
                        "num_classes": train.num_classes, "seed": cfg.seed},
                       os.path.join(run_dir, "rnn_state.pt"))
        if log is not None:
            log.set_attrs(final_test_accuracy=state["test_acc"], masked_weight_max_abs=masked_max,
                          replica_max_abs_diff=replica_diff, updates=trainer.updates)
    summary = {"final_test_accuracy": state["test_acc"], "sequences": rc.num_sequences,
               "sequences_total": rc.num_sequences * world.size, "updates": trainer.updates,
               "train_time_s": state["train_time"], "masked_weight_max_abs": masked_max,
               "replica_max_abs_diff": replica_diff}
    session.report(f"final test accuracy {state['test_acc'] * 100:.1f}% after {rc.num_sequences} "
                   f"sequences x {world.size} rank(s), {trainer.updates} updates, "
                   f"training time {state['train_time']:.1f}s")
    return summary
