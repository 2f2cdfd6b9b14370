"""A second prediction engine: the iteration replayed event by event in SimGrid's SMPI.

The analytical model (hpccl.analysis.model) adds closed forms; this engine writes what every
rank does in a few iterations as SMPI time-independent traces, a platform from the site's
network, and lets SimGrid 3.32 (Debian ``libsimgrid-dev``: ``smpirun -replay``, which runs the
packaged ``smpireplaymain``; nothing is compiled) simulate them, flows sharing links included.
The two engines side by side bracket a prediction.

Input: the same ``Measured`` and ``Network`` as the analytical model, plus p ranks, GPUs per
node and the batch; output: a row with the keys of ``model.iteration_time``.

Platform (``write_platform``): one SimGrid host per node with one core per GPU (ranks of a node
compute side by side); ranks of one node talk over the host's loopback link (the site's
intra_node_* latency and bandwidth, FATPIPE in SimGrid: every pair gets the full NVLink/NVSwitch
bandwidth); the node's NICs are one full-duplex link of the site's nics_per_node x
nic_bandwidth_gbs (NCCL opens one ring per NIC, so one allreduce reaches them all; a site without
NIC numbers: its inter_node_bandwidth_gbs, the node's allreduce bus bandwidth) with half the
inter-node latency on each side, into a non-blocking backbone. Without a site the machine is the
one the runs were measured on (``network``): each node's NIC is the fitted wire bandwidth and
the backend's fitted latency, the same link the analytical model uses, and where the backend
swaps bytes with a peer slower than the wire (Open MPI over UCX-TCP on the test bed) a shared
per-host link of twice its fitted exchange bandwidth (SimGrid's ``limiter_link``) slows a swap
to it while a one-way transfer keeps the wire. SMPI's piecewise bandwidth and latency factors (fitted to Ethernet and InfiniBand
benchmarks) are set to 1 and cross-traffic and the TCP window bound are off, so a transfer of S
bytes over a link (a, B) takes exactly a + S / B: the engine's only model is SimGrid's flow
sharing, not a second calibration.

Trace of one iteration of rank i (``write_traces``; compute as flops on 1 Gflop/s hosts, so
flops = seconds * 1e9):

    compute   t_data
    (async)   the rehearsal gets, posted: isend/irecv          \\  the gets overlap compute and
    compute   t_compute                                         |  allreduce, as the rehearsal
    allreduce G bytes (SMPI's algorithm for the backend)        |  thread's do
    (async)   wait for this rank's gets                         /
    (sync)    the gets, posted and waited; compute r*f + c*e (the rehearsal thread's own work)
    compute   t_step + t_other

Rehearsal gets: a draw of rank d takes r representatives from owners drawn uniformly over the
p ranks (a seeded RNG, the same draws for every replay of one prediction); all of one owner's
records come in one message of n*S bytes (one latency per distinct owner, as the Rgets of one
owner are issued together); draws from the rank itself cost no transfer. The one-sided reads
become two-sided messages that the owner sends: every rank posts, without blocking, the
isends of the answers it owes and the irecvs of the answers it is owed, so no rank waits for
another to post (deadlock-free whatever the order), and SimGrid moves the data while the
owner's actor computes (the owner's CPU takes no part, as in an RMA get). A rank then waits
for its own receives only; its sends are waited at the end of the trace. Tags are the
iteration number, unique per (owner, drawer, iteration) since one message carries all of a
pair's records.

Components come from up to three replays of N iterations each: the iteration without
rehearsal (t_allreduce is what it adds to the compute terms), the sync iteration (what it adds
is t_fetch + t_insert: the gets in context and the rehearsal thread's local work r*f + c*e),
and the async iteration; the handoff the 1-rank run measured is added to the exposed time as
the analytical model adds it. That local work runs beside the compute in hpccl, but SMPI's compute
blocks the actor, so in async mode it joins afterwards:
exposed = max(the async replay's extra time, t_fetch + t_insert - (t_compute + t_allreduce)).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

from hpccl.core.errors import HpcclError

# SMPI adds this many bytes to every message (measured with SimGrid 3.32: a message of S bytes over
# a link (a, B) takes a + (S + 16) / B, whatever S and B)
ENVELOPE = 16
HOST_SPEED = 1e9          # flops per second of a simulated core: trace flops = seconds * 1e9
# hpccl's algorithm names (hpccl.analysis.model.ALGORITHMS) -> SMPI's allreduce algorithms
# (smpi/allreduce; SimGrid's src/smpi/colls/allreduce/): ring = 'lr' (logical ring:
# reduce-scatter then allgather, 2(p-1) steps of G/p), recursive doubling = 'rdb',
# recursive halving/doubling (Rabenseifner) = 'rab_rdb'.
SMPI_ALLREDUCE = {"ring": "lr", "recursive_doubling": "rdb", "recursive_halving_doubling": "rab_rdb"}
INSTALL_HINT = "install Debian's libsimgrid-dev (apt-get install libsimgrid-dev) or run scripts/setup.sh"
_ONE_RANK = type("NoNetwork", (), dict(intra_latency_s=0.0, intra_bandwidth=1e12, inter_latency_s=0.0,
                                       inter_bandwidth=1e12))()     # 1 rank: no message crosses it
_SIMULATED = re.compile(r"Simulated time: ([0-9.eE+-]+) seconds")


def smpirun() -> str:
    """The smpirun launcher, or HpcclError saying how to install it."""
    path = shutil.which("smpirun")
    if not path:
        raise HpcclError(f"hpccl model --engine simgrid needs SimGrid's smpirun, which is not on PATH: "
                         f"{INSTALL_HINT}.")
    return path


def allreduce_algorithm(m, nbytes: float, p: int = 2) -> str:
    """hpccl's name of the backend's algorithm (the analytical model's choice where it has one;
    NCCL's tree has no SMPI counterpart, so on GPUs this engine keeps the ring)."""
    try:
        from hpccl.analysis.model import allreduce_algorithm as choose
    except ImportError:     # an analytical model without a per-backend choice: ring
        return "ring"
    return choose(getattr(m, "backend", "torch"), nbytes, m.device, max(2, p))


def host_limiter(m, net) -> float | None:
    """Bytes/s of a shared per-host link (both directions together) for a backend that swaps
    bytes with a peer slower than its wire, from the runs' fit; None with a site (its NICs are
    full duplex) or when the backend swaps at the wire."""
    if net is not None:
        return None
    link = (getattr(m, "links", None) or {}).get(getattr(m, "backend", "torch"))
    wire = getattr(m, "wire_bandwidth", None)
    if not link or not wire or link["bandwidth"] >= wire * (1 - 1e-9):
        return None
    return 2 * link["bandwidth"]


def network(m, net, p: int, gpus_per_node: int):
    """The site's network, else the link fitted from measured runs: the wire bandwidth (one way,
    the analytical model's B) and the backend's latency, for each node's NIC and inside a node
    too (as the analytical model's ``_link``: a link fitted across nodes bounds one inside a
    node); else HpcclError."""
    if net is not None:
        return net
    if p > gpus_per_node and getattr(m, "allreduce_scope", None) == "intra":
        raise HpcclError(f"hpccl model --engine simgrid cannot build a platform for {p} ranks ({gpus_per_node} "
                         "per node) from a link fitted inside one node: expected a run at 2+ ranks across "
                         "nodes among the calibration runs, or --site with a 'network' section.")
    link = (getattr(m, "links", None) or {}).get(getattr(m, "backend", "torch")) or {}
    bw = getattr(m, "wire_bandwidth", None) or link.get("bandwidth") or getattr(m, "allreduce_bandwidth", None)
    lat = link.get("latency_s", getattr(m, "allreduce_latency_s", None)) or 0.0
    if not bw:
        raise HpcclError(f"hpccl model --engine simgrid cannot build a platform for {p} ranks "
                         f"({gpus_per_node} per node): no site network numbers and no link fitted from a "
                         "run at 2+ ranks. Expected --site with a 'network' section, or a run at 2+ ranks "
                         "across nodes among the calibration runs.")
    from hpccl.analysis.model import Network
    return Network(intra_latency_s=lat, intra_bandwidth=bw, inter_latency_s=lat, inter_bandwidth=bw)


def envelope_compensated(nbytes: float, scale: float, messages_per_byte: float = 1.0) -> float:
    """Traced bytes for ``nbytes`` divided by ``scale``: SMPI adds ENVELOPE bytes to every message,
    which scaling would multiply by ``scale``; taking ENVELOPE * (1 - 1/scale) off each message
    (``messages_per_byte``: the collective's messages per byte of its count on the critical path)
    leaves each transfer as long as unscaled."""
    return nbytes / scale - ENVELOPE * (1 - 1 / scale) * messages_per_byte


def byte_scale(gradient_bytes: float, sample_bytes: float | None, p: int) -> float:
    """K by which bytes and bandwidths are both divided, leaving every transfer time as it was.

    SMPI's replay moves real buffers of the traced sizes (copies, and fresh pages for a
    collective's temporaries): with a 100 MB gradient on 1024 ranks one replay held 452 MB
    here, scaled 257 MB (CPU time is set by the number of messages: about 45 s either way). K
    keeps the smallest message (a record, or a ring step's G/p) at 1000 bytes or more, so
    rounding to whole bytes stays under 0.05 %, and the ring's G/K >= p bytes it needs."""
    smallest = min(b for b in (gradient_bytes / max(1, p), sample_bytes) if b) if gradient_bytes or sample_bytes else 0
    return max(1.0, float(int(smallest // 1000))) if smallest else 1.0


def node_nic_bandwidth(net, gpus_per_node: int) -> float:
    """Bytes/s of a node's NICs together: the site's nics_per_node x nic_bandwidth_gbs
    (``Network.nic_bandwidth`` is a rank's share of it), else its inter-node bus bandwidth."""
    share = getattr(net, "nic_bandwidth", None)
    return share * gpus_per_node if share else net.inter_bandwidth


def write_platform(path: str, net, nodes: int, gpus_per_node: int, scale: float = 1.0,
                   limiter: float | None = None) -> None:
    """``scale``: bandwidths divided by it, as the traces' bytes are (``byte_scale``);
    ``limiter``: a shared per-host link's bytes/s (``host_limiter``), None for none."""
    nic = node_nic_bandwidth(net, gpus_per_node) / scale
    extra = f' limiter_link="{limiter / scale:.6g}Bps"' if limiter else ""
    with open(path, "w") as f:
        f.write(f"""<?xml version='1.0'?>
<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">
<platform version="4.1">
  <cluster id="hpccl" prefix="node" suffix="" radical="0-{nodes - 1}" speed="{HOST_SPEED:.0f}f"
           core="{gpus_per_node}" bw="{nic:.6g}Bps" lat="{net.inter_latency_s / 2:.6g}s"
           sharing_policy="SPLITDUPLEX" bb_bw="{nic * nodes:.6g}Bps" bb_lat="0s"{extra}
           loopback_bw="{net.intra_bandwidth / scale:.6g}Bps" loopback_lat="{net.intra_latency_s:.6g}s"/>
</platform>
""")


def draw_owners(p: int, r: int, iterations: int, seed: int = 0) -> np.ndarray:
    """owners[it, d, j]: the rank owning draw j of rank d in iteration it (uniform over ranks)."""
    return np.random.default_rng(seed).integers(0, p, size=(iterations, p, r))


def owner_counts(owners: np.ndarray) -> np.ndarray:
    """counts[it, owner, drawer]: records ``drawer`` takes from ``owner`` in iteration ``it``."""
    iterations, p, _ = owners.shape
    counts = np.zeros((iterations, p, p), dtype=np.int64)
    its, drawers = np.indices(owners.shape[:2])
    np.add.at(counts, (its[..., None], owners, drawers[..., None]), 1)
    return counts


def _gets(counts: np.ndarray, rank: int, it: int, sample_bytes: float, scale: float) -> tuple[list[str], list[str]]:
    """(posting lines, waiting lines) of rank's rehearsal messages in iteration ``it``."""
    post, wait = [], []
    for owner in np.flatnonzero(counts[it, :, rank]):
        if owner != rank:
            post.append(f"{rank} irecv {owner} {it} {envelope_compensated(counts[it, owner, rank] * sample_bytes, scale):.0f}")
            wait.append(f"{rank} wait {owner} {rank} {it}")
    for drawer in np.flatnonzero(counts[it, rank]):
        if drawer != rank:
            post.append(f"{rank} isend {drawer} {it} {envelope_compensated(counts[it, rank, drawer] * sample_bytes, scale):.0f}")
    return post, wait


def _allreduce_messages_per_byte(algorithm: str, p: int) -> float:
    """Messages on the allreduce's critical path per byte of its count, relative: ring 2(p-1)
    messages of count/p; recursive doubling log2 p of the whole count; Rabenseifner 2 log2 p
    messages carrying 2 (p-1)/p of it (of unequal sizes: the correction is right on average,
    about 1e-4 of the allreduce off on 4 ranks)."""
    if p <= 1:
        return 0.0
    if algorithm == "ring":
        return float(p)
    if algorithm == "recursive_halving_doubling":
        return p * np.log2(p) / (p - 1)
    return 1.0


def write_traces(directory: str, p: int, iterations: int, t_data: float, t_compute: float, t_after: float,
                 gradient_bytes: float, owners: np.ndarray | None, sample_bytes: float, async_gets: bool,
                 t_local: float = 0.0, compute: bool = True, allreduce: bool = True, scale: float = 1.0,
                 algorithm: str = "ring") -> str:
    """Per-rank traces and the list file ``smpirun -replay`` takes; returns the list's path.
    Bytes are real ones; ``scale``: divide them by it (``byte_scale``)."""
    grad = envelope_compensated(gradient_bytes, scale, _allreduce_messages_per_byte(algorithm, p))
    # a count that p does not divide makes SMPI's ring reduce the remainder in one more allreduce
    grad = max(p, round(grad / p) * p) if gradient_bytes else 0
    def flops(seconds):
        return f"{max(0.0, seconds) * HOST_SPEED:.6f}"
    files = []
    counts = owner_counts(owners) if owners is not None else None
    for rank in range(p):
        lines = [f"{rank} init"]
        for it in range(iterations):
            post, wait = _gets(counts, rank, it, sample_bytes, scale) if counts is not None else ([], [])
            if compute:
                lines.append(f"{rank} compute {flops(t_data)}")
            if async_gets:
                lines += post
            elif post or t_local:
                lines += post + wait
                if t_local:
                    lines.append(f"{rank} compute {flops(t_local)}")
            if compute:
                lines.append(f"{rank} compute {flops(t_compute)}")
            if allreduce and p > 1:
                lines.append(f"{rank} allreduce {grad:.0f} 0")
            if async_gets:
                lines += wait
            if compute:
                lines.append(f"{rank} compute {flops(t_after)}")
        lines += [f"{rank} waitall", f"{rank} finalize"]
        path = os.path.join(directory, f"rank{rank}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        files.append(path)
    listing = os.path.join(directory, "traces.txt")
    with open(listing, "w") as f:
        f.write("\n".join(files) + "\n")
    return listing


def replay(directory: str, listing: str, p: int, gpus_per_node: int, algorithm: str = "ring",
           timeout_s: float = 1800) -> float:
    """Simulated seconds of a replay of ``listing`` on ``directory``/platform.xml."""
    if algorithm not in SMPI_ALLREDUCE:
        raise HpcclError(f"simgrid engine: allreduce algorithm {algorithm!r} unknown; expected one of "
                         f"{sorted(SMPI_ALLREDUCE)}.")
    hostfile = os.path.join(directory, "hosts.txt")
    with open(hostfile, "w") as f:
        f.write("".join(f"node{rank // gpus_per_node}\n" for rank in range(p)))
    cmd = [smpirun(), "-np", str(p), "-platform", os.path.join(directory, "platform.xml"),
           "-hostfile", hostfile, "-replay", listing,
           "--cfg=smpi/bw-factor:0:1", "--cfg=smpi/lat-factor:0:1", "--cfg=network/crosstraffic:0",
           "--cfg=network/TCP-gamma:0", f"--cfg=smpi/allreduce:{SMPI_ALLREDUCE[algorithm]}",
           "--cfg=smpi/display-timing:yes", "--log=root.thres:warning", "--log=smpi_utils.thres:info"]
    try:
        done = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HpcclError(f"simgrid engine: the replay of {p} ranks ran past {timeout_s:.0f} s; "
                         "fewer iterations or ranks would finish.") from None
    found = _SIMULATED.findall(done.stdout + done.stderr)
    if done.returncode != 0 or not found:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise HpcclError(f"simgrid engine: smpirun exited with code {done.returncode} replaying {listing} "
                         f"on {p} ranks and printed no simulated time; its last lines: {' | '.join(tail)}")
    return float(found[-1])


def iteration_time(m, p: int, gpus_per_node: int, net, b: float | None = None, rehearsal: bool = True,
                   cores_per_node: int | None = None, iterations: int | None = None, seed: int = 0,
                   algorithm: str | None = None, workdir: str | None = None) -> dict:
    """One prediction row (the keys of hpccl.analysis.model.iteration_time) from SMPI replays.

    ``iterations`` (default 3, 1 above 256 ranks, where one iteration's draws are already many
    and a replay of 1024 ranks takes about 45 s of CPU per iteration)."""
    if iterations is None:
        iterations = 3 if p <= 256 else 1
    b = m.batch if b is None else b
    r = m.representatives if rehearsal else 0
    k_cpu = 1.0
    if m.device.startswith("cpu") and cores_per_node:
        k_cpu = max(1.0, min(p, gpus_per_node) / cores_per_node)
    t_data = b * m.data_s_per_sample
    t_compute = (b + r) * m.compute_s_per_sample * k_cpu
    t_after = m.step_s + getattr(m, "other_s", 0.0)
    # the thread's own work: copies, inserts, and the measured cost per remote owner beyond its
    # latency and bytes (the analytical model's g, times the expected remote owners of a draw)
    remote = p * (1 - (1 - 1 / p) ** r) - (1 - (1 - 1 / p) ** r) if r else 0.0
    t_local = (r * m.fetch_s_per_rep + remote * getattr(m, "fetch_s_per_owner", 0.0)
               + (m.candidates * m.insert_s_per_candidate if r else 0.0))
    algorithm = algorithm or allreduce_algorithm(m, m.gradient_bytes, p)
    owners = draw_owners(p, r, iterations, seed) if r and p > 1 else None
    nodes = -(-p // gpus_per_node)
    scale = byte_scale(m.gradient_bytes, m.sample_bytes if r else None, p)
    limiter = host_limiter(m, net) if p > 1 else None
    net = network(m, net, p, gpus_per_node) if p > 1 else (net or _ONE_RANK)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpccl-simgrid-", dir=workdir) as tmp:
        write_platform(os.path.join(tmp, "platform.xml"), net, nodes, gpus_per_node, scale, limiter)

        def run(name, **kw):
            sub = os.path.join(tmp, name)
            os.makedirs(sub)
            listing = write_traces(sub, p, iterations, t_data, t_compute, t_after, m.gradient_bytes,
                                   sample_bytes=m.sample_bytes, scale=scale, algorithm=algorithm, **kw)
            return replay(tmp, listing, p, gpus_per_node, algorithm) / iterations

        plain = run("plain", owners=None, async_gets=False)
        t_ar = max(0.0, plain - (t_data + t_compute + t_after))
        t_fetch = t_insert = exposed = 0.0
        if r:
            t_insert = m.candidates * m.insert_s_per_candidate
            # the sync iteration's extra time is the whole rehearsal thread's, in context (ranks
            # that finish their gets early compute, rather than crowd the others' transfers)
            sync = run("sync", owners=owners, async_gets=False, t_local=t_local) - plain
            t_fetch = max(0.0, sync - t_insert)
            exposed = sync
            if m.async_rehearsal:
                overlapped = run("async", owners=owners, async_gets=True) - plain if owners is not None else 0.0
                exposed = max(0.0, overlapped, t_fetch + t_insert - (t_compute + t_ar))
            # taking the ready representatives from the thread (the 1-rank run's wait beyond its
            # fetch), as in the analytical model: no transfer, so no event to replay
            exposed += getattr(m, "handoff_s", 0.0)
    total = t_data + t_compute + t_after + t_ar + exposed
    return {"gpus": p, "batch_per_gpu": b, "t_data": t_data, "t_compute": t_compute, "t_step": m.step_s,
            "t_allreduce": t_ar, "t_fetch": t_fetch, "t_insert": t_insert, "rehearsal_exposed": exposed,
            "iteration_s": total, "samples_per_s": p * b / total, "t_other": getattr(m, "other_s", 0.0),
            "allreduce_algorithm": algorithm if p > 1 else None, "engine": "simgrid",
            "replay_wall_s": time.perf_counter() - started}


def predict(m, gpus: list[int], gpus_per_node: int, net, mode: str = "weak", global_batch: int | None = None,
            rehearsal: bool = True, cores_per_node: int | None = None, **kw) -> list[dict]:
    """Rows like hpccl.analysis.model.predict's, each replayed."""
    from hpccl.analysis.model import predict as rows_of
    return rows_of(m, gpus, gpus_per_node, net, mode, global_batch, rehearsal, cores_per_node,
                   iteration=iteration_time, **kw)


def disagreements(analytical: list[dict], simgrid: list[dict], tolerance: float = 0.25,
                  keys: tuple = ("iteration_s", "t_allreduce", "t_fetch", "rehearsal_exposed")) -> list[str]:
    """One line per GPU count and term where the two engines differ by more than ``tolerance``
    of the larger value (issue #26: the output says where they disagree by more than 25 %)."""
    out = []
    for a, s in zip(analytical, simgrid):
        for key in keys:
            x, y = a.get(key) or 0.0, s.get(key) or 0.0
            if max(x, y) > 0 and abs(x - y) > tolerance * max(x, y):
                out.append(f"{a['gpus']} GPUs: {key} analytical {x * 1e3:.3f} ms, simgrid {y * 1e3:.3f} ms "
                           f"({abs(x - y) / max(x, y):.0%} apart)")
    return out
