"""The run directory of a job, and a job from start to end on one rank.

``run_job`` is what every rank runs: it starts the World and hands the rank to its kind's
runner (``hpccl.core.kinds``). ``check_run_dir`` decides, before any rank starts, whether a
directory may receive a new run.
"""

from __future__ import annotations

import datetime as _dt
import glob
import os

from hpccl.core import checkpoint, kinds
from hpccl.core.errors import CollectiveError, ConfigError
from hpccl.core.runtime import init_world, shutdown_world


def default_run_dir(cfg) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(cfg.log.dir, f"{cfg.name}-{stamp}")


# What a run writes into its directory (the rest, e.g. what `hpccl submit` put there, stays).
RUN_OUTPUTS = ("config.yaml", "log.h5", "ranks", "buffer", "checkpoint.new*", "rnn_state.pt")


def check_run_dir(run_dir: str, set_aside: bool = False) -> str | None:
    """Refuse a directory that holds a complete run, or a checkpoint (resume it instead). A
    run that ended before its first checkpoint (killed, failed) is no reason to refuse a
    requeued job: with ``set_aside`` its outputs move to ``attempts/N/`` and the directory is
    reused; the returned note says so."""
    log = os.path.join(run_dir, "log.h5")
    if not os.path.exists(log):
        return None
    # A job killed between the renames of a checkpoint swap left no checkpoint/ but a complete
    # checkpoint.newK: finish the swap, so that run is resumed, not moved aside as a failed start.
    checkpoint.finish_interrupted_swap(run_dir)
    status = _status_of(log)
    if status == "complete":
        raise ConfigError(f"run directory {run_dir!r} already holds a run (log.h5, status complete). "
                          "HINT: choose another --out, or leave --out away for a new time-stamped "
                          "directory.")
    if os.path.exists(os.path.join(checkpoint.checkpoint_dir(run_dir), "state.json")):
        raise ConfigError(f"run directory {run_dir!r} already holds a run (log.h5, status {status}) "
                          f"with a checkpoint. HINT: continue it with 'hpccl run --resume {run_dir}', "
                          "or choose another --out.")
    if not set_aside:
        return None
    attempts = os.path.join(run_dir, "attempts")
    os.makedirs(attempts, exist_ok=True)
    n = 1 + sum(1 for name in os.listdir(attempts) if name.isdigit())
    target = os.path.join(attempts, str(n))
    os.makedirs(target)
    for pattern in RUN_OUTPUTS:
        for path in glob.glob(os.path.join(glob.escape(run_dir), pattern)):
            os.replace(path, os.path.join(target, os.path.basename(path)))
    return (f"run directory {run_dir!r} held a run that ended without a checkpoint (status "
            f"{status}); its logs were moved to {target} and the run starts from the beginning")


def _status_of(log_path: str) -> str:
    from hpccl.core.logs import status_of
    return status_of(log_path)


def run_job(cfg, run_dir: str, argv: list[str], resume: bool = False) -> dict:
    world = init_world(cfg.runtime)
    # No collective clean-up on failure: the caller aborts the whole job, and a rank that
    # waited in a collective for peers stuck elsewhere would hang instead.
    try:
        summary = kinds.of_job(cfg).run(cfg, run_dir, argv, world, resume)
    except (checkpoint.Preempted, CollectiveError):
        shutdown_world(world)  # every rank got here together: a clean, coordinated exit
        raise
    shutdown_world(world)
    return summary
