"""The host memory one rank of an ``online_rnn`` job holds, from the job alone (and a
``task: file`` file's shapes), so that a size the machine cannot hold is refused before any
rank starts instead of a MemoryError on the ranks (``rnn.hidden: 1000000`` asks for an
influence matrix of 10**19 bytes).

Per rank, as rtrl/job.py holds it:

- **task data**: every rank holds the whole task (float32 [N, T, D]), and the spiral
  generator builds it through float64 arrays of the same shape first;
- **network and optimizer**: the EGRU's weights and recurrent mask, with gradients and two
  Adam moments;
- **influence matrix** (RTRL): M [hidden, P] and the product that replaces it each step (and,
  for sparse RTRL, the scaled copy of M that addmm adds to), where P counts the tracked
  parameters (every recurrent weight for dense RTRL, the unmasked ones for sparse RTRL);
- **BPTT graph** (``mode: bptt``): what autograd keeps per step of a sequence;
- **runtime**: Python, torch, MPI, HDF5, as for continual jobs.

Measured here, 1 rank, hidden 200, 17 steps: dense RTRL peaked at 576 MB against 548 MB
estimated, sparse RTRL (no weights masked) at 646 MB against 646 MB.
"""

from __future__ import annotations

import math

from hpccl.core.errors import ConfigError
from hpccl.core.memory import GB, HostMemoryEstimate, node_memory_bytes

RUNTIME_BYTES = 0.35 * GB
FLOAT = 4
BPTT_TENSORS_PER_STEP = 12     # gates, states and pseudo-derivatives autograd saves, per unit


def _task_shape(rc) -> tuple[int, int, int]:
    """(examples, steps, inputs) of the job's task, without building it."""
    if rc.task == "spiral":
        return rc.num_examples, rc.seq_len, 2
    if rc.task == "digits":
        return 1797, 8, 8
    import h5py
    with h5py.File(rc.path, "r") as f:     # check_input has read it already: shapes only
        n, t, d = f["x"].shape
        if "x_test" in f:
            n += f["x_test"].shape[0]
    return n, t, d


def estimate(cfg, ranks: int, on_gpu: bool) -> HostMemoryEstimate:
    rc = cfg.rnn
    n_ex, steps, inputs = _task_shape(rc)
    hidden, classes = rc.hidden, 10        # classes: a readout term, small beside the rest
    data = n_ex * steps * inputs * FLOAT * (3 if rc.task == "spiral" else 1)
    recurrent = hidden * hidden
    params = 3 * hidden * inputs + 3 * recurrent + 4 * hidden + classes * (hidden + 1)
    network = 4 * params * FLOAT + recurrent * FLOAT          # + the mask
    influence = bptt = 0
    if rc.mode == "bptt":
        bptt = steps * hidden * BPTT_TENSORS_PER_STEP * FLOAT
    else:
        tracked = recurrent if rc.mode == "rtrl_dense" else math.ceil((1 - rc.weight_sparsity) * recurrent)
        p = 3 * hidden * inputs + 3 * tracked + 3 * hidden + (hidden if rc.learn_threshold else 0)
        # Alive at once: M, its replacement and (sparse: addmm's scaled copy of M) one more.
        influence = (2 if rc.mode == "rtrl_dense" else 3) * hidden * p * FLOAT
    if on_gpu:          # these live in device memory
        network = influence = bptt = 0
    return HostMemoryEstimate({"task data": data, "network and optimizer": network,
                               "influence matrix": influence, "BPTT graph": bptt,
                               "runtime": RUNTIME_BYTES})


def check_fits_this_machine(cfg, source: str) -> None:
    """One rank alone needing more than this machine's memory cannot run here, whatever the
    layout: refused with the sizes that make it so."""
    memory = node_memory_bytes()
    if not memory:
        return
    need = estimate(cfg, 1, False)
    if need.per_rank <= memory:
        return
    rc = cfg.rnn
    raise ConfigError(
        f"{source}: section 'rnn' (hidden {rc.hidden}, mode {rc.mode}, task {rc.task}"
        + (f", {rc.num_examples} examples of seq_len {rc.seq_len}" if rc.task == "spiral" else "")
        + f"): one rank would hold about {need.per_rank / GB:.3g} GB of host memory "
        f"({need.describe()}), more than this machine's {memory / GB:.0f} GB. "
        + HINTS[max(need.parts, key=need.parts.get)])


HINTS = {
    "task data": "HINT: fewer or shorter sequences (rnn.num_examples, rnn.seq_len); every rank "
                 "holds the whole task.",
    "network and optimizer": "HINT: a smaller rnn.hidden (the recurrent weights grow as its square).",
    "influence matrix": "HINT: the RTRL influence matrix grows as hidden^3 (hidden x the recurrent "
                        "weights it tracks): a smaller rnn.hidden, or rtrl_sparse with "
                        "rnn.weight_sparsity closer to 1.",
    "BPTT graph": "HINT: shorter sequences (rnn.seq_len), or rnn.update_every to cut them.",
    "runtime": "",
}
