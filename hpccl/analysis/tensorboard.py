"""``hpccl analyze RUN... --tensorboard DIR``: finished runs' logs as TensorBoard event files,
one folder a run (``DIR/<run directory name>/``), with the tags and steps of the live writer
(``log.tensorboard``; both come from ``hpccl.core.tensorboard.Scalars``), so exported and live
runs compare in one TensorBoard. The logs are read by ``open_run``, as every analysis reads
them."""

from __future__ import annotations

import os

from hpccl.core.errors import HpcclError
from hpccl.core.tensorboard import ACCURACY, STEPS, TIMERS, Scalars, write_points


def run_name(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(run_dir)))


def check_names(runs: list[str], out_dir: str) -> None:
    """Runs that would share a folder of ``out_dir``, or a file in a run's folder's place,
    refused before anything is written."""
    seen: dict[str, str] = {}
    for run in runs:
        if os.path.isfile(os.path.join(run, "manifest.json")):
            continue            # a sweep: analyze summarises it, nothing is exported
        name = run_name(run)
        if name in seen and os.path.abspath(seen[name]) != os.path.abspath(run):
            raise HpcclError(f"--tensorboard {out_dir!r}: expected runs whose directories have distinct "
                             f"names (each is written to DIR/<name>/), found {seen[name]!r} and {run!r}, "
                             f"both named {name!r}. HINT: export them in two calls, into two directories.")
        seen[name] = run
        folder = os.path.join(out_dir, name)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise HpcclError(f"--tensorboard {out_dir!r}: expected {folder!r} to be a directory or "
                             f"absent (run {run!r} is written there), found a file. HINT: choose "
                             "another directory, or move the file.")


def _columns(frame, table: str) -> dict:
    return {f"{table}/{c}": frame[c].to_numpy() for c in frame.columns}


def points(run) -> list[tuple[str, int, float]]:
    """Every point of a run (an ``open_run`` Run): ``log.h5``'s tables and accuracy matrices,
    then rank 0's timers, fed to ``Scalars`` whole, in the order the live writer sees them."""
    scalars = Scalars()
    rows = {}
    for table in STEPS:
        if table in run.tables:
            rows.update(_columns(run.table(table), table))
    matrices = {name: getattr(run, "accuracy" if name.endswith("top1") else "top5").to_numpy()
                for name in ACCURACY}
    found = scalars.run(rows, {}, {name: m for name, m in matrices.items() if m.size})
    timers = run.timers
    if len(timers):
        found += scalars.rank0(_columns(timers[timers["rank"] == 0], TIMERS))
    return found


def export_runs(runs: list[str], out_dir: str) -> list[str]:
    """Each run's scalars into ``out_dir/<name>/`` (its event files replaced); the folders."""
    from hpccl.analysis.frames import open_run
    check_names(runs, out_dir)
    written = []
    for run in dict.fromkeys(os.path.abspath(r) for r in runs):
        folder = os.path.join(out_dir, run_name(run))
        write_points(folder, points(open_run(run)))
        written.append(folder)
    return written
