"""Event-based GRU (EGRU) cell and the classifier used by the online learners.

Equations (one step, gates g in (u, r, z), ``Ue = U * mask``):

    o_prev = H(c_prev - thr)             event of the previous step
    y_prev = o_prev * c_prev             what the unit sends to the others (sparse)
    c_res  = c_prev - thr * o_prev       threshold reset of the internal state
    h      = Ue @ y_prev                 one masked recurrent product per gate
    u = sigmoid(W_u x + h_u + b_u)       update gate
    r = sigmoid(W_r x + h_r + b_r)       reset gate
    z = tanh(W_z x + b_z + r * h_z)      candidate ("reset after" the product)
    c = (1 - u) * c_res + u * z          new internal state; c is the recurrent state

With ``activity_sparse=False`` the unit is a plain GRU: o = 1, y = c and no reset.

Why these choices (they matter for sparse RTRL, see rtrl.py):
* the reset gate is applied after the recurrent product (as in cuDNN / EvNN), so
  dc_k/dy_j only involves U[:, k, j]; with ``r`` inside the product the Jacobian would
  pick up two-hop terms and lose the mask's sparsity pattern;
* one binary mask is shared by the three gates, so the Jacobian's off-diagonal pattern
  is exactly the mask (density d) restricted to the columns of relevant units; three
  independent masks would give a Jacobian of density 1 - (1 - d)^3.
"""
from __future__ import annotations

import math

import torch
from torch import nn

def pseudo_derivative(x: torch.Tensor, dampening: float, support: float) -> torch.Tensor:
    """Piecewise-linear surrogate for dH/dx: ``dampening * max(0, 1 - |x| / support)``.

    It is exactly zero for |x| >= support, which is what makes the backward/RTRL pass
    sparse: inactive units outside the support pass no gradient. (``support`` is the
    half-width; the EvNN code's ``pseudo_derivative_support`` multiplies |x| instead, so
    the two agree at the default 1.0.)
    """
    return dampening * torch.clamp(1.0 - x.abs() / support, min=0.0)


class SpikeFunction(torch.autograd.Function):
    """Heaviside step forward, :func:`pseudo_derivative` backward (used by BPTT)."""

    @staticmethod
    def forward(ctx, x, dampening: float, support: float):
        ctx.save_for_backward(x)
        ctx.dampening, ctx.support = dampening, support
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * pseudo_derivative(x, ctx.dampening, ctx.support), None, None


def spike(x: torch.Tensor, dampening: float, support: float) -> torch.Tensor:
    return SpikeFunction.apply(x, dampening, support)


class EGRUCell(nn.Module):
    """EGRU cell with a fixed random binary mask on the recurrent weights.

    Parameters are kept as dense tensors (``W [3,N,D]``, ``U [3,N,N]``, ``b [3,N]``,
    ``thr [N]``) so that every learner and any torch optimizer can use the same module;
    masked entries of ``U`` are zero and receive exactly zero gradient in every mode, so
    they never change. The sparse RTRL engine only ever touches the unmasked entries.
    """

    def __init__(self, input_size: int, hidden_size: int, *, weight_sparsity: float = 0.0,
                 activity_sparse: bool = True, thr_mean: float = 0.3,
                 pseudo_support: float = 1.0, dampening: float = 0.7,
                 learn_threshold: bool = True, input_gain: float = 1.0,
                 generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        if not 0.0 <= weight_sparsity < 1.0:
            raise ValueError(f"weight_sparsity must be in [0, 1), got {weight_sparsity}")
        if not 0.0 < thr_mean < 1.0:
            raise ValueError(f"thr_mean must be in (0, 1), got {thr_mean}")
        if pseudo_support <= 0:
            raise ValueError("pseudo_support must be > 0")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.weight_sparsity = float(weight_sparsity)
        self.activity_sparse = bool(activity_sparse)
        self.pseudo_support, self.dampening = float(pseudo_support), float(dampening)
        # Thresholds only matter (and only get a gradient) when events exist.
        self.learn_threshold = bool(learn_threshold) and self.activity_sparse
        n, d = self.hidden_size, self.input_size
        g = generator
        # Draw on the CPU so that a seed gives the same network on every device and rank.
        kw = dict(dtype=dtype, device="cpu")

        density = 1.0 - self.weight_sparsity
        mask = (torch.rand(n, n, generator=g, **kw) < density).to(dtype)
        # input_gain > 1 helps inputs of small amplitude (the spiral decays as 1/(1+t))
        # cross the thresholds at all; without events y = 0 and only the
        # pseudo-derivative carries a learning signal.
        lim_in = input_gain / math.sqrt(max(d, 1))
        # Scale by the expected fan-in so sparse and dense nets start with the same
        # pre-activation variance.
        lim_rec = 1.0 / math.sqrt(max(density * n, 1.0))
        W = (torch.rand(3, n, d, generator=g, **kw) * 2 - 1) * lim_in
        U = (torch.rand(3, n, n, generator=g, **kw) * 2 - 1) * lim_rec * mask
        b = torch.zeros(3, n, **kw)
        # Thresholds ~ Beta(alpha, 3) with mean thr_mean (as in the EGRU reference code);
        # a threshold near 0 would make the unit fire on any positive state, so the draw
        # is clipped at 0.05.
        beta = 3.0
        alpha = beta * thr_mean / (1.0 - thr_mean)
        thr = _beta_sample(alpha, beta, n, g).to(dtype).clamp(0.05, 1.0)
        self.W = nn.Parameter(W)
        self.U = nn.Parameter(U)
        self.b = nn.Parameter(b)
        if self.learn_threshold:
            self.thr = nn.Parameter(thr)
        else:
            self.register_buffer("thr", thr)
        self.register_buffer("mask", mask)
        if device is not None:
            self.to(device)

    @property
    def density(self) -> float:
        return float(self.mask.mean())

    def events(self, c: torch.Tensor, differentiable: bool = False):
        """(o, y, c_reset) for state ``c``; o = 1 and no reset when activity is off."""
        if not self.activity_sparse:
            return torch.ones_like(c), c, c
        if differentiable:
            o = spike(c - self.thr, self.dampening, self.pseudo_support)
        else:
            o = (c > self.thr).to(c.dtype)
        return o, o * c, c - self.thr * o

    def forward(self, x: torch.Tensor, c_prev: torch.Tensor,
                Ue: torch.Tensor | None = None) -> torch.Tensor:
        """One differentiable step (autograd / BPTT). x: [B, D], c_prev: [B, N] -> c [B, N].

        ``Ue`` (= U * mask) may be passed in so a multi-step graph stores it only once.
        """
        _, y_prev, c_res = self.events(c_prev, differentiable=True)
        if Ue is None:
            Ue = self.U * self.mask
        h = torch.einsum("gkj,bj->gbk", Ue, y_prev)
        a = torch.einsum("gkd,bd->gbk", self.W, x) + self.b[:, None, :]
        u = torch.sigmoid(a[0] + h[0])
        r = torch.sigmoid(a[1] + h[1])
        z = torch.tanh(a[2] + r * h[2])
        return (1 - u) * c_res + u * z

    @torch.no_grad()
    def constrain_(self) -> None:
        """Keep thresholds in a sane range after an optimizer step (EvNN clamps to [0, 1])."""
        if self.learn_threshold:
            self.thr.clamp_(0.0, 1.0)


def _beta_sample(alpha: float, beta: float, n: int, g: torch.Generator | None) -> torch.Tensor:
    # torch's Beta sampler takes no generator; derive a numpy seed from ``g`` so that the
    # same seed gives the same thresholds on every rank and device.
    import numpy as np

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g).item())
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, beta, size=n))


class EGRUNet(nn.Module):
    """EGRU cell + linear readout of y_t (the classifier trained online)."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device=None, **cell_kw):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        self.cell = EGRUCell(input_size, hidden_size, generator=g, dtype=dtype, **cell_kw)
        self.readout = nn.Linear(hidden_size, num_classes, dtype=dtype)
        with torch.no_grad():
            lim = 1.0 / math.sqrt(hidden_size)
            self.readout.weight.copy_((torch.rand(num_classes, hidden_size, generator=g,
                                                  dtype=dtype) * 2 - 1) * lim)
            self.readout.bias.zero_()
        if device is not None:
            self.to(device)

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    def init_state(self, batch: int | None = None) -> torch.Tensor:
        p = self.cell.W
        shape = (self.hidden_size,) if batch is None else (batch, self.hidden_size)
        return torch.zeros(shape, dtype=p.dtype, device=p.device)

    def forward(self, x: torch.Tensor, c0: torch.Tensor | None = None):
        """Full-sequence differentiable forward. x: [B, T, D] -> logits [B, T, C], c [B, T, N]."""
        c = self.init_state(x.shape[0]) if c0 is None else c0
        Ue = self.cell.U * self.cell.mask
        cs, logits = [], []
        for t in range(x.shape[1]):
            c = self.cell(x[:, t], c, Ue=Ue)
            _, y, _ = self.cell.events(c, differentiable=True)
            cs.append(c)
            logits.append(self.readout(y))
        return torch.stack(logits, 1), torch.stack(cs, 1)
