"""TensorBoard scalars of a run, made from its HDF5 logs by one mapping, live or afterwards.

``log.tensorboard: true`` makes rank 0 mirror its logs into ``RUN_DIR/tensorboard/`` as they
are flushed (``LiveMirror``, attached to the logs by the run session, so every job kind gets
it from the place its rows are written); ``hpccl analyze RUN --tensorboard DIR`` feeds a
finished run's log, as ``hpccl.analysis.open_run`` reads it, through the same ``Scalars``
mapping (``hpccl.analysis.tensorboard``). Rows fed in pieces
(flush by flush) give what the whole log fed at once gives, so live and exported runs of the
same job show the same tags at the same steps.

Tags: ``TABLE/COLUMN`` for every numeric column of the per-epoch/-task/-arrival/-stage
tables of ``log.h5`` (docs/run-directory.md), at the step the ``STEPS`` table names (the row
number for ``epochs``: epochs counted over all tasks); ``epochs/samples_per_s``;
``accuracy/task_J`` and ``accuracy_top5/task_J`` (the accuracy on task J after task T, step T);
``time/PHASE``: rank 0's iteration time in each phase (data load, rehearsal wait, forward and
backward, allreduce and step, other, total) summed over an epoch, at that epoch's step.

Values are TensorBoard's ``simple_value``, a float32: the HDF5 log keeps float64. NaN (not
measured, e.g. ``stages/subopt`` without a known optimum) is left out.

The writer is tensorboard's own ``EventFileWriter`` with its protobufs: no torch, so an
export runs where only the logs are.
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np

# Tables of log.h5 mirrored, and the column that is their step (None: the row number).
STEPS = {"epochs": None,        # continual: one row per epoch, all tasks
         "tasks": "index",       # continual: after each task's evaluation
         "arrivals": "arrival",  # megabatch
         "updates": "index",     # megabatch
         "stages": "stage",      # erm
         "evals": "sequence",    # online_rnn: each evaluation
         "stream": "sequence"}   # online_rnn: each sequence
# Columns that say where a row is rather than what was measured.
_NOT_SCALARS = {"epochs": {"task", "epoch"}}
ACCURACY = {"eval/top1": "accuracy", "eval/top5": "accuracy_top5"}
TIMERS = "timers"               # rank 0's per-iteration phase times (ranks/rank00000.h5)
_TIMER_KEYS = ("task", "epoch")
SUBDIR = "tensorboard"          # RUN_DIR/tensorboard/ of the live writer
EVENT_GLOB = "events.out.tfevents.*"


class Scalars:
    """``(tag, step, value)`` points from a run's log rows, fed in the order they were written:
    ``run(rows, first, arrays)`` for ``log.h5``, ``rank0(rows)`` for rank 0's own log. ``rows``:
    {dataset: new rows}, ``first``: {dataset: index of its first new row}, ``arrays``: datasets
    replaced whole. The state kept between calls (the step of each epoch, the accuracy rows
    already given, the phase sums of an epoch) makes the pieces add up to the whole."""

    def __init__(self):
        self._epoch_step: dict[tuple, int] = {}   # (task, epoch) -> step of its epochs row
        self._accuracy_rows = dict.fromkeys(ACCURACY, 0)
        self._timer_sums: dict[tuple, dict] = {}   # the last epoch's phase sums (may go on)

    def run(self, rows: dict, first: dict, arrays: dict) -> list[tuple[str, int, float]]:
        points = []
        for table, step_column in STEPS.items():
            columns = {name.split("/", 1)[1]: np.asarray(values) for name, values in rows.items()
                       if name.split("/", 1)[0] == table and "/" in name}
            if not columns:
                continue
            n = min(len(v) for v in columns.values())
            if step_column is None:
                start = min(first.get(f"{table}/{c}", 0) for c in columns)
                steps = np.arange(start, start + n)
            elif step_column in columns:
                steps = columns[step_column][:n]
            else:
                continue
            if table == "epochs" and set(_TIMER_KEYS) <= set(columns):
                for task, epoch, step in zip(columns["task"][:n], columns["epoch"][:n], steps):
                    self._epoch_step[(int(task), int(epoch))] = int(step)
            skip = _NOT_SCALARS.get(table, set()) | {step_column}
            for column, values in sorted(columns.items()):
                if column in skip or values.dtype.kind not in "iufb":
                    continue
                points += [(f"{table}/{column}", int(s), float(v)) for s, v in zip(steps, values[:n])]
            if table == "epochs" and {"samples", "time_s"} <= set(columns):
                points += [("epochs/samples_per_s", int(s), float(k) / float(t))
                           for s, k, t in zip(steps, columns["samples"][:n], columns["time_s"][:n]) if t > 0]
        for name, prefix in ACCURACY.items():
            if name in arrays:
                points += self._accuracy(name, prefix, np.asarray(arrays[name], dtype=float))
        return [p for p in points if not np.isnan(p[2])]

    def _accuracy(self, name, prefix, matrix) -> list:
        """Rows of the accuracy matrix not given yet (a row is filled once, after its task)."""
        points = []
        if matrix.ndim != 2:
            return points
        filled = [t for t in range(matrix.shape[0]) if np.isfinite(matrix[t]).any()]
        for t in filled:
            if t >= self._accuracy_rows[name]:
                points += [(f"{prefix}/task_{j}", t, float(matrix[t, j]))
                           for j in range(matrix.shape[1]) if np.isfinite(matrix[t, j])]
        if filled:
            self._accuracy_rows[name] = max(self._accuracy_rows[name], filled[-1] + 1)
        return points

    def rank0(self, rows: dict) -> list[tuple[str, int, float]]:
        """Phase times summed per epoch, at the step of the epoch's row in ``log.h5`` (fed
        first: an epoch's row is flushed before its timer rows). An epoch cut short by a
        failure has no row and no point. An epoch whose rows arrive in two pieces gives its
        sum so far, then the whole sum at the same step (the live writer only; the flush at
        the end of every epoch makes this not happen in a run that goes on)."""
        columns = {name.split("/", 1)[1]: np.asarray(values) for name, values in rows.items()
                   if name.startswith(TIMERS + "/")}
        if not set(_TIMER_KEYS) <= set(columns):
            return []
        phases = sorted(c for c, v in columns.items() if c not in _TIMER_KEYS and v.dtype.kind == "f")
        n = min(len(v) for v in columns.values())
        seen = []
        for i in range(n):
            key = (int(columns["task"][i]), int(columns["epoch"][i]))
            if key not in self._timer_sums:
                self._timer_sums = {k: v for k, v in self._timer_sums.items() if k in seen}  # epochs done
                self._timer_sums[key] = dict.fromkeys(phases, 0.0)
            if key not in seen:
                seen.append(key)
            sums = self._timer_sums[key]
            for p in phases:
                sums[p] = sums.get(p, 0.0) + float(columns[p][i])
        points = []
        for key in seen:
            if key in self._epoch_step:
                points += [(f"time/{p}", self._epoch_step[key], v) for p, v in sorted(self._timer_sums[key].items())]
        return points


def _event(tag: str, step: int, value: float, wall_time: float | None = None):
    import time

    from tensorboard.compat.proto import event_pb2, summary_pb2
    return event_pb2.Event(wall_time=time.time() if wall_time is None else wall_time, step=step,
                           summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
                               tag=tag, simple_value=value)]))


def _fresh_writer(logdir: str):
    """An event file in ``logdir``, whose old event files are removed first: the directory
    shows the log as it is now (a resume drops rows logged after its checkpoint)."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    os.makedirs(logdir, exist_ok=True)
    for old in glob.glob(os.path.join(logdir, EVENT_GLOB)):
        os.remove(old)
    return EventFileWriter(logdir, max_queue_size=1000, flush_secs=3600)   # flushed per epoch


def _row_columns(log) -> tuple[dict, dict]:
    """What an open ``H5Log`` holds: ({table column: rows}, {whole array: values})."""
    stored = log._stored()
    return ({n: v for n, (role, v) in stored.items() if role == "row"},
            {n: v for n, (role, v) in stored.items() if role == "whole"})


class LiveMirror:
    """Rank 0's live writer: observes ``run_log`` (log.h5) and its own ``rank_log`` and writes
    the points of every flush into ``logdir``, flushing the event file each time (once an
    epoch, so TensorBoard shows a run as it trains).

    A failure of the writer (a full disk, a removed directory) does not stop training: the
    HDF5 logs are the record and ``hpccl analyze --tensorboard`` rebuilds the events from
    them. It is not silent either: ``warn`` (stderr) gets one line naming the directory and the error,
    the run log gets a ``tensorboard_error`` attribute, and the mirror writes nothing more."""

    def __init__(self, logdir: str, run_log, rank_log, warn=None):
        self.logdir, self._log = logdir, run_log
        # stderr, not the progress lines: those may be off (log.progress: off)
        self._warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self.error: str | None = None
        self._writer = None
        self._scalars = Scalars()
        self._guarded(self._start, run_log, rank_log)
        run_log.observers.append(lambda rows, first, arrays: self._guarded(
            self._write, self._scalars.run(rows, first, arrays)))
        rank_log.observers.append(lambda rows, first, arrays: self._guarded(
            self._write, self._scalars.rank0(rows)))

    def _start(self, run_log, rank_log):
        self._writer = _fresh_writer(self.logdir)
        # A resumed run: what the logs kept, then what comes.
        rows, arrays = _row_columns(run_log)
        points = self._scalars.run(rows, {}, arrays)
        points += self._scalars.rank0(_row_columns(rank_log)[0])
        self._write(points)

    def _write(self, points):
        for tag, step, value in points:
            self._writer.add_event(_event(tag, step, value))
        self._writer.flush()

    def _guarded(self, fn, *args):
        if self.error is not None:
            return
        try:
            fn(*args)
        except Exception as e:    # noqa: BLE001 -- any failure of the writer: see the class doc
            self.error = f"{type(e).__name__}: {e}"
            self._warn(f"hpccl: warning: the TensorBoard writer failed ({self.error}); training goes "
                       f"on without it, and {self.logdir} stops here. The HDF5 log has everything: "
                       "'hpccl analyze RUN --tensorboard DIR' writes the events from it.")
            self._log.set_attrs(tensorboard_error=self.error)

    def close(self):
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception:     # noqa: BLE001 -- already reported by _guarded, or nothing lost
                pass


def write_points(logdir: str, points) -> None:
    """``points`` as the only event file of ``logdir``."""
    writer = _fresh_writer(logdir)
    try:
        for tag, step, value in points:
            writer.add_event(_event(tag, step, value))
    finally:
        writer.close()
