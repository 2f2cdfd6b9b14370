"""``hpccl analyze RUN... --tensorboard DIR``: finished runs' logs as TensorBoard event files,
one folder a run (``DIR/<run directory name>/``), with the tags and steps of the live writer
(``log.tensorboard``; both come from ``hpccl.core.tensorboard.Scalars``), so exported and live
runs compare in one TensorBoard."""

from __future__ import annotations

import os

from hpccl.core.errors import HpcclError
from hpccl.core.tensorboard import points_of_run, write_points


def run_name(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(run_dir)))


def check_names(runs: list[str], out_dir: str) -> None:
    """Two runs that would share a folder of ``out_dir``, refused before anything is written."""
    seen: dict[str, str] = {}
    for run in runs:
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


def export_runs(runs: list[str], out_dir: str) -> list[str]:
    """Each run's scalars into ``out_dir/<name>/`` (its event files replaced); the folders."""
    check_names(runs, out_dir)
    written = []
    for run in dict.fromkeys(os.path.abspath(r) for r in runs):
        folder = os.path.join(out_dir, run_name(run))
        write_points(folder, points_of_run(run))
        written.append(folder)
    return written
