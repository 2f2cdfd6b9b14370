"""``hpccl status``: one line per run under the given directories, read while the runs write
(in hpccl.sched, which already reads the analysis, not the other way round: a run's scheduler
job is half of its status).

A run directory has ``log.h5`` (started) or ``submission.json`` (submitted by ``hpccl submit``,
maybe not started); a sweep directory has ``manifest.json`` and one run per point. Any other
directory is searched for those below it.

Each line: name, kind, status, progress in the kind's own units (its ``progress`` function,
hpccl.core.kinds), samples/s, ETA, the age of the last record (the log file's modification
time: every flush writes it) and, for a submitted run, the scheduler's job id and state.

Reading never gets in a writer's way: the log is opened read-only as an SWMR reader (no file
lock, hpccl.core.logs.open_for_reading), only the last rows of a few columns are read, and the
file is closed at once. A read that meets the writer in the middle of a flush is retried once;
a log that still does not read is one line saying why, not a traceback. The numbers are read
from the datasets directly (``hpccl.analysis.open_run`` builds whole DataFrames, more than a
status line needs); each is computed in one place: the kind's ``progress``.

Status beyond the log's own attribute: a log that says ``running`` whose writer is gone (the
pid in the run's lock note no longer runs on this host: hpccl.core.run_lock.holder_gone, never
by taking the lock, which would refuse a run starting at that moment) is ``killed`` or
``failed`` as hpccl.analysis.frames.live_status decides; one whose scheduler job has ended
(the writer on another node) is ``killed``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from hpccl.analysis.progress import LogView, Progress
from hpccl.core.errors import HpcclError

RETRY_S = 0.2            # pause before the one retry of a read that met a flush
SCHEDULER_TIMEOUT_S = 15
# Scheduler states in which the job's processes may still be writing (Slurm and PBS, spelled out).
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
               "RESIZING", "STOPPED", "SIGNALING", "QUEUED", "HELD", "WAITING", "EXITING",
               "TRANSIT", "BEGUN"}
PBS_STATES = {"Q": "QUEUED", "R": "RUNNING", "H": "HELD", "W": "WAITING", "E": "EXITING",
              "T": "TRANSIT", "B": "BEGUN", "S": "SUSPENDED", "F": "FINISHED", "X": "FINISHED",
              "M": "MOVED"}
COLUMNS = ("run", "name", "kind", "status", "progress", "samples/s", "ETA", "last record",
           "job", "job state", "note")


@dataclass
class RunStatus:
    run_dir: str
    name: str = ""
    kind: str = ""
    status: str = ""
    progress: Optional[Progress] = None
    age_s: Optional[float] = None         # since the log was last written
    job_id: Optional[str] = None
    job_state: Optional[str] = None
    note: str = ""


# -- finding runs ----------------------------------------------------------------------------------
def _is_run(path: str) -> bool:
    from hpccl.sched.submit import SUBMISSION_NAME
    return any(os.path.isfile(os.path.join(path, n)) for n in ("log.h5", SUBMISSION_NAME))


def _is_sweep(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "manifest.json"))


def find_runs(paths: list[str]) -> list[str]:
    """Run directories under ``paths`` (sweeps give their points, in the manifest's order)."""
    found: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            raise HpcclError(f"{path!r}: no such directory. HINT: give run directories, sweep "
                             "directories or a directory holding them (default: runs/).")
        found += _runs_in(path)
    return list(dict.fromkeys(found))


def _runs_in(path: str, seen: set | None = None) -> list[str]:
    if _is_sweep(path):
        from hpccl.sched.sweeps import load_manifest
        return [p["run_dir"] for p in load_manifest(path)["points"]]
    if _is_run(path):
        return [path]
    # A link back up the tree (/proc/1/root, a loop made by hand) is walked once, not forever.
    seen = set() if seen is None else seen
    real = os.path.realpath(path)
    if real in seen:
        return []
    seen.add(real)
    out = []
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        subdirs = [e.path for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError as e:
        raise HpcclError(f"{e.filename or path!r}: cannot list this directory while looking for runs in it "
                         f"({e.strerror or e}). HINT: give the run or sweep directories themselves.") from None
    for sub in subdirs:
        out += _runs_in(sub, seen)
    return out


# -- one run ---------------------------------------------------------------------------------------
def _read_log(path: str) -> tuple[dict, str, Optional[Progress]]:
    """(root attributes, status, progress) of a log, in one short read-only open."""
    from hpccl.core import kinds
    from hpccl.core.logs import open_for_reading, status_in
    with open_for_reading(path) as f:
        view = LogView(f)
        status = status_in(f)
        try:
            kind = kinds.of_log(view.attrs)
        except KeyError:          # a kind this hpccl does not know: status without progress
            kind = None
        progress = kind.progress_of(view) if kind is not None else None
    return view.attrs, status, progress


def read_log(path: str, retry_s: float = RETRY_S):
    """``_read_log``, retried once: a read may meet the writer between the two halves of an
    append (SWMR gives consistent metadata, not a whole row of every column)."""
    try:
        return _read_log(path)
    except FileNotFoundError:
        raise
    except Exception:      # noqa: BLE001 - h5py raises OSError, KeyError, ValueError, ... for damage
        time.sleep(retry_s)
    return _read_log(path)


def _submission(run_dir: str) -> Optional[dict]:
    from hpccl.sched.submit import JOB_IDS_NAME, SUBMISSION_NAME
    try:
        with open(os.path.join(run_dir, SUBMISSION_NAME), encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"error": f"{SUBMISSION_NAME} unreadable ({e})"}
    if not isinstance(record, dict):
        return {"error": f"{SUBMISSION_NAME} is not an object"}
    try:       # a resubmitted job (PBS) appends its new id
        with open(os.path.join(run_dir, JOB_IDS_NAME), encoding="utf-8") as f:
            ids = [line.strip() for line in f if line.strip()]
        if ids:
            record["job_id"] = ids[-1]
    except OSError:
        pass
    except ValueError as e:    # not UTF-8: overwritten
        return {"error": f"{JOB_IDS_NAME} unreadable ({e})"}
    return record


def scheduler_state(scheduler: str, job_id: str) -> str:
    """The job's state as its scheduler says it: 'RUNNING', 'PENDING', ...; 'not in queue' for
    a job the scheduler no longer lists; '?' with the reason where it cannot be asked."""
    if scheduler == "none" or job_id.startswith("local-"):
        pid = job_id.rpartition("-")[2]
        return "RUNNING" if pid.isdigit() and os.path.exists(f"/proc/{pid}") else "ENDED"
    if scheduler == "slurm":
        cmd = ["squeue", "-h", "-o", "%T", "-t", "all", "-j", job_id]   # all: also COMPLETED, FAILED
    elif scheduler == "pbs":
        cmd = ["qstat", "-x", "-f", job_id]
    else:
        return f"? (scheduler {scheduler!r})"
    if shutil.which(cmd[0]) is None:
        return f"? ({cmd[0]} not on PATH)"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=SCHEDULER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"? ({cmd[0]} did not answer in {SCHEDULER_TIMEOUT_S} s)"
    if scheduler == "slurm":
        states = r.stdout.split()
        if r.returncode == 0:
            return states[0] if states else "not in queue"
    else:
        m = re.search(r"job_state\s*=\s*(\w)", r.stdout)
        if r.returncode == 0 and m:
            return PBS_STATES.get(m.group(1), m.group(1))
    said = (r.stderr.strip() or r.stdout.strip()).splitlines()
    if said and re.search(r"invalid job id|unknown job id", said[0], re.IGNORECASE):
        return "not in queue"       # forgotten by the scheduler since it ended
    # The scheduler did not answer (controller down, ...): unknown, which marks no run killed.
    return f"? ({cmd[0]}: {said[0] if said else f'exit code {r.returncode}'})"


def run_status(run_dir: str, now: Optional[float] = None,
               ask: Callable[[str, str], str] = scheduler_state) -> RunStatus:
    now = time.time() if now is None else now
    st = RunStatus(run_dir=run_dir, name=os.path.basename(os.path.normpath(run_dir)))
    sub = _submission(run_dir)
    if sub is not None:
        if "error" in sub:
            st.note = sub["error"]
        elif sub.get("job_id"):
            st.job_id = str(sub["job_id"])
            st.job_state = ask(str(sub.get("scheduler", "")), st.job_id)
    log = os.path.join(run_dir, "log.h5")
    try:
        st.age_s = max(0.0, now - os.stat(log).st_mtime)
        attrs, st.status, st.progress = read_log(log)
    except FileNotFoundError:
        return _not_started(st, sub)
    except Exception as e:      # noqa: BLE001 - a damaged log is a line, not a traceback
        st.status = "damaged"
        st.note = f"log.h5 does not read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        return st
    # an HDF5 file, but not a run log (emptied, replaced); an array there has no truth value
    if not isinstance(attrs.get("kind"), str) or attrs["kind"] != "run":
        st.status, st.progress = "damaged", None
        found = repr(attrs["kind"]) if "kind" in attrs else "missing"
        st.note = f"log.h5 is not an hpccl run log (its attribute 'kind' is {found}, expected 'run')"
        return st
    from hpccl.core import kinds
    st.name = str(attrs.get("name", st.name))
    try:
        st.kind = kinds.of_log(attrs).name
    except KeyError:
        st.kind = str(attrs.get("job_kind", "?"))
    if st.status == "running":
        from hpccl.core.run_lock import holder_gone
        gone = holder_gone(run_dir)
        if gone:     # killed, or failed where a rank logged why: as hpccl.analysis.open_run says
            from hpccl.analysis.frames import live_status
            st.status = live_status(run_dir, {"attrs": {"status": st.status}}, _rank_attrs(run_dir))
        elif st.job_state is not None and _ended(st.job_state):
            gone, st.status = f"its job {st.job_id} is {st.job_state}", "killed"
        if gone:
            st.note = f"the log says running, but {gone}"
    if st.status != "running" and st.progress is not None:
        st.progress.eta_s = None          # nothing is left to wait for
    return st


def _rank_attrs(run_dir: str) -> list[dict]:
    """The root attributes of every rank log that reads (only read for a run whose writer
    has gone: whether a rank logged a failure)."""
    import glob

    from hpccl.core.logs import open_for_reading
    out = []
    for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), "ranks", "rank*.h5"))):
        try:
            with open_for_reading(path) as f:
                out.append({"attrs": dict(f.attrs)})
        except Exception:      # noqa: BLE001 - a rank log that does not read tells nothing
            continue
    return out


def _asking_once_per_failure() -> Callable[[str, str], str]:
    """``scheduler_state`` that, once a scheduler did not answer, gives its answer for every
    other job of it (a controller that is down would cost the timeout per run)."""
    failed: dict[str, str] = {}

    def ask(scheduler: str, job_id: str) -> str:
        if scheduler in failed:
            return failed[scheduler]
        state = scheduler_state(scheduler, job_id)
        if state.startswith("?"):
            failed[scheduler] = state
        return state
    return ask


def _ended(state: str) -> bool:
    return not state.startswith("?") and state not in LIVE_STATES


def _not_started(st: RunStatus, sub: Optional[dict]) -> RunStatus:
    if sub is None:           # a sweep point not submitted yet, or a log that vanished
        st.status = "not started"
    elif st.job_state is not None and _ended(st.job_state):
        st.status = "ended"
        st.note = f"job {st.job_id} is {st.job_state} and wrote no log.h5 (see the job's output)"
    else:
        st.status = "submitted"
    return st


# -- output ----------------------------------------------------------------------------------------
def _duration(seconds: Optional[float]) -> Optional[str]:
    if seconds is None or not np.isfinite(seconds):
        return None
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(value: Optional[float]) -> Optional[str]:
    return None if value is None or not np.isfinite(value) else f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def row(st: RunStatus) -> list:
    p = st.progress
    eta = p.eta_s if p is not None else None
    return [st.run_dir, st.name, st.kind or None, st.status, p.text if p else None,
            _rate(p.samples_per_s) if p else None, _duration(eta), _duration(st.age_s),
            st.job_id, st.job_state, st.note]


def as_json(st: RunStatus) -> dict:
    return asdict(st)


def render_status(statuses: list[RunStatus], fmt: str) -> str:
    if fmt == "json":
        from hpccl.analysis.report import _jsonable
        return json.dumps(_jsonable([as_json(s) for s in statuses]), indent=2)
    from hpccl.analysis.tables import render
    return render(list(COLUMNS), [row(s) for s in statuses], fmt=fmt)


def status_report(paths: list[str], fmt: str) -> str:
    runs = find_runs(paths)
    if not runs and fmt in ("text", "md"):
        return f"no runs under {', '.join(paths)} (a run has log.h5 or submission.json)"
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    ask = _asking_once_per_failure()
    text = render_status([run_status(r, ask=ask) for r in runs], fmt)
    return f"{stamp}\n{text}" if fmt == "text" else text


def watch(paths: list[str], fmt: str, every_s: float, out=sys.stdout,
          rounds: Optional[int] = None) -> None:
    """Redraw every ``every_s`` seconds until interrupted (or ``rounds`` times)."""
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    n = 0
    while rounds is None or n < rounds:
        text = status_report(paths, fmt)
        out.write(f"{clear}{text}\n" + ("" if clear else "\n"))
        out.flush()
        n += 1
        if rounds is None or n < rounds:
            time.sleep(every_s)
