"""A watchdog on communication: a rank that waits in one collective, gradient allreduce or
rehearsal draw for longer than ``runtime.hang_timeout`` ends the whole job.

Across hosts, a peer can go silent without its connections closing: a node that loses power
or its link (a partition, a hung switch) leaves every TCP connection to it open, and a
collective that waits on it waits for as long as TCP retransmits (15 minutes and more with
Linux's defaults) or for ever. MPI reports nothing meanwhile. The watchdog bounds that wait:
only time spent *waiting on others* counts (a long local phase, loading a task or writing a
checkpoint, never fires it), and when one wait passes the limit the rank names itself, its host
and what it was waiting for, and calls ``MPI_Abort``. Should the abort itself hang (its messages
go to the same silent peers), the process exits after a grace period.

The rank logs are written only by appends and whole-file replacements (core/logs.py), so a
job ended here leaves them readable, with their status still 'running': an incomplete run,
which the job script's requeue or ``hpccl run --resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager, nullcontext

EXIT_HANG = 4            # the job's exit code when a watchdog ended it
ABORT_GRACE_S = 10.0     # then the process exits even if MPI_Abort did not return


class Watchdog:
    def __init__(self, timeout_s: float, rank: int, hostname: str, abort=None,
                 clock=time.monotonic, exit_process=os._exit):
        self.timeout_s = float(timeout_s)
        self.rank, self.hostname = rank, hostname
        self._abort = abort
        self._clock = clock
        self._exit = exit_process
        self._since = None          # when the current wait started (None: not waiting)
        self._what = ""
        self.where = ""             # e.g. "task 2, epoch 3": set by the training loop
        self.fired = None           # the message, once fired
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hpccl-watchdog", daemon=True)
        self._thread.start()

    @contextmanager
    def waiting(self, what: str):
        """Wrap a call that waits on other ranks."""
        outer = self._since
        if outer is None:           # nested waits count from the outermost
            self._since, self._what = self._clock(), what
        try:
            yield
        finally:
            if outer is None:
                self._since = None

    def _watch(self):
        period = min(1.0, self.timeout_s / 10)
        while not self._stop.wait(period):
            since = self._since
            if since is not None and self._clock() - since > self.timeout_s:
                self._fire(self._clock() - since)
                return

    def _fire(self, waited: float):
        where = f" ({self.where})" if self.where else ""
        self.fired = (
            f"hpccl: error on rank {self.rank} ({self.hostname}): waited {waited:.0f} s in "
            f"{self._what}{where}, longer than runtime.hang_timeout ({self.timeout_s:g} s): a peer "
            "stopped answering (a lost node, a network partition, or a rank stuck outside MPI). "
            f"Ending the job (exit {EXIT_HANG}); the logs so far stay readable, and a requeue or "
            "'hpccl run --resume RUN_DIR' continues from the last checkpoint. HINT: raise "
            "runtime.hang_timeout if a step can legitimately wait this long.\n")
        try:
            sys.stderr.write(self.fired)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        # MPI_Abort sends to the same silent peers and may block: exit regardless after a grace.
        timer = threading.Timer(ABORT_GRACE_S, self._exit, args=(EXIT_HANG,))
        timer.daemon = True
        timer.start()
        if self._abort is not None:
            self._abort(EXIT_HANG)
        else:
            self._exit(EXIT_HANG)

    def stop(self):
        self._stop.set()


class NoWatchdog:
    """``runtime.hang_timeout: off``: every wait unbounded."""
    where = ""
    fired = None

    def waiting(self, what: str):
        return nullcontext()

    def stop(self):
        pass
