"""A run as every job kind lives it: the run directory, both logs, the status.

A job kind's runner gets a ``RunSession`` and does only its own work::

    session = RunSession(cfg, run_dir, argv, world, resume)   # starts RUN_DIR (or reopens it)
    ... load data, build the model ...
    session.open_logs(run_attrs={...}, rank_attrs={...})       # log.h5 (rank 0), ranks/rankNNNNN.h5
    with session.running():                                     # status: complete, failed, preempted
        ... train, session.log.append(...), session.progress.message(...) ...
    session.report("final line")                                # rank 0 prints

The session gathers the hostnames once, writes the metadata every kind records
(``logs.run_log``/``logs.rank_log``), reopens both logs on resume (dropping rows logged after
the checkpoint), and closes them with the run's status however it ends: ``CollectiveError``
carries its own status (e.g. ``failed: non-finite loss``) and its message becomes the
``failure`` attribute; ``checkpoint.Preempted`` ends as ``preempted``. Clean-up that must know
whether the run ended well goes in ``at_close(fn(ok))``: after a failure MPI_Abort follows, so
nothing collective may run then.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from contextlib import contextmanager

from hpccl.core.errors import CollectiveError
from hpccl.core.logs import H5Log, rank_log, run_log, start_run_dir
from hpccl.core.memory import MemoryWatch
from hpccl.core.progress import Progress


class RunSession:
    def __init__(self, cfg, run_dir: str, argv: list[str], world, resume: bool = False):
        self.cfg, self.run_dir, self.argv, self.world, self.resume = cfg, run_dir, argv, world, resume
        self.progress = Progress(cfg.log.progress, enabled=world.is_root)
        self.log: H5Log | None = None        # rank 0's log.h5
        self.rank_log: H5Log | None = None   # this rank's ranks/rankNNNNN.h5
        self.hostnames: list[str] = []
        self.status = "failed"
        self._at_close = []
        self.memory = MemoryWatch()        # this rank's peak host memory, for its log
        self.tensorboard = None            # rank 0's LiveMirror of its logs (log.tensorboard)
        if resume:
            from hpccl.core import kinds
            kinds.of_job(cfg).refuse_resume(run_dir)
        else:
            start_run_dir(cfg, run_dir, world)

    # -- logs ------------------------------------------------------------------------------------
    def open_logs(self, run_attrs: dict | None = None, rank_attrs: dict | None = None,
                  rows: dict | None = None, rank_rows: dict | None = None, lr_multiplier=None) -> None:
        """Collective. ``run_attrs``/``rank_attrs``: the kind's own metadata. On resume,
        ``rows``/``rank_rows`` are the table lengths the checkpoint saw."""
        world = self.world
        self.hostnames = world.comm.allgather(world.hostname)
        if self.resume:
            self._reopen(rows, rank_rows, lr_multiplier)
        else:
            self.rank_log = rank_log(self.run_dir, world, **(rank_attrs or {}))
            self.rank_log.flush()
            if world.is_root:
                self.log = run_log(self.run_dir, self.cfg, world, self.argv, self.hostnames,
                                   **(run_attrs or {}))
                self.log.flush()
        if self.cfg.log.tensorboard and self.log is not None:
            from hpccl.core.tensorboard import SUBDIR, LiveMirror
            self.tensorboard = LiveMirror(os.path.join(self.run_dir, SUBDIR), self.log, self.rank_log)

    def _reopen(self, rows, rank_rows, lr_multiplier) -> None:
        world = self.world
        own = os.path.join(self.run_dir, "ranks", f"rank{world.rank:05d}.h5")
        # A rank that did not exist before (resumed on more ranks) starts its own log.
        self.rank_log = (H5Log.reopen(own, rank_rows) if rank_rows is not None and os.path.exists(own)
                         else rank_log(self.run_dir, world))
        if not world.is_root:
            return
        self.log = H5Log.reopen(os.path.join(self.run_dir, "log.h5"), rows)
        before = int(self.log.attrs.get("world_size", world.size))
        extra = {} if lr_multiplier is None else {"lr_multiplier": lr_multiplier}
        self.log.append("resumes", time=_dt.datetime.now().isoformat(timespec="seconds"),
                        command_line=" ".join(self.argv), hostnames=" ".join(self.hostnames),
                        task=int(self.log.attrs.get("tasks_completed", 0)), world_size=world.size, **extra)
        self.log.set_attrs(status="running", world_size=world.size, num_nodes=world.num_nodes,
                           hostnames=self.hostnames, **extra)
        if before > world.size:
            retire_rank_files(self.run_dir, world.size, before)

    def table_rows(self) -> dict:
        """Rank 0's table lengths (for a checkpoint; its own tables excluded)."""
        return {} if self.log is None else {k: n for k, n in self.log.lengths().items()
                                             if not k.startswith(("checkpoints/", "resumes/"))}

    # -- life cycle ------------------------------------------------------------------------------
    def at_close(self, fn) -> None:
        """``fn(ok)`` runs when the session closes, before the logs are closed."""
        self._at_close.append(fn)

    @contextmanager
    def running(self):
        from hpccl.core.checkpoint import Preempted
        try:
            yield self
            self.status = "complete"
        except Preempted:
            self.status = "preempted"
            raise
        except CollectiveError as e:
            self.status = e.status
            if self.log is not None:
                self.log.attrs["failure"] = str(e)
            raise
        finally:
            self.close()

    def close(self) -> None:
        ok = self.status in ("complete", "preempted")
        for fn in self._at_close:
            fn(ok)
        self._at_close = []
        self.memory.stop()
        if self.rank_log is not None:
            self.rank_log.set_attrs(**self.memory.peaks())
            self.rank_log.close(self.status)
        try:
            if self.log is not None:
                self.log.close(self.status)
        finally:            # after the logs: their last flush reaches the mirror too
            if self.tensorboard is not None:
                self.tensorboard.close()

    def report(self, text: str) -> None:
        """The run's final lines, printed by rank 0."""
        if self.world.is_root:
            print(text)
            sys.stdout.flush()


def retire_rank_files(run_dir: str, new_size: int, old_size: int) -> None:
    """Resumed on fewer ranks: the logs and buffer shards of ranks that are gone move to
    ``ranks/retired/`` and ``buffer/retired/``, so that per-rank tables (load balance,
    timers) and the buffer files cover the ranks of the run as it is."""
    for folder in ("ranks", "buffer"):
        retired = os.path.join(run_dir, folder, "retired")
        for r in range(new_size, old_size):
            name = f"rank{r:05d}.h5"
            if os.path.exists(os.path.join(run_dir, folder, name)):
                os.makedirs(retired, exist_ok=True)
                os.replace(os.path.join(run_dir, folder, name), os.path.join(retired, name))
