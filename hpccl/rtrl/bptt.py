"""Plain (truncated) back-propagation through time, the reference for the RTRL engines.

Same interface as :class:`~hpccl.rtrl.rtrl.RTRLLearner`: ``reset`` / ``step`` / ``flush``.
The graph of the current window is kept by autograd; :meth:`flush` back-propagates it
(truncation at update boundaries and at sequence ends) and detaches the state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cell import EGRUNet
from .rtrl import StepOut


class _SavedBytes:
    """Counts the bytes autograd stores for the backward pass (deduplicated by storage),
    i.e. BPTT's activation memory, which grows with the window length."""

    def __init__(self):
        self.seen: set = set()
        self.bytes = 0

    def pack(self, t: torch.Tensor):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in self.seen:
            self.seen.add(key)
            self.bytes += t.numel() * t.element_size()
        return t

    @staticmethod
    def unpack(t):
        return t


class BPTTLearner:
    mode = "bptt"

    def __init__(self, net: EGRUNet):
        self.net = net
        self.n_loss = 0
        self._losses: list[torch.Tensor] = []
        self._saved = _SavedBytes()
        self._Ue = None
        self.reset()

    def reset(self) -> None:
        self.flush_graph()
        self.c = self.net.init_state(1)

    def flush_graph(self) -> None:
        self._losses = []
        self._saved = _SavedBytes()
        self._Ue = None

    def step(self, x: torch.Tensor, target: int | None = None) -> StepOut:
        net, cell = self.net, self.net.cell
        n, d = cell.hidden_size, cell.input_size
        x = x.to(cell.W.dtype).reshape(1, -1)
        with torch.autograd.graph.saved_tensors_hooks(self._saved.pack, self._saved.unpack):
            if self._Ue is None:  # once per window: the masked weights are shared by all steps
                self._Ue = cell.U * cell.mask
            c = cell(x, self.c, Ue=self._Ue)
            o, y, _ = cell.events(c, differentiable=True)
            logits = net.readout(y)[0]
            loss_val = None
            if target is not None:
                loss = F.cross_entropy(logits[None], torch.tensor([int(target)], device=c.device))
                self._losses.append(loss)
                loss_val = float(loss.detach())
                self.n_loss += 1
        self.c = c
        fwd = 3 * n * (n + d)
        stats = {
            "active": float(o.detach().mean()) if cell.activity_sparse else 1.0,
            "relevant": 1.0,
            # estimate: autograd runs dense products, backward ~ 2x forward
            "macs": 2 * fwd,
            "macs_fwd": fwd,
            "mem_bytes": self._saved.bytes,
        }
        return StepOut(loss_val, int(logits.detach().argmax()), stats)

    def flush(self) -> int:
        """Back-propagate the window's losses into ``param.grad``; truncate the graph."""
        if self._losses:
            torch.stack(self._losses).sum().backward()
        self.c = self.c.detach()
        self.flush_graph()
        k, self.n_loss = self.n_loss, 0
        return k
