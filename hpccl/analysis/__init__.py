"""Reading run logs back: summaries, tables, plots, and the Python API.

The API (``hpccl.analysis.frames``; pandas is imported when a frame is first built)::

    from hpccl.analysis import open_run, open_sweep, concat
    run = open_run("runs/quickstart-20260101-120000")
    run.status, run.kind, run.config            # "complete", "continual", {...}
    run.epochs, run.accuracy, run.timer_breakdown   # pandas DataFrames
    concat([run_a, run_b], frame="epochs")      # one frame, with a ``run`` column
    sweep = open_sweep("sweeps/strong-1-8")     # sweep.points: the scaling table
"""

from hpccl.analysis.frames import Run, concat, open_run


def open_sweep(path):
    """A scaling sweep directory (``manifest.json`` and one run per point) as a
    :class:`hpccl.sched.scaling.Sweep`: ``points`` (the scaling table as a DataFrame) and
    ``runs`` (a :class:`Run` per point that has a log). See ``hpccl.sched.scaling.open_sweep``."""
    # hpccl.sched imports hpccl.analysis (a sweep's runs are read with it); loaded by name
    # here, as hpccl.core.kinds loads a kind's functions, so the packages form no import cycle.
    import importlib
    return importlib.import_module("hpccl.sched.scaling").open_sweep(path)


__all__ = ["Run", "concat", "open_run", "open_sweep"]
