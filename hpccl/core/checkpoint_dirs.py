"""The checkpoint directories of a run on disk, and the renames that swap a new checkpoint in:

    checkpoint/            the latest complete checkpoint (its state.json is written last)
    checkpoint.prev1/ ...  the ones before it, newest first (``checkpoint.keep - 1`` of them)
    checkpoint.newK/       one being written (K counts this run's saves); complete once it
                           holds state.json, which is written just before the renames
    checkpoint.old/        the oldest, on its way out during a swap

A swap is a sequence of renames, so a job killed between two of them leaves a gap in the
history and a complete ``checkpoint.newK``. ``finish_interrupted_swap`` completes it; every
entry point calls it before it looks for a checkpoint. This module needs no torch: the job
script calls ``resumable`` before it starts the run.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil

from hpccl.core import env


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoint")


def write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _history(run_dir: str, depth: int) -> list[str]:
    latest = checkpoint_dir(run_dir)
    return [latest] + [f"{latest}.prev{i}" for i in range(1, depth)]


def move_in(run_dir: str, new: str, keep: int | None) -> None:
    """Make the complete checkpoint ``new`` the latest: every older one moves down one place
    (checkpoint -> prev1 -> prev2 ...), the oldest beyond ``keep`` is dropped. Each step is one
    rename, oldest first, so a job killed part way leaves one gap in the history and ``new``
    still in place; running this again (``finish_interrupted_swap``) moves down only the
    checkpoints above the gap and completes the swap. ``keep=None`` (the run's setting is not
    known there) drops nothing; the run's next commit prunes to its ``keep``."""
    existing = [int(m.group(1)) for m in (re.fullmatch(r"checkpoint\.prev(\d+)", name)
                                          for name in os.listdir(run_dir)) if m]
    depth = keep if keep is not None else max(existing, default=0) + 2
    history = _history(run_dir, depth)
    trash = os.path.join(run_dir, "checkpoint.old")
    gap = next((i for i, path in enumerate(history) if not os.path.exists(path)), None)
    moved = gap != 0
    if gap is None:                        # a full history: the oldest one kept goes
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(history[-1], trash)
        gap = len(history) - 1
    for i in range(gap, 0, -1):
        os.replace(history[i - 1], history[i])
    if moved:
        _maybe_die_mid_swap(new)
    os.replace(new, history[0])            # the moment the new checkpoint becomes the one resumed
    shutil.rmtree(trash, ignore_errors=True)
    if keep is not None:
        for n in existing:
            if n >= keep:
                shutil.rmtree(f"{history[0]}.prev{n}", ignore_errors=True)


def _maybe_die_mid_swap(new: str):
    """Fault injection for tests: ``HPCCL_INJECT_SWAP_KILL=PATH`` kills this process without
    a word (SIGKILL, as a node failure would) after the older checkpoints moved down and before
    the new one moved in, once: only while PATH does not exist. PATH gets a copy of the new
    checkpoint's state.json, so a test can tell which checkpoint a resume started from."""
    marker = env.read("HPCCL_INJECT_SWAP_KILL")
    if marker and not os.path.exists(marker):
        shutil.copyfile(os.path.join(new, "state.json"), marker)
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def new_dirs(run_dir: str) -> list[str]:
    """Checkpoints being written (``checkpoint.newK``), oldest first."""
    found = glob.glob(os.path.join(glob.escape(checkpoint_dir(run_dir)) + ".new*"))
    return sorted(found, key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))


def finish_interrupted_swap(run_dir: str) -> None:
    """Complete a checkpoint swap that a killed job left half done. A ``checkpoint.newK`` with
    a state.json is complete and newer than every other checkpoint (state.json is written
    last, just before the renames): it is moved in as ``_commit`` would have. Every entry
    point runs this first: ``hpccl run --resume``, the check of a run directory before a new
    start, and the job script's test for a checkpoint to resume (``resumable``)."""
    if not os.path.isdir(run_dir) or _swap_pending(run_dir) is None:
        return      # nothing to finish: no lock file either (a refused resume changes nothing)
    # Ranks launched directly (srun hpccl run --resume) all get here at once: one finishes
    # the swap, the others then find nothing to do.
    import fcntl
    fd = os.open(os.path.join(run_dir, ".checkpoint-swap.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:         # a file system without flock: the launchers' paths still serialise
            pass
        _finish_swap(run_dir)
    finally:
        os.close(fd)


def _swap_pending(run_dir: str) -> str | None:
    """The directory an interrupted swap left to move in: the complete ``checkpoint.newK``,
    else ``checkpoint.prev1`` when there is no latest (moved by hand, or a swap older than this
    code: the previous one is the newest there is); None when there is nothing to finish."""
    complete = [d for d in new_dirs(run_dir) if os.path.isfile(os.path.join(d, "state.json"))]
    if complete:
        return complete[-1]
    latest = checkpoint_dir(run_dir)
    if not os.path.exists(os.path.join(latest, "state.json")) and \
            os.path.isfile(os.path.join(f"{latest}.prev1", "state.json")):
        return f"{latest}.prev1"
    return None


def _finish_swap(run_dir: str) -> None:
    pending = _swap_pending(run_dir)      # again, under the lock: another rank may have done it
    if pending is None:
        return
    latest = checkpoint_dir(run_dir)
    if pending == f"{latest}.prev1":
        shutil.rmtree(latest, ignore_errors=True)
        os.replace(pending, latest)
    else:
        move_in(run_dir, pending, keep=None)


def resumable(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume, after finishing an interrupted swap."""
    finish_interrupted_swap(run_dir)
    return os.path.isfile(os.path.join(checkpoint_dir(run_dir), "state.json"))


if __name__ == "__main__":
    # The job script's test: exit 0 when RUN_DIR holds a checkpoint to resume, 10 when not.
    import sys
    sys.exit(0 if resumable(sys.argv[1]) else 10)
