"""Scaling studies: speedup and efficiency of a sweep's points.

strong scaling (fixed global batch): T_N is the time per epoch on N GPUs;
    speedup S_N = T_base / T_N,  efficiency E_N = (T_base * N_base) / (T_N * N)
weak scaling (fixed per-GPU batch): X_N is the throughput (samples/s) on N GPUs;
    efficiency E_N = X_N / ((N / N_base) * X_base)      (= X_N / (N X_1) when N_base = 1)
When a sweep spans nodes, efficiencies are also given against one full node (N_base =
GPUs per node), which separates intra-node from inter-node losses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np


def strong_scaling(gpus: list[int], epoch_times: list[float], base_gpus: int | None = None) -> dict:
    base = gpus.index(base_gpus if base_gpus is not None else min(gpus))
    t0, n0 = epoch_times[base], gpus[base]
    speedup = [t0 / t for t in epoch_times]
    efficiency = [(t0 * n0) / (t * n) for t, n in zip(epoch_times, gpus)]
    return {"speedup": speedup, "efficiency": efficiency, "base_gpus": n0}


def weak_scaling(gpus: list[int], throughputs: list[float], base_gpus: int | None = None) -> dict:
    base = gpus.index(base_gpus if base_gpus is not None else min(gpus))
    x0, n0 = throughputs[base], gpus[base]
    efficiency = [x / ((n / n0) * x0) for x, n in zip(throughputs, gpus)]
    return {"efficiency": efficiency, "base_gpus": n0}


def epoch_time(epochs) -> float:
    """Median time of an epoch (robust to the first epoch's warm-up and to noise); ``epochs``:
    a run's epochs frame (:attr:`hpccl.analysis.frames.Run.epochs`)."""
    times = epochs["time_s"] if "time_s" in epochs else ()
    return float(np.median(times)) if len(times) else float("nan")


def _open_points(manifest: dict) -> dict:
    """gpus -> Run, for the points whose run has a log."""
    from hpccl.analysis.frames import open_run
    return {p["gpus"]: open_run(p["run_dir"]) for p in manifest["points"]
            if os.path.exists(os.path.join(p["run_dir"], "log.h5"))}


def analyze_sweep(path: str, runs: dict | None = None) -> dict:
    """Read a sweep directory (manifest.json + one run per point) into one summary; ``runs``:
    its points' runs when already open (gpus -> Run)."""
    from hpccl.sched.sweeps import load_manifest
    manifest = load_manifest(path)
    runs = _open_points(manifest) if runs is None else runs
    points = []
    for p in manifest["points"]:
        entry = dict(p)
        run = runs.get(p["gpus"])
        if run is not None:
            s = run.summary
            entry.update(status=s["status"], epoch_s=epoch_time(run.epochs), samples_per_s=s["samples_per_s"],
                         final_average_accuracy=s.get("final_average_accuracy"))
        else:
            entry.update(status="not run", epoch_s=None, samples_per_s=None, final_average_accuracy=None)
        points.append(entry)
    done = [p for p in points if p["epoch_s"] is not None]
    gpus = [p["gpus"] for p in done]
    out = {"sweep_dir": path, "mode": manifest["mode"], "site": manifest.get("site"), "points": points}
    if len(done) >= 1:
        per_node = max(p["gpus"] // max(p["nodes"], 1) for p in done)
        bases = [min(gpus)] + ([per_node] if per_node in gpus and max(gpus) > per_node > min(gpus) else [])
        for base in bases:
            suffix = "" if base == min(gpus) else "_vs_node"
            if manifest["mode"] == "strong":
                r = strong_scaling(gpus, [p["epoch_s"] for p in done], base)
                for p, sp, ef in zip(done, r["speedup"], r["efficiency"]):
                    p["speedup" + suffix], p["efficiency" + suffix] = sp, ef
            else:
                r = weak_scaling(gpus, [p["samples_per_s"] for p in done], base)
                for p, ef in zip(done, r["efficiency"]):
                    p["efficiency" + suffix] = ef
    return out


def sweep_table(sweep: dict):
    strong = sweep["mode"] == "strong"
    header = ["gpus", "nodes", "batch/gpu", "global batch", "lr x", "epoch s", "samples/s"]
    header += ["speedup", "efficiency"] if strong else ["efficiency"]
    vs_node = any("efficiency_vs_node" in p for p in sweep["points"])
    if vs_node:
        header += ["eff. vs 1 node"]
    header += ["final acc %", "status"]
    rows = []
    for p in sweep["points"]:
        row = [p["gpus"], p["nodes"], p["batch_per_gpu"], p["global_batch"], p["lr_multiplier"],
               p["epoch_s"], None if p["samples_per_s"] is None else round(p["samples_per_s"])]
        row += [p.get("speedup"), p.get("efficiency")] if strong else [p.get("efficiency")]
        if vs_node:
            row.append(p.get("efficiency_vs_node"))
        acc = p.get("final_average_accuracy")
        row += [None if acc is None else acc * 100, p["status"]]
        rows.append(row)
    return header, rows


@dataclass(frozen=True)
class Sweep:
    """A scaling sweep as read at :func:`open_sweep` time. ``points``: the scaling table, one
    row per point (gpus, nodes, batch_per_gpu, global_batch, lr_multiplier, status, epoch_s,
    samples_per_s, speedup (strong), efficiency, efficiency_vs_node when the sweep spans
    nodes, final_average_accuracy, run_dir, ...), the numbers ``hpccl analyze SWEEP`` prints;
    ``runs``: gpus -> :class:`hpccl.analysis.frames.Run` for the points that have a log."""

    path: str
    mode: str
    site: str | None
    manifest: dict = field(repr=False)
    summary: dict = field(repr=False)
    runs: dict = field(repr=False)

    @property
    def points(self):
        import pandas as pd
        return pd.DataFrame(self.summary["points"])


def open_sweep(path) -> Sweep:
    """Read sweep directory ``path`` (``manifest.json`` from ``hpccl submit --scaling``, and
    the runs of its points) into a :class:`Sweep`. Raises HpcclError (ConfigError) for a
    missing or invalid manifest, and as :func:`hpccl.analysis.open_run` for a damaged run."""
    from hpccl.sched.sweeps import load_manifest
    path = os.fspath(path)
    manifest = load_manifest(path)
    runs = _open_points(manifest)
    summary = analyze_sweep(path, runs)
    return Sweep(path=path, mode=manifest["mode"], site=manifest.get("site"), manifest=manifest,
                 summary=summary, runs=runs)
