"""Exact real-time recurrent learning (RTRL) for the EGRU, dense and sparse.

The influence matrix ``M_t = dc_t/dtheta`` ([N, P]) is carried forward with

    M_t = J_t M_{t-1} + Mbar_t,   J_t = dc_t/dc_{t-1},   Mbar_t = immediate dc_t/dtheta

and the gradient of a loss at step t is ``(dL_t/dc_t) M_t`` (+ the readout's and the
threshold's immediate terms). With ``s_j = dy_j/dc_j = o_j + c_j psi(c_j - thr_j)`` and
``G[k, j] = du_k Ue_u[k,j] + dr_k Ue_r[k,j] + dz_k r_k Ue_z[k,j]`` the Jacobian is

    J[k, j] = delta_kj (1 - u_k)(1 - thr_k psi_k)  +  G[k, j] s_j

Sparse RTRL (Subramoney et al. 2023) uses that
* column j of the off-diagonal part is zero unless unit j was active or inside the
  pseudo-derivative support at t-1 (s_j != 0) -- activity sparsity;
* G[k, j] is zero wherever the recurrent mask is zero -- parameter sparsity;
* masked weights are no parameters at all, so M has columns only for unmasked weights.
So the sparse engine keeps M as [N, P_eff] (P_eff = P restricted to unmasked weights) and
computes ``diag * M + A @ M`` with A a CSR matrix holding only the mask entries in
relevant columns: cost ~ (N + nnz(A)) * P_eff instead of N^2 * P. The dense engine is the
textbook algorithm (full J, full P, masked weights included) and serves as reference.

Column layout of M (both engines; ``E`` = number of recurrent entries tracked: all N^2
for dense, the mask's non-zeros for sparse, row-major (k, j) order):
    [W (g, k, i): 3*N*D | U (e, g): 3*E | b (g, k): 3*N | thr (j): N if learned]
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .cell import EGRUNet, pseudo_derivative


def _csr(crow, col, val, n: int) -> torch.Tensor:
    # CSR tensors are "beta" in torch; construction and addmm with a strided matrix are
    # stable on CPU and CUDA, so silence that notice (torch emits it once per process).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, val, (n, n), check_invariants=False)


class ParamLayout:
    """Maps the cell's parameters to columns of the influence matrix."""

    def __init__(self, net: EGRUNet, sparse: bool):
        cell = net.cell
        n, d = cell.hidden_size, cell.input_size
        dev = cell.W.device
        if sparse:
            rows, cols = cell.mask.nonzero(as_tuple=True)  # row-major, so rows are sorted
        else:
            rows = torch.arange(n, device=dev).repeat_interleave(n)
            cols = torch.arange(n, device=dev).repeat(n)
        self.n, self.d, self.sparse = n, d, sparse
        self.rows, self.cols = rows, cols
        self.E = int(rows.numel())
        self.learn_thr = cell.learn_threshold
        self.w_off = 0
        self.u_off = 3 * n * d
        self.b_off = self.u_off + 3 * self.E
        self.t_off = self.b_off + 3 * n
        self.P = self.t_off + (n if self.learn_thr else 0)
        # Size of the textbook (dense) parameter vector, for reporting ratios.
        self.P_dense = 3 * n * d + 3 * n * n + 3 * n + (n if self.learn_thr else 0)

    def section_views(self, M: torch.Tensor):
        """Writable views of M's sections shaped for the Mbar updates."""
        n, d, E = self.n, self.d, self.E
        Mw = M[:, self.w_off:self.u_off].view(n, 3, n, d)
        Mu = M[:, self.u_off:self.b_off].view(n, E, 3)
        Mb = M[:, self.b_off:self.t_off].view(n, 3, n)
        Mt = M[:, self.t_off:self.P] if self.learn_thr else None
        return Mw, Mu, Mb, Mt

    def to_dense_grads(self, flat: torch.Tensor, net: EGRUNet) -> dict:
        """Scatter a flat gradient (layout above) into tensors shaped like the parameters."""
        n, d, E = self.n, self.d, self.E
        cell = net.cell
        gW = flat[self.w_off:self.u_off].view(3, n, d)
        gU = torch.zeros_like(cell.U)
        gU[:, self.rows, self.cols] = flat[self.u_off:self.b_off].view(E, 3).t()
        # The effective weight is U * mask: masked entries get exactly zero gradient.
        gU = gU * cell.mask
        out = {"W": gW, "U": gU, "b": flat[self.b_off:self.t_off].view(3, n)}
        if self.learn_thr:
            out["thr"] = flat[self.t_off:self.P]
        return out


@dataclass
class StepOut:
    loss: float | None
    pred: int
    stats: dict


class RTRLLearner:
    """Online gradient of an :class:`EGRUNet` by exact RTRL.

    ``sparse=True``: sparse RTRL (activity + parameter sparsity); ``False``: dense RTRL.
    One stream at a time (batch 1): online learning, and each unit's relevant set is
    stream specific. Gradients are summed into an internal buffer; :meth:`flush` adds
    them to ``param.grad`` and returns the number of loss terms they hold.
    """

    def __init__(self, net: EGRUNet, sparse: bool = True, track_nnz: bool = True,
                 spmm: str = "csr", auto_density: float = 0.1):
        if spmm not in ("csr", "dense", "auto"):
            raise ValueError("spmm must be 'csr', 'dense' or 'auto'")
        self.net, self.sparse, self.track_nnz = net, bool(sparse), bool(track_nnz)
        # How the sparse engine multiplies A (relevant columns of J) into M:
        # "csr": sparse-dense product, does exactly nnz(A) * P_eff multiply-adds;
        # "dense": A scattered into an N x N matrix and a GEMM (N^2 * P_eff, but GEMM runs
        # ~10x more multiply-adds per second than CSR on CPUs); "auto": GEMM when
        # nnz(A) > auto_density * N^2. All three give the same (exact) result.
        self.spmm, self.auto_density = spmm, float(auto_density)
        self.layout = ParamLayout(net, self.sparse)
        p = net.cell.W
        self.dtype, self.device = p.dtype, p.device
        self._eidx = torch.arange(self.layout.E, device=self.device)
        # Mask value of each tracked entry (all ones in the sparse layout).
        self._maskc = net.cell.mask[self.layout.rows, self.layout.cols]
        self._wkey, self._w = None, None
        self.grad_flat = torch.zeros(self.layout.P, dtype=self.dtype, device=self.device)
        self.g_ro_w = torch.zeros_like(net.readout.weight)
        self.g_ro_b = torch.zeros_like(net.readout.bias)
        self.n_loss = 0
        self.reset()

    @property
    def mode(self) -> str:
        return "rtrl_sparse" if self.sparse else "rtrl_dense"

    def reset(self) -> None:
        """Start a new sequence: zero state and zero influence."""
        self.c = self.net.init_state()
        self.M = torch.zeros(self.net.hidden_size, self.layout.P, dtype=self.dtype,
                             device=self.device)

    def influence_bytes(self) -> int:
        return self.M.numel() * self.M.element_size()

    def _weights(self):
        """(U * mask [3,N,N], tracked entries [3,E]); recomputed only after an update."""
        U = self.net.cell.U
        key = (U._version, U.data_ptr())
        if self._wkey != key:
            Ue = U.detach() * self.net.cell.mask
            self._w = (Ue, Ue[:, self.layout.rows, self.layout.cols].contiguous())
            self._wkey = key
        return self._w

    # -- one step -----------------------------------------------------------------------
    @torch.no_grad()
    def step(self, x: torch.Tensor, target: int | None = None) -> StepOut:
        net, cell, L = self.net, self.net.cell, self.layout
        n = cell.hidden_size
        x = x.to(self.dtype).reshape(-1)
        c_prev, M = self.c, self.M
        Ue, Uc = self._weights()

        # Previous events and their derivatives w.r.t. c_prev.
        o_p, y_p, c_res = cell.events(c_prev)
        if cell.activity_sparse:
            psi_p = pseudo_derivative(c_prev - cell.thr, cell.dampening, cell.pseudo_support)
            s = o_p + c_prev * psi_p          # dy_prev/dc_prev
            q = 1.0 - cell.thr * psi_p        # dc_res/dc_prev
        else:
            psi_p = None
            s = q = torch.ones_like(c_prev)

        # Forward. Event-based in the sparse engine: only columns of senders with y != 0.
        if self.sparse:
            act = y_p.nonzero().squeeze(1)
            h = Ue[:, :, act] @ y_p[act]                       # [3, N]
            macs_fwd = 3 * n * int(act.numel())
        else:
            h = Ue @ y_p
            macs_fwd = 3 * n * n
        a = cell.W @ x + cell.b                                 # [3, N]
        macs_fwd += 3 * n * cell.input_size
        u = torch.sigmoid(a[0] + h[0])
        r = torch.sigmoid(a[1] + h[1])
        z = torch.tanh(a[2] + r * h[2])
        c = (1 - u) * c_res + u * z

        # Local derivatives: dc/da_u, dc/da_r, dc/da_z, and dc/dh_z (multiplies U_z).
        du = (z - c_res) * u * (1 - u)
        dz = u * (1 - z * z)
        dr = dz * h[2] * r * (1 - r)
        d3 = torch.stack((du, dr, dz * r))                      # factors of U_u, U_r, U_z
        diag = (1 - u) * q

        # M <- J M  (the expensive part).
        if self.sparse:
            rel = s != 0
            e = rel[L.cols].nonzero().squeeze(1)               # mask entries in relevant columns
            er, ec = L.rows[e], L.cols[e]
            G = (d3[:, er] * Uc[:, e]).sum(0)                  # G[k, j] on those entries
            vals = G * s[ec]
            nnz = int(e.numel())
            gemm = self.spmm == "dense" or (self.spmm == "auto"
                                            and nnz > self.auto_density * n * n)
            if nnz and gemm:
                A = torch.zeros(n, n, dtype=self.dtype, device=self.device)
                A[er, ec] = vals
                M_new = torch.addmm(diag[:, None] * M, A, M)
                macs = (n + n * n) * L.P + 4 * nnz
            elif nnz:
                crow = torch.zeros(n + 1, dtype=torch.int64, device=self.device)
                torch.cumsum(torch.bincount(er, minlength=n), 0, out=crow[1:])
                A = _csr(crow, ec, vals, n)
                M_new = torch.addmm(diag[:, None] * M, A, M)
                macs = (n + nnz) * L.P + 4 * nnz
            else:
                M_new = diag[:, None] * M
                macs = n * L.P
            n_rel = int(rel.sum())
        else:
            J = (d3[:, :, None] * Ue).sum(0) * s[None, :] + torch.diag(diag)
            M_new = J @ M
            macs = n * n * L.P + 4 * n * n
            n_rel = int((s != 0).sum())

        # M += Mbar: only each unit's own parameters have an immediate effect on it.
        Mw, Mu, Mb, Mt = L.section_views(M_new)
        dW = torch.stack((du, dr, dz))                          # dc/d(W x + b), per gate
        torch.diagonal(Mw, dim1=0, dim2=2).add_((dW[:, :, None] * x).transpose(1, 2))
        torch.diagonal(Mb, dim1=0, dim2=2).add_(dW)
        macs += 3 * n * (cell.input_size + 1)
        if self.sparse:  # dc_k/dU[k, j] is proportional to y_prev_j: active senders only
            e2 = (y_p != 0)[L.cols].nonzero().squeeze(1)
            er2 = L.rows[e2]
            Mu.index_put_((er2, e2), (d3[:, er2] * y_p[L.cols[e2]]).t(), accumulate=True)
            macs += 3 * int(e2.numel())
        else:
            Mu.index_put_((L.rows, self._eidx),
                          (d3[:, L.rows] * y_p[L.cols] * self._maskc).t(), accumulate=True)
            macs += 3 * L.E
        if Mt is not None:
            # thr_j moves y_prev_j by -c_j psi_j (seen by every unit k through G[k, j]) and
            # unit j's own reset by -o_j + thr_j psi_j (diagonal).
            torch.diagonal(Mt).add_((1 - u) * (-o_p + cell.thr * psi_p))
            g_thr = -c_prev * psi_p
            if self.sparse:
                # g_thr_j != 0 only inside the support, where s_j != 0 too: the entries
                # (er, ec) and G of J's relevant columns cover every non-zero.
                Mt.index_put_((er, ec), G * g_thr[ec], accumulate=True)
                macs += nnz + n
            else:
                Mt.add_((d3[:, :, None] * Ue).sum(0) * g_thr)
                macs += 4 * n * n + n
        self.M, self.c = M_new, c

        # Readout and loss; the gradient is dL/dc_t M_t plus immediate terms.
        o, y, _ = cell.events(c)
        logits = net.readout(y)
        loss_val = None
        if target is not None:
            tgt = int(target)
            logp = torch.log_softmax(logits, -1)
            loss_val = -float(logp[tgt])
            dlog = logp.exp()
            dlog[tgt] -= 1.0
            self.g_ro_w.add_(dlog[:, None] * y)
            self.g_ro_b.add_(dlog)
            dLdy = net.readout.weight.t() @ dlog
            if cell.activity_sparse:
                psi = pseudo_derivative(c - cell.thr, cell.dampening, cell.pseudo_support)
                dLdc = dLdy * (o + c * psi)
            else:
                dLdc = dLdy
            if self.sparse:  # units with dy/dc = 0 pass no gradient: skip their rows of M
                idx = dLdc.nonzero().squeeze(1)
                self.grad_flat.add_(dLdc[idx] @ M_new[idx])
                macs += int(idx.numel()) * L.P
            else:
                self.grad_flat.add_(dLdc @ M_new)
                macs += n * L.P
            if L.learn_thr:  # immediate effect of thr on y_t = H(c_t - thr) c_t
                self.grad_flat[L.t_off:L.P].add_(dLdy * (-c * psi))
            self.n_loss += 1

        stats = {
            "active": float(o.mean()) if cell.activity_sparse else 1.0,
            "relevant": n_rel / n,
            "macs": macs,
            "macs_fwd": macs_fwd,
            "mem_bytes": self.influence_bytes(),
        }
        if self.track_nnz:
            stats["influence_nnz"] = int(torch.count_nonzero(M_new)) / (n * L.P_dense)
        return StepOut(loss_val, int(logits.argmax()), stats)

    def flush(self) -> int:
        """Add the accumulated gradients to ``param.grad``; return the loss-term count."""
        net = self.net
        g = self.layout.to_dense_grads(self.grad_flat, net)
        cell = net.cell
        pairs = [(cell.W, g["W"]), (cell.U, g["U"]), (cell.b, g["b"]),
                 (net.readout.weight, self.g_ro_w), (net.readout.bias, self.g_ro_b)]
        if "thr" in g:
            pairs.append((cell.thr, g["thr"]))
        for p, gp in pairs:
            if p.grad is None:
                p.grad = gp.detach().clone()
            else:
                p.grad += gp
        self.grad_flat.zero_()
        self.g_ro_w.zero_()
        self.g_ro_b.zero_()
        k, self.n_loss = self.n_loss, 0
        return k
