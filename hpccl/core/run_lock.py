"""A run directory belongs to one run: rank 0 holds an advisory lock on ``RUN/.hpccl.lock``
for the run's life, and a second run into the same directory is refused at once, naming the
holder. ``flock`` locks die with their process, so a killed run leaves no stale lock. File
systems without flock (some parallel file systems mounted without it) get a warning and no
lock, rather than a refusal to run."""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import socket
import sys

from hpccl.core.errors import HpcclError

LOCK_NAME = ".hpccl.lock"
_held: dict[str, int] = {}


def _open(run_dir: str) -> int:
    return os.open(os.path.join(run_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)


def holder(run_dir: str) -> str | None:
    """Who holds ``run_dir`` now (its note: pid, host, start), or None."""
    if os.path.abspath(run_dir) in _held or not os.path.exists(os.path.join(run_dir, LOCK_NAME)):
        return None
    fd = _open(run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown holder"
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_held(run_dir: str) -> None:
    who = holder(run_dir)
    if who:
        raise HpcclError(f"run directory {run_dir!r} is in use by another hpccl run ({who}). Two "
                         "runs in one directory would overwrite each other's logs and checkpoints. "
                         "HINT: choose another --out, or wait for that run to end.")


def acquire(run_dir: str) -> None:
    """Hold ``run_dir`` until this process ends (rank 0 of the run)."""
    key = os.path.abspath(run_dir)
    if key in _held:
        return
    os.makedirs(run_dir, exist_ok=True)
    fd = _open(run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        refuse_if_held(run_dir)
        raise HpcclError(f"run directory {run_dir!r} is in use by another hpccl run.") from None
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            print(f"hpccl: warning: the file system of {run_dir!r} has no advisory locks ({e.strerror}); "
                  "nothing stops a second run from writing into it.", file=sys.stderr)
            return
        raise
    note = (f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{_dt.datetime.now().isoformat(timespec='seconds')}")
    os.ftruncate(fd, 0)
    os.pwrite(fd, note.encode(), 0)
    _held[key] = fd


def holder_gone(run_dir: str) -> str | None:
    """Why the process that holds (or held) ``run_dir`` is known to have ended, or None (it runs,
    or nothing tells). Read from the lock note alone, never by taking the lock: a run starting
    at that moment would find it held and be refused. Only a holder on this host can be
    looked at (its pid); one on another node gives None."""
    try:
        with open(os.path.join(run_dir, LOCK_NAME), "rb") as f:
            note = f.read(4096).decode(errors="replace").strip()
    except OSError:
        return None
    parts = note.split()      # "pid N on HOST since TIME", as acquire writes it
    if len(parts) < 4 or parts[0] != "pid" or not parts[1].isdigit() or parts[3] != socket.gethostname():
        return None
    pid = int(parts[1])
    return None if _hpccl_process(pid) else f"its rank 0 (pid {pid} on {parts[3]}) has ended"


def _hpccl_process(pid: int) -> bool:
    """Whether ``pid`` runs hpccl (a pid reused by another program is not the run)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"hpccl" in f.read()
    except FileNotFoundError:
        return False
    except OSError:           # no /proc: whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
