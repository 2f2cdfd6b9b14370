"""A scaling model for planning runs up to 128 GPUs from measurements at small scale.

Per-iteration time on p GPUs (ranks), with per-GPU batch b and r representatives:

    t_data     = b * d                       d: data loading per sample (measured)
    t_compute  = (b + r) * c * k_cpu         c: forward+backward per sample (measured);
                                             k_cpu = max(1, ranks on a node / cores of a node)
                                             (CPU runs only: ranks share the cores)
    t_step     = s                           optimizer step without communication (measured, p = 1)
    t_allreduce= 0                                                              if p = 1
               = 2 (p-1)/p * G / B_link + 2 (p-1) * a_link                     ring allreduce
                 G: gradient bytes; (a, B) of the slowest link used: intra-node if the p GPUs
                 fit on one node, else inter-node (from the site's `network` section)
    t_fetch    = r * (f_loc * phi + f_rem * (phi + a_inter + S / B_inter)) + n_rem_nodes * a_inter
                 phi: fetch cost per representative from same-node memory (measured);
                 S: bytes of a sample; f_rem = share of the buffer on other nodes = (p - g)/p for
                 p > g GPUs per node (draws are uniform over all stored samples); the headers of
                 the other nodes' ranks cost one latency each
    t_insert   = c_b * e                     e: insert cost per candidate (measured)
    exposed    = max(0, t_fetch + t_insert - (t_compute + t_allreduce))    async (overlapped)
               = t_fetch + t_insert                                         sync
    T(p)       = t_data + t_compute + t_step + t_allreduce + exposed

Throughput X(p) = p * b / T(p) new samples/s; weak scaling (b fixed): efficiency
X(p) / (p X(1)); strong scaling (global batch B fixed, b = B / p): time per epoch
E(p) = n / B * T(p) and efficiency E(1) / (p E(p)).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import yaml

from hpccl.core.errors import HpcclError


@dataclass
class Measured:
    data_s_per_sample: float
    compute_s_per_sample: float
    step_s: float
    gradient_bytes: int
    sample_bytes: int
    batch: int
    representatives: int
    candidates: int
    fetch_s_per_rep: float
    insert_s_per_candidate: float
    async_rehearsal: bool
    samples_per_epoch: int           # global training samples of one epoch (one task)
    ranks: int
    device: str


@dataclass
class Network:
    intra_latency_s: float = 5e-6     # NVLink-class defaults; a site's `network` overrides
    intra_bandwidth: float = 100e9    # bytes/s
    inter_latency_s: float = 10e-6
    inter_bandwidth: float = 25e9     # one 200 Gb/s NIC per GPU

    @classmethod
    def from_site(cls, site) -> "Network":
        """From a site's ``network`` section (hpccl.sched.sites.NetworkConfig)."""
        net = site.network
        return cls(intra_latency_s=net.intra_node_latency_us * 1e-6,
                   intra_bandwidth=net.intra_node_bandwidth_gbs * 1e9,
                   inter_latency_s=net.inter_node_latency_us * 1e-6,
                   inter_bandwidth=net.inter_node_bandwidth_gbs * 1e9)


def measure(run_dir: str) -> Measured:
    """Per-iteration components from a run's logs (use a 1-rank run as the baseline)."""
    from hpccl.analysis.report import load_run
    run, ranks = load_run(run_dir)
    if not ranks or "timers/total" not in ranks[0]:
        raise HpcclError(f"{run_dir!r} has no iteration timers to build a scaling model from.")
    cfg = yaml.safe_load(run["attrs"]["config_yaml"])
    r0 = ranks[0]
    learner = cfg["learner"]["kind"]
    reh = cfg.get("rehearsal", {})
    b = cfg["train"]["batch_size"]
    rep = reh.get("representatives", 0) if learner == "rehearsal" else 0
    cand = reh.get("candidates", 0) if learner == "rehearsal" else 0
    # rehearsal starts at start_task: iterations before it carry no representatives
    tasks = r0["timers/task"]
    active = tasks >= (reh.get("start_task", 1) if learner == "rehearsal" else 0)
    its = max(1, int(active.sum()))
    per_it = {k: float(np.sum(r0[f"timers/{k}"][active])) / its
              for k in ("data_load", "forward_backward", "allreduce_step", "rehearsal_wait")}
    fetch = cand_cost = 0.0
    if "tasks/buffer_fetch_s" in r0 and r0["tasks/buffer_fetched"][-1] > 0:
        fetch = float(r0["tasks/buffer_fetch_s"][-1] / r0["tasks/buffer_fetched"][-1])
        cand_cost = float(r0["tasks/buffer_insert_s"][-1] / max(1, r0["tasks/buffer_offered"][-1]))
    epochs = run["epochs/samples"]
    world = int(run["attrs"]["world_size"])
    shape = np.prod(json.loads(run["attrs"].get("sample_shape", "[1]")) or [1])
    return Measured(data_s_per_sample=per_it["data_load"] / b,
                    compute_s_per_sample=per_it["forward_backward"] / (b + rep),
                    # at 1 rank this phase is the optimizer step alone; at more it includes the
                    # allreduce, which the model computes itself, so a 1-rank baseline is best
                    step_s=per_it["allreduce_step"] if world == 1 else 0.0,
                    gradient_bytes=int(run["attrs"].get("model_gradient_bytes", 0)),
                    sample_bytes=int(4 * shape), batch=b, representatives=rep, candidates=cand,
                    fetch_s_per_rep=fetch, insert_s_per_candidate=cand_cost,
                    async_rehearsal=bool(reh.get("async", True)),
                    samples_per_epoch=int(np.median(epochs)) if len(epochs) else 0, ranks=world,
                    device=str(run["attrs"].get("device", "cpu")))


def iteration_time(m: Measured, p: int, gpus_per_node: int, net: Network, b: float | None = None,
                   rehearsal: bool = True, cores_per_node: int | None = None) -> dict:
    b = m.batch if b is None else b
    r = m.representatives if rehearsal else 0
    ranks_per_node = min(p, gpus_per_node)
    k_cpu = 1.0
    if m.device.startswith("cpu") and cores_per_node:
        k_cpu = max(1.0, ranks_per_node / cores_per_node)
    t_data = b * m.data_s_per_sample
    t_compute = (b + r) * m.compute_s_per_sample * k_cpu
    if p == 1:
        t_ar = 0.0
    else:
        a, bw = ((net.intra_latency_s, net.intra_bandwidth) if p <= gpus_per_node
                 else (net.inter_latency_s, net.inter_bandwidth))
        t_ar = 2 * (p - 1) / p * m.gradient_bytes / bw + 2 * (p - 1) * a
    t_fetch = t_insert = exposed = 0.0
    if r:
        f_rem = max(0.0, (p - gpus_per_node) / p)
        remote_nodes = max(0, math.ceil(p / gpus_per_node) - 1)
        t_fetch = r * ((1 - f_rem) * m.fetch_s_per_rep
                       + f_rem * (m.fetch_s_per_rep + net.inter_latency_s + m.sample_bytes / net.inter_bandwidth))
        t_fetch += remote_nodes * gpus_per_node * net.inter_latency_s
        t_insert = m.candidates * m.insert_s_per_candidate
        exposed = (max(0.0, t_fetch + t_insert - (t_compute + t_ar)) if m.async_rehearsal
                   else t_fetch + t_insert)
    total = t_data + t_compute + m.step_s + t_ar + exposed
    return {"gpus": p, "batch_per_gpu": b, "t_data": t_data, "t_compute": t_compute, "t_step": m.step_s,
            "t_allreduce": t_ar, "t_fetch": t_fetch, "t_insert": t_insert, "rehearsal_exposed": exposed,
            "iteration_s": total, "samples_per_s": p * b / total}


def predict(m: Measured, gpus: list[int], gpus_per_node: int, net: Network, mode: str = "weak",
            global_batch: int | None = None, rehearsal: bool = True, cores_per_node: int | None = None) -> list[dict]:
    rows = []
    for p in gpus:
        b = m.batch if mode == "weak" else (global_batch or m.batch * min(gpus)) / p
        row = iteration_time(m, p, gpus_per_node, net, b, rehearsal, cores_per_node)
        row["epoch_s"] = m.samples_per_epoch / (p * b) * row["iteration_s"] if m.samples_per_epoch else None
        rows.append(row)
    base = rows[0]
    for row in rows:
        n = row["gpus"] / base["gpus"]
        # weak: X(p) / (n X(base)); strong (same global batch, so epochs have equally many
        # iterations): T(base) / (n T(p))
        row["efficiency"] = (row["samples_per_s"] / (n * base["samples_per_s"]) if mode == "weak"
                             else base["iteration_s"] / (n * row["iteration_s"]))
    return rows


def model_table(rows: list[dict], measured: dict | None = None):
    header = ["gpus", "batch/gpu", "compute ms", "allreduce ms", "rehearsal exposed ms",
              "iteration ms", "samples/s", "efficiency"]
    if measured:
        header += ["measured iteration ms", "measured samples/s"]
    out = []
    for row in rows:
        line = [row["gpus"], row["batch_per_gpu"], row["t_compute"] * 1e3, row["t_allreduce"] * 1e3,
                row["rehearsal_exposed"] * 1e3, row["iteration_s"] * 1e3, round(row["samples_per_s"]),
                row["efficiency"]]
        if measured:
            got = measured.get(row["gpus"])
            line += [None, None] if got is None else [got["iteration_s"] * 1e3, round(got["samples_per_s"])]
        out.append(line)
    return header, out


def measured_point(run_dir: str) -> dict:
    """Mean iteration time and new-sample throughput of a run (tasks with rehearsal active)."""
    from hpccl.analysis.report import load_run
    m = measure(run_dir)
    run, ranks = load_run(run_dir)
    cfg = yaml.safe_load(run["attrs"]["config_yaml"])
    start = cfg.get("rehearsal", {}).get("start_task", 1) if cfg["learner"]["kind"] == "rehearsal" else 0
    its = [float(np.mean(r["timers/total"][r["timers/task"] >= start])) for r in ranks]
    t = max(its)   # the slowest rank sets the pace
    return {"ranks": m.ranks, "iteration_s": t, "samples_per_s": m.ranks * m.batch / t, "measured": asdict(m)}
