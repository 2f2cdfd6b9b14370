"""Run logs as pandas DataFrames: the Python API behind ``hpccl analyze``.

``open_run(path)`` reads a run directory (``log.h5`` and ``ranks/rank*.h5``, see
docs/run-directory.md) into a :class:`Run`; its properties are DataFrames built from the log's
tables, so a notebook, ``hpccl analyze`` (the kinds' summaries read these frames) and other tools see the
same numbers. A run still being written is read under HDF5 SWMR, which never blocks its
writer; a run killed without a word opens too, with ``status`` ``"killed"``.

The frame builders below also work on the raw ``read_h5`` dicts the summaries receive
(``table_frame``, ``rank_frame``, ``accuracy_frame``, ``timer_breakdown_frame``); the
summaries call them rather than reading the datasets themselves, so tables, plots and
frames cannot drift apart.

pandas is imported when a frame is first built, so ``import hpccl.analysis`` stays light.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence, Union

if TYPE_CHECKING:
    import pandas as pd

# Columns of a rank's timers table that index the iteration rather than time a phase.
TIMER_INDEX = ("task", "epoch")
TIMER_TOTAL = "total"
# Statuses a log records that are not a failure (the rest name what went wrong).
_NOT_FAILED = ("complete", "running", "preempted")


def _pd():
    import pandas
    return pandas


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- frames from read_h5 dicts ---------------------------------------------------------------------
def table_names(log: dict) -> list[str]:
    """The tables (groups of equally long columns) of a ``read_h5`` dict, sorted."""
    return sorted({name.rsplit("/", 1)[0] for name, value in log.items()
                   if "/" in name and getattr(value, "ndim", 0) == 1
                   and name.rsplit("/", 1)[0] not in ("eval", "solution")})


def table_frame(log: dict, group: str) -> "pd.DataFrame":
    """Table ``group`` of a ``read_h5`` dict, one column per dataset ``group/NAME``; an empty
    frame when the log has no such table (a kind that does not write it, a run that has not
    reached it yet)."""
    prefix = f"{group}/"
    columns = {name[len(prefix):]: value for name, value in log.items()
               if name.startswith(prefix) and "/" not in name[len(prefix):]
               and getattr(value, "ndim", 0) == 1}
    if not columns:
        return _pd().DataFrame()
    n = min(len(v) for v in columns.values())     # read_h5 already cuts a torn last row
    frame = _pd().DataFrame({k: v[:n] for k, v in sorted(columns.items())})
    return frame[_ordered(frame.columns)]


def _ordered(columns) -> list[str]:
    """Index-like columns first (in this order), then the others alphabetically."""
    first = [c for c in ("rank", "task", "index", "epoch", "arrival", "stage", "sequence", "iteration")
             if c in columns]
    return first + [c for c in columns if c not in first]


def rank_of(rank_log: dict) -> int:
    return int(rank_log["attrs"]["rank"])


def rank_frame(ranks: Sequence[dict], group: str) -> "pd.DataFrame":
    """Table ``group`` of every rank log, one below the other, with a ``rank`` column (and, for
    the per-iteration ``timers``, an ``iteration`` column counting each rank's iterations)."""
    pd = _pd()
    parts = []
    for r in ranks:
        frame = table_frame(r, group)
        if frame.empty:
            continue
        frame.insert(0, "rank", rank_of(r))
        if group == "timers":
            frame.insert(1, "iteration", range(len(frame)))
        parts.append(frame)
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


def evaluated_tasks(log: dict) -> int:
    """Tasks whose evaluation row is in the log (``tasks_completed``)."""
    return int(log["attrs"].get("tasks_completed", 0))


def accuracy_frame(log: dict, which: str = "top1") -> "pd.DataFrame":
    """The accuracy matrix of a continual run: row ``after_task`` i, column ``task`` j holds the
    accuracy on task j's test data after training task i (NaN for j > i); only the tasks
    evaluated so far. ``which``: ``"top1"`` or ``"top5"``. Empty for other kinds."""
    pd = _pd()
    matrix = log.get(f"eval/{which}")
    done = evaluated_tasks(log)
    if matrix is None or not done:
        return pd.DataFrame()
    frame = pd.DataFrame(matrix[:done, :done], index=pd.RangeIndex(done, name="after_task"),
                         columns=pd.RangeIndex(done, name="task"))
    return frame


def timer_breakdown_frame(ranks: Sequence[dict], phases: Sequence[str] | None = None) -> "pd.DataFrame":
    """Where each rank's iteration time went: one row per rank with ``rank``, ``hostname``,
    ``iterations``, ``total_s`` and, per phase P, ``P_s`` (seconds) and ``P_fraction`` (share
    of ``total_s``, 0 when nothing was timed). ``phases``: which, in this order (a phase a rank
    did not time counts 0 s); by default every phase the ranks timed, ``other`` (the time
    outside any phase) last."""
    pd = _pd()
    frames = [table_frame(r, "timers") for r in ranks]
    if phases is None:
        timed = sorted({c for f in frames for c in f.columns if c not in TIMER_INDEX + (TIMER_TOTAL,)})
        phases = [c for c in timed if c != "other"] + [c for c in timed if c == "other"]
    rows = []
    for r, timers in zip(ranks, frames):
        total = float(timers[TIMER_TOTAL].sum()) if TIMER_TOTAL in timers else 0.0
        row = {"rank": rank_of(r), "hostname": r["attrs"].get("hostname"),
               "iterations": len(timers), "total_s": total}
        for p in phases:
            seconds = float(timers[p].sum()) if p in timers else 0.0
            row[f"{p}_s"] = seconds
            row[f"{p}_fraction"] = seconds / total if total > 0 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def timer_phases(breakdown: "pd.DataFrame") -> list[str]:
    """The phases of a ``timer_breakdown_frame``, in its column order."""
    return [c[:-len("_s")] for c in breakdown.columns if c.endswith("_s") and c != "total_s"]


def buffer_frame(ranks: Sequence[dict]) -> "pd.DataFrame":
    """The rehearsal buffer of every rank after every task: ``rank``, ``task`` and the rank's
    ``buffer_*`` columns (samples stored, bytes stored and allocated, fetch and insert times,
    remote traffic). Empty for learners without a buffer."""
    frame = rank_frame(ranks, "tasks")
    if frame.empty or not any(c.startswith("buffer_") for c in frame.columns):
        return _pd().DataFrame()
    frame = frame.rename(columns={"index": "task"})
    return frame[["rank", "task"] + [c for c in frame.columns if c.startswith("buffer_")]]


def buffer_footprint(ranks: Sequence[dict]) -> "pd.DataFrame":
    """Each rank's rehearsal buffer after the last task it logged (last row per rank of
    :func:`buffer_frame`)."""
    frame = buffer_frame(ranks)
    if frame.empty:
        return frame
    return frame.groupby("rank", sort=True).tail(1).reset_index(drop=True)


def rank_attrs_frame(ranks: Sequence[dict]) -> "pd.DataFrame":
    """One row per rank log: its attributes (rank, hostname, node_index, device, status, peak
    memory, and the kind's own per-rank facts)."""
    rows = [{k: v for k, v in r["attrs"].items() if k not in ("kind", "schema_version")} for r in ranks]
    frame = _pd().DataFrame(rows)
    return frame[_ordered(frame.columns)] if not frame.empty else frame


def failures_frame(log: dict, ranks: Sequence[dict]) -> "pd.DataFrame":
    """The logs (the run's, ``rank`` NA; each rank's) that recorded a failure: a status other
    than complete, running or preempted, or a ``failure`` message. Columns ``rank``,
    ``status``, ``failure``; empty when nothing failed."""
    pd = _pd()
    rows = []
    for rank, attrs in [(None, log["attrs"])] + [(rank_of(r), r["attrs"]) for r in ranks]:
        status = _text(attrs.get("status", "unknown"))
        failure = attrs.get("failure")
        if status not in _NOT_FAILED or failure:
            rows.append({"rank": rank, "status": status,
                         "failure": None if failure is None else _text(failure)})
    frame = pd.DataFrame(rows, columns=["rank", "status", "failure"])
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def live_status(run_dir: str, log: dict, ranks: Sequence[dict]) -> str:
    """The run's status: the log's (complete, preempted, failed...), except that a log still
    saying ``running`` whose writer is known to have ended (the rank 0 process named in the
    run's lock note no longer runs on this host: a SIGKILL, an OOM kill, a node failure;
    ``hpccl.core.run_lock.holder_gone``, as ``hpccl status`` tells it) is ``"failed"`` when a
    rank logged a failure, ``"killed"`` otherwise. Where nothing tells (a writer on another
    node, no lock note) it stays ``running``."""
    from hpccl.core import run_lock
    status = _text(log["attrs"].get("status", "unknown"))
    if status != "running" or not run_lock.holder_gone(run_dir):
        return status
    failed = [_text(r["attrs"].get("status")) for r in ranks
              if _text(r["attrs"].get("status", "running")) not in _NOT_FAILED]
    return failed[0] if failed else "killed"


# -- the API ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run directory as read at :func:`open_run` time (reopen to see a running run grow).

    ``config`` is the job as it ran (the resolved YAML in the log), ``kind`` its job kind
    (``continual``, ``megabatch``, ``erm``, ``online_rnn``), ``status`` as in
    :func:`live_status` and ``log_status`` what ``log.h5`` itself says. Frames that a kind does
    not write are empty DataFrames.
    """

    path: str
    kind: str
    status: str
    log_status: str
    config: dict = field(repr=False)
    attrs: dict = field(repr=False)
    log: dict = field(repr=False)
    rank_logs: tuple = field(repr=False)

    @property
    def name(self) -> str:
        """The job's name (``name:`` in the job file)."""
        return _text(self.attrs.get("name", os.path.basename(os.path.normpath(self.path))))

    @property
    def world_size(self) -> int:
        return int(self.attrs.get("world_size", 0))

    # -- tables as they are in the logs ------------------------------------------------------------
    @property
    def tables(self) -> list[str]:
        """The names of ``log.h5``'s tables (e.g. epochs, tasks, checkpoints; arrivals and
        updates for megabatch; stages for erm; stream and evals for online_rnn)."""
        return table_names(self.log)

    @property
    def rank_tables(self) -> list[str]:
        """The names of the rank logs' tables (e.g. timers, tasks)."""
        return sorted({t for r in self.rank_logs for t in table_names(r)})

    def table(self, name: str) -> "pd.DataFrame":
        """Table ``name`` of ``log.h5`` (see :attr:`tables`); empty when the log has none."""
        return table_frame(self.log, name)

    def rank_table(self, name: str) -> "pd.DataFrame":
        """Table ``name`` of every rank log, with a ``rank`` column (see :attr:`rank_tables`)."""
        return rank_frame(self.rank_logs, name)

    @property
    def epochs(self) -> "pd.DataFrame":
        """One row per epoch (continual): task, epoch, loss, train_accuracy, lr, samples,
        time_s, iterations."""
        return self.table("epochs")

    @property
    def tasks(self) -> "pd.DataFrame":
        """One row per evaluated task (continual): index, train_time_s, samples, iterations,
        average_accuracy, classes, and per-task communication facts where logged."""
        return self.table("tasks")

    @property
    def checkpoints(self) -> "pd.DataFrame":
        """One row per checkpoint committed: task, epoch, reason, stall_s, write_s."""
        return self.table("checkpoints")

    @property
    def resumes(self) -> "pd.DataFrame":
        """One row per resume: time, command_line, hostnames, task, world_size."""
        return self.table("resumes")

    @property
    def rescales(self) -> "pd.DataFrame":
        """One row per resume on another number of ranks: task, from_ranks, to_ranks, lr
        multipliers and what the rehearsal buffer kept."""
        return self.table("rescales")

    # -- derived frames ------------------------------------------------------------------------------
    @property
    def accuracy(self) -> "pd.DataFrame":
        """Top-1 accuracy matrix (index ``after_task``, columns ``task``); see
        :func:`accuracy_frame`."""
        return accuracy_frame(self.log, "top1")

    @property
    def top5(self) -> "pd.DataFrame":
        """Top-5 accuracy matrix, shaped like :attr:`accuracy`."""
        return accuracy_frame(self.log, "top5")

    @property
    def forgetting(self) -> "pd.DataFrame":
        """After each evaluated task: ``average_accuracy`` and ``forgetting`` (the continual
        kind's definitions, the numbers ``hpccl analyze`` prints); empty for other kinds."""
        s = self.summary
        if "forgetting_per_task" not in s:
            return _pd().DataFrame()
        frame = _pd().DataFrame({"average_accuracy": s["average_accuracy"],
                                 "forgetting": s["forgetting_per_task"]})
        frame.index.name = "after_task"
        return frame

    @property
    def timers(self) -> "pd.DataFrame":
        """Every rank's per-iteration timers: rank, iteration, task, epoch, total and one
        column of seconds per phase."""
        return self.rank_table("timers")

    @property
    def timer_breakdown(self) -> "pd.DataFrame":
        """Per rank: seconds and share of iteration time per phase (see
        :func:`timer_breakdown_frame`)."""
        return timer_breakdown_frame(self.rank_logs)

    @property
    def buffer(self) -> "pd.DataFrame":
        """The rehearsal buffer per rank and task (see :func:`buffer_frame`)."""
        return buffer_frame(self.rank_logs)

    @property
    def ranks(self) -> "pd.DataFrame":
        """One row per rank: hostname, node, device, status, peak memory, ..."""
        return rank_attrs_frame(self.rank_logs)

    @property
    def failures(self) -> "pd.DataFrame":
        """The logs that recorded a failure (see :func:`failures_frame`)."""
        return failures_frame(self.log, self.rank_logs)

    @functools.cached_property
    def summary(self) -> dict:
        """The kind's summary, the dict ``hpccl analyze --format json`` prints for this run."""
        from hpccl.core import kinds
        return kinds.of_log(self.attrs).summary(self.path, self.log, list(self.rank_logs))


def open_run(path: Union[str, os.PathLike]) -> Run:
    """Read run directory ``path`` (complete, running, failed or killed) into a :class:`Run`.

    Raises HpcclError when ``path`` has no ``log.h5``, a log is damaged or its schema version
    is not the one this hpccl reads."""
    from hpccl.analysis.report import load_run
    from hpccl.core import kinds
    path = os.fspath(path)
    log, ranks = load_run(path)
    attrs = log["attrs"]
    config = _config(path, attrs)
    return Run(path=path, kind=kinds.of_log(attrs).name, status=live_status(path, log, ranks),
               log_status=_text(attrs.get("status", "unknown")), config=config, attrs=dict(attrs),
               log=log, rank_logs=tuple(ranks))


def _config(path: str, attrs: dict) -> dict:
    import yaml
    text = attrs.get("config_yaml")
    if text is None:
        return {}
    try:
        config = yaml.safe_load(_text(text))
    except yaml.YAMLError as e:
        from hpccl.core.errors import HpcclError
        raise HpcclError(f"{os.path.join(path, 'log.h5')}: attribute config_yaml is not YAML ({e}); "
                         "the log was damaged or not written by hpccl.") from None
    return config if isinstance(config, dict) else {}


RunLike = Union[Run, str, os.PathLike]


def concat(runs: Union[Iterable[RunLike], Mapping[str, RunLike]], frame: str = "epochs") -> "pd.DataFrame":
    """Frame ``frame`` (a :class:`Run` property such as ``"epochs"``, ``"timer_breakdown"``,
    ``"forgetting"``, or the name of a ``log.h5`` table such as ``"arrivals"``) of several runs,
    one below the other, with a first column ``run``: the mapping's key, or else the run's
    path. A run without that frame adds no rows. The accuracy matrices (``"accuracy"``,
    ``"top5"``) come in long form: columns after_task, task and the accuracy. Runs may be
    :class:`Run` objects or run directories."""
    pd = _pd()
    items = runs.items() if isinstance(runs, Mapping) else ((None, r) for r in runs)
    opened = [(label, run if isinstance(run, Run) else open_run(run)) for label, run in items]
    if frame not in _FRAMES and not any(frame in run.tables for _, run in opened):
        from hpccl.core.errors import HpcclError
        raise HpcclError(f"concat: unknown frame {frame!r}: expected one of {', '.join(_FRAMES)} or a "
                         f"table of a log.h5 (these runs have: "
                         f"{', '.join(sorted({t for _, r in opened for t in r.tables})) or 'none'}).")
    parts = []
    for label, run in opened:
        part = _frame_of(run, frame).copy()
        if isinstance(part.index, pd.RangeIndex) and part.index.name is None:
            part = part.reset_index(drop=True)
        else:
            part = part.reset_index()
        part.insert(0, "run", run.path if label is None else label)
        parts.append(part)
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


_FRAMES = ("epochs", "tasks", "checkpoints", "resumes", "rescales", "accuracy", "top5", "forgetting",
           "timers", "timer_breakdown", "buffer", "ranks", "failures")


def _frame_of(run: Run, frame: str) -> "pd.DataFrame":
    if frame not in _FRAMES:
        return run.table(frame)          # empty for a run whose log has no such table
    value = getattr(run, frame)
    if frame in ("accuracy", "top5") and not value.empty:    # long form: one row per cell
        value = value.stack(future_stack=True).rename(frame).reset_index()
    return value
