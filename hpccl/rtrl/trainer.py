"""Online training loop: one step at a time, parameter updates every k steps.

``OnlineTrainer(net, mode, update_every=k, lr=..., optimizer=...)`` drives one of the
learners (``rtrl_sparse``, ``rtrl_dense``, ``bptt``) over a stream of ``(x [T, D], y)``
sequences and hands a record per sequence to ``callback``. Data parallelism: every rank
runs its own stream; at each update the gradient sums and the number of loss terms are
averaged with ``allreduce_mean`` so every rank applies the same global-mean gradient and
the replicas stay identical. All ranks must therefore do the same number of updates
(same number of sequences of the same length, or ``update_every=None``). An update window
still open when ``run`` returns carries over to the next ``run`` call.
"""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable, Iterable, Sequence

import torch

from hpccl.core.errors import HpcclError
from hpccl.core.optim import make_local_optimizer

from .bptt import BPTTLearner
from .cell import EGRUNet
from .rtrl import RTRLLearner

MODES = ("rtrl_sparse", "rtrl_dense", "bptt")


def make_learner(net: EGRUNet, mode: str, track_nnz: bool = True, spmm: str = "csr"):
    if mode == "rtrl_sparse":
        return RTRLLearner(net, sparse=True, track_nnz=track_nnz, spmm=spmm)
    if mode == "rtrl_dense":
        return RTRLLearner(net, sparse=False, track_nnz=track_nnz)
    if mode == "bptt":
        return BPTTLearner(net)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _make_optimizer(optimizer, params, lr: float):
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(params)
    return make_local_optimizer(params, optimizer, lr)


class OnlineTrainer:
    """Online learner for an :class:`EGRUNet`.

    update_every: steps between parameter updates (1 = fully online RTRL); ``None`` =
        once at the end of each sequence. For BPTT the graph is also truncated there.
    loss_at: ``"last"`` (classify at the final step) or ``"all"`` (every step).
    allreduce_mean: callable averaging a list of tensors over ranks (None = single rank).
    grad_clip: max global gradient norm (None = no clipping).
    track_nnz: count the influence matrix's non-zeros every step (one pass over M).
    spmm: product kernel of the sparse engine, see :class:`~hpccl.rtrl.rtrl.RTRLLearner`.
    """

    def __init__(self, net: EGRUNet, mode: str = "rtrl_sparse", *, update_every: int | None = None,
                 lr: float = 1e-3, optimizer="adam", loss_at: str = "last",
                 allreduce_mean: Callable[[Sequence[torch.Tensor]], object] | None = None,
                 grad_clip: float | None = None, track_nnz: bool = True, acc_window: int = 100,
                 spmm: str = "csr"):
        if update_every is not None and int(update_every) < 1:
            raise ValueError("update_every must be >= 1 or None")
        if loss_at not in ("last", "all"):
            raise ValueError("loss_at must be 'last' or 'all'")
        self.net, self.mode = net, mode
        self.learner = make_learner(net, mode, track_nnz, spmm)
        self.update_every = None if update_every is None else int(update_every)
        self.loss_at, self.allreduce_mean, self.grad_clip = loss_at, allreduce_mean, grad_clip
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.optimizer = _make_optimizer(optimizer, self.params, lr)
        self.acc_window = int(acc_window)
        self.updates = 0
        self.sequences = 0
        self._window_steps = 0
        self._window_losses = 0

    # -- updates --------------------------------------------------------------------------
    def _update(self) -> None:
        self._window_losses += self.learner.flush()
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.params]
        # Non-finite gradients ride on the count's allreduce: every rank stops at this update.
        bad = torch.stack([(~torch.isfinite(g)).any() for g in grads]).any().to(grads[0].dtype)
        count = torch.stack([torch.tensor(float(self._window_losses), dtype=grads[0].dtype,
                                          device=grads[0].device), bad])
        if self.allreduce_mean is not None:
            out = self.allreduce_mean(grads + [count])
            if out is not None:  # out-of-place implementations return the averaged list
                out = list(out)
                for g, a in zip(grads, out[:-1]):
                    if a is not g:
                        g.copy_(a)
                count = out[-1]
        n = float(count.reshape(-1)[0])
        if float(count.reshape(-1)[1]) > 0:
            raise HpcclError(f"training diverged: non-finite gradients at update {self.updates + 1} "
                             f"(sequence {self.sequences + 1}). HINT: lower rnn.lr or set rnn.grad_clip.")
        if n > 0:  # mean over all loss terms of all ranks in this window
            for g in grads:
                g /= n
            if self.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.optimizer.step()
            self.net.cell.constrain_()
            self.updates += 1
        for g in grads:
            g.zero_()
        self._window_steps = 0
        self._window_losses = 0

    # -- main loop ------------------------------------------------------------------------
    def run(self, stream: Iterable, callback: Callable[[dict], None] | None = None,
            max_sequences: int | None = None) -> dict:
        """Learn online from ``stream`` of ``(x [T, D], y)``; return a summary dict."""
        L = self.learner
        recent = deque(maxlen=self.acc_window)
        n_seq = n_correct = 0
        loss_sum = 0.0
        for x, y in stream:
            if max_sequences is not None and n_seq >= max_sequences:
                break
            T = x.shape[0]
            L.reset()
            t0 = time.perf_counter()
            acts, rels, nnzs, macs, mems, losses = [], [], [], [], [], []
            for t in range(T):
                want = self.loss_at == "all" or t == T - 1
                out = L.step(x[t], y if want else None)
                st = out.stats
                acts.append(st["active"])
                rels.append(st["relevant"])
                macs.append(st["macs"])
                mems.append(st["mem_bytes"])
                if "influence_nnz" in st:
                    nnzs.append(st["influence_nnz"])
                if out.loss is not None:
                    losses.append(out.loss)
                self._window_steps += 1
                if self.update_every is not None and self._window_steps >= self.update_every:
                    self._update()
            # End of sequence: the state is reset, so BPTT must close its graph here.
            self._window_losses += L.flush()
            if self.update_every is None:
                self._update()
            dt = time.perf_counter() - t0
            correct = int(out.pred == int(y))
            recent.append(correct)
            n_seq += 1
            n_correct += correct
            loss = sum(losses) / len(losses) if losses else math.nan
            loss_sum += loss
            self.sequences += 1
            rec = {
                "sequence": self.sequences, "mode": self.mode, "steps": T,
                "loss": loss, "correct": correct,
                "acc_window": sum(recent) / len(recent), "acc_stream": n_correct / n_seq,
                "activity": sum(acts) / T, "relevant": sum(rels) / T,
                "influence_nnz": (sum(nnzs) / len(nnzs)) if nnzs else None,
                "macs_per_step": sum(macs) / T, "mem_bytes": max(mems),
                "time_per_step": dt / T, "updates": self.updates,
            }
            if callback is not None:
                callback(rec)
        return {"sequences": n_seq, "acc_stream": n_correct / max(n_seq, 1),
                "acc_window": sum(recent) / max(len(recent), 1),
                "mean_loss": loss_sum / max(n_seq, 1), "updates": self.updates}


@torch.no_grad()
def evaluate(net: EGRUNet, x, y, batch: int = 512) -> float:
    """Accuracy of the final-step prediction on arrays ``x [N, T, D]``, ``y [N]``."""
    p = net.cell.W
    x = torch.as_tensor(x, dtype=p.dtype, device=p.device)
    y = torch.as_tensor(y, device=p.device)
    correct = 0
    for i in range(0, x.shape[0], batch):
        logits, _ = net(x[i:i + batch])
        correct += int((logits[:, -1].argmax(-1) == y[i:i + batch]).sum())
    return correct / max(x.shape[0], 1)
