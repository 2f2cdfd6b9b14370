"""A scaling model for planning runs up to 1024 GPUs from measurements at small scale.

Every term is fitted from measured runs (``calibrate``) or taken from a site's numbers, and
the model says which: ``Measured.sources`` names the run (or site) behind each term, and a
term with neither is refused (HpcclError), never guessed.

Per-iteration time on p ranks, per-rank batch b, r representatives per draw, c candidates:

    t_data      = b * d                 d: data loading per sample               (1-rank run)
    t_compute   = (b + r) * k * k_cpu   k: forward+backward per sample            (1-rank run)
                                        k_cpu = max(1, ranks on a node / cores of a node), CPU only
    t_step      = s                     optimizer step alone                     (1-rank run)
    t_other     = o                     bookkeeping outside the timed phases     (1-rank run)
    t_allreduce = the backend's algorithm on G gradient bytes, alpha-beta: a per step, bytes
      swapped with one peer (both ways at once) at the exchange bandwidth B_x, bytes sent one way
      (or to a peer other than the sender's) at the wire bandwidth B:
        ring                        2 (p-1) a + 2 (p-1)/p G / (B_x if p = 2 else B)
        recursive doubling          log2 p' (a + G/B_x)           + 2 (a + G/B) if p != p'
        recursive halving/doubling  2 log2 p' a + 2 (p'-1)/p' G/B_x + 2 (a + G/B) if p != p'
                                    (Rabenseifner; p' = largest power of 2 <= p: the ranks beyond
                                    it fold their vector into a partner first, and get it back)
      backend -> algorithm: torch (gloo on CPU: ring; NCCL on GPU, see tree below); mpi and
      horovod on CPU (MPI_Allreduce; Horovod fuses tensors into one large buffer): Open MPI
      4.1's fixed decision (coll_tuned_decision_fixed.c): Rabenseifner above a size that depends
      on p (256 KiB below 4 ranks, 8 KiB below 16, ...), recursive doubling below it. MPICH
      (recursive doubling below 2 KiB, Rabenseifner above) is not told apart from Open MPI.
      B_x is fitted per backend from its runs at 2 ranks (a transport can swap bytes with one
      peer slower than the wire: UCX over TCP here moves 3.7 MB/s both ways on a 6.2 MB/s link
      where gloo moves 6.2); B is the fastest backend's; a site gives one B for both.
      On GPUs (torch, horovod: NCCL) the cheaper of ring and NCCL's double binary tree,
        tree                        2 ceil(log2 p) a + 2 G/B
      (a, B) from runs at 2+ ranks (fitted on the same algorithm), else from the site's
      intra-node link when the p ranks fit on one node, its inter-node link otherwise.
    rehearsal, per draw:
        owners      = p (1 - (1 - 1/p)^r)            expected distinct owners of r uniform draws
        remote      = owners - (1 - (1 - 1/p)^r)     expected owners other than the drawing rank
        bytes       = r (p-1)/p * S                  S: bytes of a record
        t_fetch     = r * f + remote * (g + a) + bytes / B_nic + t_queue
                      f: local copy per record (1-rank run); g: per owner (run at 2+ ranks)
        t_queue     = min(rho * bytes / B_nic, t_allreduce)   at the owner's NIC, shared with the
                      gradient allreduce: TCP/NCCL split a link fairly between the two flows, so
                      for the share rho of its time the get finds the allreduce there it moves at
                      half speed, and it cannot wait longer than the allreduce lasts. Measured on
                      the test bed (benchmarks/model_validation.py --rehearsal-wait): the async
                      iteration is the link's allreduce + get bytes, not an M/G/1 queue's
                      rho / (1 - rho), which went 19x at rho = 0.95 (~600 ms against ~30 ms).
                      rho = t_allreduce / (t_compute + t_allreduce) while the fetch overlaps the
                      step (async), 0 when it runs alone (sync). Every owner serves about r (p-1)/p
                      gets per iteration, the same bytes it is drawn for, so its NIC sends `bytes`.
        t_link      = min(bytes / B_nic, t_allreduce)   the allreduce's own slowdown: it has half
                      the link while the get is there (async); a get longer than the allreduce
                      goes on alone after it, and the main thread waits for that rest (exposed)
        t_insert    = c * e                          e: insert per candidate (1-rank run)
        exposed     = h + max(0, t_fetch + t_insert - (t_compute + t_allreduce + t_link))   async
                    = h + t_fetch + t_insert                                                sync
                      h: handing the representatives over, the 1-rank run's wait beyond its fetch
    T(p) = t_data + t_compute + t_step + t_other + t_allreduce + t_link + exposed

Throughput X(p) = p b / T(p) new samples/s; weak scaling (b fixed): efficiency X(p) / (p X(1));
strong scaling (global batch fixed, b = B / p): E(p) = n / B * T(p), efficiency E(1) / (p E(p)).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import yaml

from hpccl.core.errors import HpcclError

ALGORITHMS = ("ring", "tree", "recursive_doubling", "recursive_halving_doubling")


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
    other_s: float = 0.0             # per iteration outside the timed phases
    fetch_s_per_owner: float = 0.0   # per remote owner of a draw, beyond latency and bytes
    handoff_s: float = 0.0           # taking ready representatives from the buffer's thread
    backend: str = "torch"
    # Fitted allreduce link (None: no run at 2+ ranks; a site must give it), and where
    allreduce_latency_s: float | None = None
    allreduce_bandwidth: float | None = None    # bytes/s
    allreduce_scope: str | None = None          # 'intra' (ranks on one node) or 'inter'
    # every backend with runs at 2+ ranks: {"latency_s", "bandwidth" (exchange), "scope", "source"}
    links: dict = field(default_factory=dict)
    wire_bandwidth: float | None = None         # bytes/s one way: the fastest fitted link
    sources: dict = field(default_factory=dict)  # term -> the run (or site) it came from


@dataclass
class Network:
    intra_latency_s: float = 5e-6     # NVLink-class defaults; a site's `network` overrides
    intra_bandwidth: float = 100e9    # bytes/s
    inter_latency_s: float = 10e-6
    inter_bandwidth: float = 25e9     # one 200 Gb/s NIC per GPU
    nic_bandwidth: float | None = None   # bytes/s one rank's share of its node's NICs (None: inter_bandwidth)
    source: str = "defaults"

    @classmethod
    def from_site(cls, site, name: str = "site") -> "Network":
        """From a site's ``network`` section (hpccl.sched.sites.NetworkConfig)."""
        net = site.network
        nic = None
        nics, per_nic = getattr(net, "nics_per_node", None), getattr(net, "nic_bandwidth_gbs", None)
        if nics and per_nic:
            nic = nics * per_nic * 1e9 / max(1, site.gpus_per_node)
        return cls(intra_latency_s=net.intra_node_latency_us * 1e-6,
                   intra_bandwidth=net.intra_node_bandwidth_gbs * 1e9,
                   inter_latency_s=net.inter_node_latency_us * 1e-6,
                   inter_bandwidth=net.inter_node_bandwidth_gbs * 1e9, nic_bandwidth=nic,
                   source=f"site {name}")


# -- the terms -----------------------------------------------------------------------------------
# Open MPI 4.1 coll/tuned fixed decision for a commutative MPI_Allreduce
# (ompi/mca/coll/tuned/coll_tuned_decision_fixed.c): (ranks below, Rabenseifner from bytes);
# below the size it is recursive doubling (or, in a few bands, ring variants of similar cost)
OPENMPI_RABENSEIFNER_FROM = ((4, 262144), (16, 8192), (32, 4096), (64, 128), (256, 262144),
                             (512, 4096), (4096, 16384), (1 << 62, 32768))


def allreduce_algorithm(backend: str, nbytes: float, device: str = "cpu", p: int = 2) -> str:
    if backend == "torch" or device.startswith("cuda"):
        return "ring"          # gloo; on GPUs NCCL (ring, or its tree: iteration_time)
    threshold = next(t for below, t in OPENMPI_RABENSEIFNER_FROM if p < below)
    return "recursive_halving_doubling" if nbytes >= threshold else "recursive_doubling"


def allreduce_traffic(algorithm: str, p: int, nbytes: float) -> tuple[float, float, float]:
    """(steps, bytes swapped with one peer, bytes sent one way) on the busiest rank's critical
    path, for one allreduce of ``nbytes`` on p ranks."""
    if p <= 1:
        return 0.0, 0.0, 0.0
    if algorithm == "ring":
        moved = 2 * (p - 1) / p * nbytes
        return 2 * (p - 1), (moved if p == 2 else 0.0), (0.0 if p == 2 else moved)
    if algorithm == "tree":            # NCCL's double binary tree: reduce up, broadcast down, pipelined
        return 2 * math.ceil(math.log2(p)), 0.0, 2 * nbytes
    pow2 = 1 << (p.bit_length() - 1)
    extra = 0 if pow2 == p else 2      # fold the ranks beyond a power of two in, and back out
    steps = int(math.log2(pow2))
    if algorithm == "recursive_doubling":
        return steps + extra, steps * nbytes, extra * nbytes
    if algorithm == "recursive_halving_doubling":
        return 2 * steps + extra, 2 * (pow2 - 1) / pow2 * nbytes, extra * nbytes
    raise ValueError(f"unknown allreduce algorithm {algorithm!r}; expected one of {ALGORITHMS}")


def allreduce_counts(algorithm: str, p: int, nbytes: float) -> tuple[float, float]:
    """(latencies, bytes over the slowest link) of one allreduce of ``nbytes`` on p ranks."""
    steps, swapped, one_way = allreduce_traffic(algorithm, p, nbytes)
    return steps, swapped + one_way


def expected_owners(p: int, r: int) -> float:
    """Expected distinct ranks among the owners of r draws uniform over p ranks' shards."""
    return p * (1 - (1 - 1 / p) ** r) if p > 0 and r > 0 else 0.0


def _link(m: Measured, p: int, gpus_per_node: int, net: Network | None) -> tuple[float, float, float, str]:
    """(latency, exchange bandwidth, wire bandwidth, source) of the allreduce on p ranks."""
    scope = "intra" if p <= gpus_per_node else "inter"

    def site():
        lat, bw = ((net.intra_latency_s, net.intra_bandwidth) if scope == "intra"
                   else (net.inter_latency_s, net.inter_bandwidth))
        return lat, bw, bw, f"{net.source} ({scope}-node link)"
    if net is not None and net.source != "defaults":
        return site()
    link = m.links.get(m.backend)
    # a link fitted across nodes bounds one inside a node too (never faster than measured)
    if link and link["scope"] in (scope, "inter"):
        return link["latency_s"], link["bandwidth"], m.wire_bandwidth or link["bandwidth"], link["source"]
    if net is not None:
        return site()
    if link:
        have = f"only a link fitted {link['scope']}-node ({link['source']})"
    elif m.links:
        have = (f"links fitted for the {', '.join(sorted(m.links))} backend(s) only, none for "
                f"{m.backend!r} (each backend moves its bytes its own way)")
    else:
        have = "no run at 2+ ranks"
    raise HpcclError(f"hpccl model cannot predict the gradient allreduce on {p} ranks "
                     f"({scope}-node, {gpus_per_node} per node, {m.backend} backend): it has {have} "
                     "and no site network numbers. Expected a run of that backend at 2+ ranks across "
                     "nodes among the calibration runs, or --site with a 'network' section.")


def _nic_load(overlapped: bool, t_compute: float, t_allreduce: float) -> float:
    """The share of an owner's NIC the gradient allreduce keeps busy while a get overlaps it
    (capped: a get always gets some share of a link TCP or NCCL divides fairly)."""
    if not overlapped or t_allreduce <= 0:
        return 0.0
    return min(0.95, t_allreduce / (t_compute + t_allreduce))


def _queue(transfer: float, rho: float, t_allreduce: float) -> float:
    """A get's wait behind the allreduce on a fairly shared link (see the module docstring)."""
    return min(rho * transfer, t_allreduce)


def iteration_time(m: Measured, p: int, gpus_per_node: int, net: Network | None, b: float | None = None,
                   rehearsal: bool = True, cores_per_node: int | None = None) -> dict:
    b = m.batch if b is None else b
    r = m.representatives if rehearsal else 0
    ranks_per_node = min(p, gpus_per_node)
    k_cpu = 1.0
    if m.device.startswith("cpu") and cores_per_node:
        k_cpu = max(1.0, ranks_per_node / cores_per_node)
    t_data = b * m.data_s_per_sample
    t_compute = (b + r) * m.compute_s_per_sample * k_cpu
    algo = allreduce_algorithm(m.backend, m.gradient_bytes, m.device, p)
    t_ar, a, bw, link_source = 0.0, 0.0, float("inf"), None
    if p > 1:
        a, bw_x, bw, link_source = _link(m, p, gpus_per_node, net)

        def cost(name):
            steps, swapped, one_way = allreduce_traffic(name, p, m.gradient_bytes)
            return steps * a + swapped / bw_x + one_way / bw
        t_ar = cost(algo)
        # NCCL tunes between its ring and its double binary tree by the same alpha-beta
        # estimate, so at many ranks (ring latency 2 (p-1) a) it takes the tree
        if m.device.startswith("cuda") and m.backend != "mpi" and cost("tree") < t_ar:
            algo, t_ar = "tree", cost("tree")
    t_fetch = t_insert = exposed = t_link = t_queue = owners = reh_bytes = 0.0
    if r:
        owners = expected_owners(p, r)
        remote = owners - (1 - (1 - 1 / p) ** r)
        reh_bytes = r * (p - 1) / p * m.sample_bytes
        # across nodes a get crosses the owner's NIC (its share of the node's NICs, from the
        # site) or the fitted link; inside a node it takes the allreduce's link
        nic = bw
        if (p > gpus_per_node and net is not None and net.nic_bandwidth and link_source
                and link_source.startswith(net.source)):
            nic = net.nic_bandwidth
        transfer = reh_bytes / nic if p > 1 else 0.0
        rho = _nic_load(m.async_rehearsal, t_compute, t_ar)
        t_queue = _queue(transfer, rho, t_ar)
        a_get = a if p > gpus_per_node else 0.0
        t_fetch = r * m.fetch_s_per_rep + remote * (m.fetch_s_per_owner + a_get) + transfer + t_queue
        t_link = min(transfer, t_ar) if m.async_rehearsal else 0.0
        t_insert = m.candidates * m.insert_s_per_candidate
        exposed = m.handoff_s + (max(0.0, t_fetch + t_insert - (t_compute + t_ar + t_link))
                                 if m.async_rehearsal else t_fetch + t_insert)
    total = t_data + t_compute + m.step_s + m.other_s + t_ar + t_link + exposed
    return {"gpus": p, "batch_per_gpu": b, "t_data": t_data, "t_compute": t_compute, "t_step": m.step_s,
            "t_allreduce": t_ar, "t_fetch": t_fetch, "t_insert": t_insert, "rehearsal_exposed": exposed,
            "iteration_s": total, "samples_per_s": p * b / total,
            "t_other": m.other_s, "t_rehearsal_link": t_link, "t_queue": t_queue,
            "owners_per_draw": owners, "rehearsal_bytes": reh_bytes, "allreduce_algorithm": algo if p > 1 else None,
            "link_source": link_source}


def predict(m: Measured, gpus: list[int], gpus_per_node: int, net: Network | None, mode: str = "weak",
            global_batch: int | None = None, rehearsal: bool = True, cores_per_node: int | None = None,
            iteration=None, **kw) -> list[dict]:
    """A row per GPU count, with epoch time and efficiency. ``iteration``: the engine's
    ``iteration_time`` (default this module's; the SimGrid engine passes its replay, and ``kw``)."""
    iteration = iteration or iteration_time
    rows = []
    for p in gpus:
        b = m.batch if mode == "weak" else (global_batch or m.batch * min(gpus)) / p
        row = iteration(m, p, gpus_per_node, net, b, rehearsal, cores_per_node, **kw)
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


# -- reading runs --------------------------------------------------------------------------------
def _run_facts(run_dir: str, attrs: dict) -> dict:
    """The job of a run (its log's config_yaml), after checking the log attributes the model
    reads: a damaged or edited log.h5 is named, not met as a KeyError."""
    import os

    from hpccl.core.errors import CorruptFileError
    path = os.path.join(run_dir, "log.h5")

    def damaged(what):
        return CorruptFileError(f"{path}: {what}; the log was damaged or edited, so hpccl model cannot "
                                "calibrate from it; nothing was changed.")
    world = attrs.get("world_size")
    if not (isinstance(world, (int, np.integer)) and world >= 1):
        raise damaged(f"its attribute 'world_size' is {'missing' if world is None else repr(world)}, "
                      "expected the run's number of ranks (an integer >= 1)")
    try:
        cfg = yaml.safe_load(str(attrs.get("config_yaml", "")))
    except yaml.YAMLError as e:
        raise damaged(f"its attribute 'config_yaml' is not YAML ({str(e).splitlines()[0]})") from None
    if not (isinstance(cfg, dict) and isinstance(cfg.get("learner"), dict) and "kind" in cfg["learner"]):
        raise damaged("its attribute 'config_yaml' is " + ("missing" if "config_yaml" not in attrs else
                      "not a continual job with a 'learner: kind:'"))
    return cfg


def _read(run_dir: str):
    from hpccl.analysis.report import load_run
    run, ranks = load_run(run_dir)
    if not ranks or "timers/total" not in ranks[0]:
        raise HpcclError(f"{run_dir!r} has no iteration timers to build a scaling model from.")
    cfg = _run_facts(run_dir, run["attrs"])
    learner = cfg["learner"]["kind"]
    reh = cfg.get("rehearsal", {}) or {}
    start = reh.get("start_task", 1) if learner == "rehearsal" else 0
    return run, ranks, cfg, learner, reh, start


def _phases(rank: dict, start: int) -> tuple[dict, int]:
    """Mean per iteration of each timer over the tasks with rehearsal active."""
    active = rank["timers/task"] >= start
    its = max(1, int(active.sum()))
    keys = [k[len("timers/"):] for k in rank if k.startswith("timers/") and k not in ("timers/task", "timers/epoch")]
    return {k: float(np.sum(rank[f"timers/{k}"][active])) / its for k in keys}, its


def _sample_bytes(run: dict) -> int:
    # records are stored as float32 (the shard's layout) with an int label
    shape = json.loads(run["attrs"].get("sample_shape", "[1]")) or [1]
    return int(4 * np.prod(shape))


def measure(run_dir: str) -> Measured:
    """Per-iteration components from one run's logs (use a 1-rank run as the baseline)."""
    run, ranks, cfg, learner, reh, start = _read(run_dir)
    r0 = ranks[0]
    b = cfg["train"]["batch_size"]
    rep = reh.get("representatives", 0) if learner == "rehearsal" else 0
    cand = reh.get("candidates", 0) if learner == "rehearsal" else 0
    per_it, _ = _phases(r0, start)
    fetch = cand_cost = 0.0
    if "tasks/buffer_fetch_s" in r0 and r0["tasks/buffer_fetched"][-1] > 0:
        fetch = float(r0["tasks/buffer_fetch_s"][-1] / r0["tasks/buffer_fetched"][-1])
        cand_cost = float(r0["tasks/buffer_insert_s"][-1] / max(1, r0["tasks/buffer_offered"][-1]))
    epochs = run["epochs/samples"]
    world = int(run["attrs"]["world_size"])
    terms = ("data", "compute", "step", "other", "fetch_per_record", "insert_per_candidate", "handoff")
    handoff = 0.0
    if rep and world == 1:
        own = 0.0 if reh.get("async", True) else rep * fetch + cand * cand_cost
        handoff = max(0.0, per_it.get("rehearsal_wait", 0.0) - own)
    return Measured(data_s_per_sample=per_it.get("data_load", 0.0) / b,
                    compute_s_per_sample=per_it.get("forward_backward", 0.0) / (b + rep),
                    # at 1 rank this phase is the optimizer step alone; at more it includes the
                    # allreduce, which the model computes itself, so a 1-rank baseline is best
                    step_s=per_it.get("allreduce_step", 0.0) if world == 1 else 0.0,
                    gradient_bytes=int(run["attrs"].get("model_gradient_bytes", 0)),
                    sample_bytes=_sample_bytes(run), batch=b, representatives=rep, candidates=cand,
                    fetch_s_per_rep=fetch, insert_s_per_candidate=cand_cost,
                    async_rehearsal=bool(reh.get("async", True)),
                    samples_per_epoch=int(np.median(epochs)) if len(epochs) else 0, ranks=world,
                    device=str(run["attrs"].get("device", "cpu")),
                    other_s=per_it.get("other", 0.0) if world == 1 else 0.0, handoff_s=handoff,
                    backend=str(run["attrs"].get("backend", cfg.get("runtime", {}).get("backend", "torch"))),
                    sources={t: run_dir for t in terms})


def _multi_rank_point(run_dir: str, base: Measured, net: Network | None) -> dict:
    """What a run at 2+ ranks says about the allreduce and the remote gets."""
    run, ranks, cfg, learner, reh, start = _read(run_dir)
    world = int(run["attrs"]["world_size"])
    hosts = json.loads(run["attrs"].get("hostnames", "[]") or "[]")
    scope = "intra" if len(set(hosts)) <= 1 else "inter"
    b = cfg["train"]["batch_size"]
    rep = reh.get("representatives", 0) if learner == "rehearsal" else 0
    comm, fetch_round, remote = [], [], []
    for rank in ranks:
        ph, _ = _phases(rank, start)
        # gloo and Horovod start allreduces during backward, so part of the wait lands in
        # forward_backward: what both phases took beyond the 1-rank compute and step
        compute = (b + rep) * base.compute_s_per_sample
        comm.append(max(0.0, ph.get("forward_backward", 0.0) + ph.get("allreduce_step", 0.0)
                        - compute - base.step_s))
        if rep and "tasks/buffer_fetched" in rank and rank["tasks/buffer_fetched"][-1] > 0:
            draws = rank["tasks/buffer_fetched"][-1] / rep
            fetch_round.append(float(rank["tasks/buffer_fetch_s"][-1] / draws))
    backend = str(run["attrs"].get("backend", "torch"))
    grad = int(run["attrs"].get("model_gradient_bytes", 0))
    algo = allreduce_algorithm(backend, grad, str(run["attrs"].get("device", "cpu")), world)
    n_lat, swapped, one_way = allreduce_traffic(algo, world, grad)
    return {"run": run_dir, "ranks": world, "scope": scope, "t_comm": float(np.mean(comm)),
            "n_lat": n_lat, "swapped": swapped, "one_way": one_way, "backend": backend,
            "rep": rep, "algorithm": algo,
            "fetch_round": float(np.mean(fetch_round)) if fetch_round else None,
            "sample_bytes": _sample_bytes(run)}


def calibrate(run_dirs: list[str], net: Network | None = None) -> Measured:
    """Fit the model's terms from measured runs: the per-rank terms from the 1-rank run (the
    first one if several), the allreduce link and the per-owner get cost from runs at 2+ ranks.
    Latency and bandwidth separate only with two runs of different shape (rank count or
    gradient size); from one, the latency is the site's (``net``) or 0 and the bandwidth an
    effective one that includes it."""
    if not run_dirs:
        raise HpcclError("hpccl model needs at least one measured run (a 1-rank run is the baseline).")
    worlds = {d: int(_read(d)[0]["attrs"]["world_size"]) for d in run_dirs}
    singles = [d for d in run_dirs if worlds[d] == 1]
    if not singles:
        raise HpcclError(f"hpccl model: none of {', '.join(run_dirs)} is a 1-rank run; expected one "
                         "(its compute, data, step and buffer costs have no communication in them), found "
                         f"world sizes {sorted(set(worlds.values()))}.")
    m = measure(singles[0])
    if m.representatives:
        # without a run at 2+ ranks a remote get costs the link's latency and bytes alone
        m.sources["fetch_per_owner"] = "not measured: 0 beyond latency and bytes (no run at 2+ ranks)"
    multi = [_multi_rank_point(d, m, net) for d in run_dirs if worlds[d] > 1]
    if not multi:
        return m
    scopes = {p["scope"] for p in multi}
    scope = "inter" if "inter" in scopes else "intra"
    pts = [p for p in multi if p["scope"] == scope and p["swapped"] + p["one_way"] > 0]
    lat0 = ((net.inter_latency_s if scope == "inter" else net.intra_latency_s) if net is not None else 0.0)

    def fit(points, wire):
        """(latency, 1/B_x) of one backend: least squares over its runs where they differ in
        shape, else the latency is the site's (or 0) and B_x an effective bandwidth."""
        A = np.array([[q["n_lat"], q["swapped"]] for q in points], dtype=float)
        y = np.array([q["t_comm"] - (q["one_way"] / wire if wire else 0.0) for q in points])
        if len(points) >= 2 and np.linalg.matrix_rank(A) == 2:
            (lat, inv), *_ = np.linalg.lstsq(A, y, rcond=None)
            if lat >= 0 and inv > 0:
                return float(lat), float(inv)
        return lat0, float(np.sum(np.maximum(y - A[:, 0] * lat0, 1e-12)) / max(np.sum(A[:, 1]), 1e-12))
    by_backend = {}
    for q in pts:
        by_backend.setdefault(q["backend"], []).append(q)
    # the wire: the fastest backend's swaps at 2 ranks (a swap at full speed both ways is the
    # link itself); then each backend's own swap bandwidth with its one-way bytes at the wire
    pairs = {b: [q for q in qs if q["swapped"] > 0] for b, qs in by_backend.items()}
    first = {b: fit(qs, None) for b, qs in pairs.items() if qs}
    wire = 1 / min(inv for _, inv in first.values()) if first else None
    for b, qs in by_backend.items():
        lat, inv = fit(qs, wire) if any(q["swapped"] > 0 for q in qs) else (lat0, None)
        if inv is None:     # one-way bytes only (rings at 3+ ranks): they fit the wire itself
            ys = [q["t_comm"] - q["n_lat"] * lat0 for q in qs]
            inv = sum(ys) / sum(q["one_way"] for q in qs)
            wire = wire or 1 / inv
        m.links[b] = {"latency_s": lat, "bandwidth": 1 / inv, "scope": scope,
                      "source": ", ".join(q["run"] for q in qs)}
    m.wire_bandwidth = wire
    own = m.links.get(m.backend) or next(iter(m.links.values()))
    m.allreduce_latency_s, m.allreduce_bandwidth, m.allreduce_scope = own["latency_s"], own["bandwidth"], scope
    m.sources["allreduce"] = "; ".join(f"{b}: {link['source']}" for b, link in m.links.items())
    inv_bw = 1 / wire
    # per remote owner of a draw: what a draw cost beyond the local copies and the bytes
    gets = [p for p in multi if p["fetch_round"] is not None and p["ranks"] > 1]
    if gets and m.representatives:
        per_owner = []
        for p in gets:
            r, n = p["rep"], p["ranks"]
            remote = expected_owners(n, r) - (1 - (1 - 1 / n) ** r)
            compute = (m.batch + r) * m.compute_s_per_sample
            rho = _nic_load(m.async_rehearsal, compute, p["t_comm"])
            lat = m.links.get(p["backend"], {}).get("latency_s", 0.0) if p["scope"] == "inter" else 0.0
            transfer = r * (n - 1) / n * p["sample_bytes"] * inv_bw
            rest = (p["fetch_round"] - r * m.fetch_s_per_rep - remote * lat - transfer
                    - _queue(transfer, rho, max(0.0, p["t_comm"])))
            per_owner.append(max(0.0, rest / remote) if remote else 0.0)
        m.fetch_s_per_owner = float(np.mean(per_owner))
        m.sources["fetch_per_owner"] = ", ".join(p["run"] for p in gets)
    return m


def model_table(rows: list[dict], measured: dict | None = None):
    header = ["gpus", "batch/gpu", "compute ms", "allreduce ms", "rehearsal exposed ms",
              "iteration ms", "samples/s", "efficiency"]
    if measured:
        header += ["measured iteration ms", "measured samples/s", "error %"]
    out = []
    for row in rows:
        line = [row["gpus"], row["batch_per_gpu"], row["t_compute"] * 1e3, row["t_allreduce"] * 1e3,
                row["rehearsal_exposed"] * 1e3, row["iteration_s"] * 1e3, round(row["samples_per_s"]),
                row["efficiency"]]
        if measured:
            got = measured.get(row["gpus"])
            line += [None, None, None] if got is None else [
                got["iteration_s"] * 1e3, round(got["samples_per_s"]),
                100 * (row["iteration_s"] - got["iteration_s"]) / got["iteration_s"]]
        out.append(line)
    return header, out


def measured_point(run_dir: str) -> dict:
    """Mean iteration time, rehearsal wait and new-sample throughput of a run (tasks with
    rehearsal active); the slowest rank sets the pace."""
    run, ranks, cfg, learner, reh, start = _read(run_dir)
    b = cfg["train"]["batch_size"]
    world = int(run["attrs"]["world_size"])
    per_rank = [_phases(r, start)[0] for r in ranks]
    t = max(p["total"] for p in per_rank)
    wait = max(p.get("rehearsal_wait", 0.0) for p in per_rank)
    return {"ranks": world, "iteration_s": t, "rehearsal_wait_s": wait, "samples_per_s": world * b / t,
            "measured": asdict(measure(run_dir))}
