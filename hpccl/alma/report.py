"""``hpccl analyze`` for ``scenario: megabatch`` runs (log attribute ``scenario == "megabatch"``).

:func:`summarize_alma` turns one run's ``log.h5`` into a summary dict, :func:`format_alma_report`
prints one block per run (the error after every arrival) and, for several runs or
``--compare``, one table of CER, final error, training FLOPs and parameters; :func:`plot_alma`
draws the error curves over time and the error against training compute.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from hpccl.analysis.plots import pyplot, write_figures
from hpccl.analysis.report import run_heading
from hpccl.analysis.tables import render


def is_alma(summary_or_attrs: dict) -> bool:
    return summary_or_attrs.get("job_kind") == "megabatch" or summary_or_attrs.get("scenario") == "megabatch"


def _f(x, default=float("nan")) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def _json(x, default):
    try:
        return json.loads(x) if isinstance(x, str) else (x if x is not None else default)
    except ValueError:
        return default


def summarize_alma(run_dir: str, run: dict, ranks: list[dict] | None = None) -> dict:
    a = run["attrs"]
    errors = np.asarray(run.get("arrivals/error", []), dtype=float)
    s = {"run_dir": run_dir, "job_kind": "megabatch", "name": a.get("name"), "learner": a.get("learner"),
         "learner_options": _json(a.get("learner_options"), {}), "model": a.get("model"),
         "status": a.get("status"), "world_size": int(a.get("world_size", 0)), "groups": int(a.get("groups", 1)),
         "device": a.get("device"), "num_megabatches": int(a.get("num_megabatches", 0)),
         "wait": int(a.get("wait", 0)), "replay": _f(a.get("replay")), "val_share": _f(a.get("val_share")),
         "num_train": int(a.get("num_train", 0)), "num_test": int(a.get("num_test", 0)),
         "arrivals_completed": int(len(errors)),
         "errors": errors.tolist(),
         "updated": np.asarray(run.get("arrivals/updated", []), dtype=int).tolist(),
         "train_flops_curve": np.asarray(run.get("arrivals/train_flops", []), dtype=float).tolist(),
         "parameters_curve": np.asarray(run.get("arrivals/parameters", []), dtype=float).tolist(),
         "train_time_curve": np.asarray(run.get("arrivals/train_time_s", []), dtype=float).tolist()}
    # From the per-arrival rows, so an interrupted run's summary covers what it logged.
    s["cer"] = float(errors.sum()) if errors.size else float("nan")
    s["cer_normalized"] = s["cer"] / len(errors) if errors.size else float("nan")
    s["final_error"] = float(errors[-1]) if errors.size else float("nan")
    s["train_flops"] = s["train_flops_curve"][-1] if errors.size else float("nan")
    s["parameters"] = int(s["parameters_curve"][-1]) if errors.size else 0
    s["train_time_s"] = s["train_time_curve"][-1] if errors.size else 0.0
    s["wall_time_s"] = _f(a.get("wall_time_s"), 0.0)
    s["updates"] = int(sum(s["updated"]))
    if "updates/index" in run:
        s["update_table"] = {k: np.asarray(run[f"updates/{k}"]).tolist() for k in
                             ("index", "arrival", "train_samples", "replay_samples", "val_samples", "epochs",
                              "val_accuracy", "time_s", "split") if f"updates/{k}" in run}
    if s["status"] != "complete":
        s["note"] = (f"incomplete run (status '{s['status']}'): {len(errors)} of {s['num_megabatches']} "
                     "arrivals logged; CER and final error cover those only")
    return s


def _label(s) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in s["learner_options"].items())
    return f"{s['learner']}" + (f" ({opts})" if opts else "")


def _run_name(s) -> str:
    """The run directory's name; with its parent when that alone is a seed (study layouts)."""
    path = os.path.normpath(s["run_dir"])
    base = os.path.basename(path)
    return f"{os.path.basename(os.path.dirname(path))}/{base}" if base.startswith("seed") else base


def _plot_label(s) -> str:
    return f"{_run_name(s)}: {_label(s)}, w={s['wait']}, replay={s['replay']:g} (CER {s['cer']:.2f})"


def _pct(x) -> str:
    return f"{x * 100:.1f}" if x is not None and math.isfinite(x) else "-"


def format_alma_block(s: dict) -> str:
    groups = f" in {s['groups']} groups" if s["groups"] > 1 else ""
    lines = run_heading(s, f"megabatch, {_label(s)}, {s['world_size']} ranks{groups}, {s['device']}")
    lines.append(f"stream: {s['num_train']} samples in M={s['num_megabatches']} mega-batches, wait {s['wait']}, "
                 f"replay {s['replay']:g}, validation share {s['val_share']:g}; {s['updates']} updates; "
                 f"model {s['model']}")
    lines.append(f"CER {s['cer']:.3f} (mean error {_pct(s['cer_normalized'])}%), final error "
                 f"{_pct(s['final_error'])}%, training compute {s['train_flops']:.4g} FLOPs, "
                 f"{s['parameters']} parameters, training time {s['train_time_s']:.2f}s "
                 f"(wall {s['wall_time_s']:.2f}s)")
    marks = ["*" if u else " " for u in s["updated"]]
    lines.append("test error % after each arrival (* = update): " + " ".join(
        f"{_pct(e)}{m}" for e, m in zip(s["errors"], marks)))
    return "\n".join(lines)


def compare_rows(reports: list[dict]):
    """A row per run: CER, final error, FLOPs (and relative to the cheapest), parameters, time."""
    # Relative to the cheapest *complete* run: a run cut short did fewer FLOPs for less work.
    cheapest = min((s["train_flops"] for s in reports if s["train_flops"] and math.isfinite(s["train_flops"])
                    and s["status"] == "complete"), default=0.0)
    header = ["run", "learner", "ranks", "M", "wait", "replay", "updates", "CER", "mean err %", "final err %",
              "train FLOPs", "FLOPs x", "params", "train time s", "status"]
    rows = []
    for s in reports:
        rows.append([_run_name(s), _label(s), s["world_size"],
                     s["num_megabatches"], s["wait"], f"{s['replay']:g}", s["updates"], round(s["cer"], 3),
                     _pct(s["cer_normalized"]), _pct(s["final_error"]), f"{s['train_flops']:.3g}",
                     round(s["train_flops"] / cheapest, 2) if cheapest else "-", s["parameters"],
                     round(s["train_time_s"], 2), s["status"]])
    return header, rows


def format_alma_report(alma: list[dict], fmt: str = "text", compare: bool = False) -> str:
    """Text, csv or md for summaries of megabatch runs (JSON: hpccl.analysis.report)."""
    parts = []
    if fmt in ("csv", "md") or compare:
        parts.append(render(*compare_rows(alma), fmt=fmt))
    else:
        parts.extend(format_alma_block(s) for s in alma)
        if len(alma) > 1:
            parts.append("comparison\n" + render(*compare_rows(alma), fmt="text"))
    if fmt == "text":
        parts.extend(f"note: {s['run_dir']}: {s['note']}" for s in alma if s.get("note") and compare)
    return "\n\n".join(parts)


def error_curves(runs: list[dict]):
    """Test error after every arrival, markers at the updates."""
    fig, ax = pyplot().subplots(figsize=(8, 4.8))
    for s in runs:
        t = np.arange(1, len(s["errors"]) + 1)
        e = np.asarray(s["errors"]) * 100
        line, = ax.step(t, e, where="post", label=_plot_label(s))
        upd = np.asarray(s["updated"], dtype=bool)
        ax.plot(t[upd], e[upd], "o", ms=3, color=line.get_color())
    ax.set_xlabel("arrival (mega-batches seen)")
    ax.set_ylabel("test error % of the available model")
    ax.set_yscale("log")
    ax.set_title("anytime error (area under the curve = CER)")
    ax.legend(fontsize=6)
    return fig


def error_vs_flops(runs: list[dict]):
    """Final error and CER against training FLOPs, one point per run."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 4.2))
    for s in runs:
        axes[0].scatter(s["train_flops"], s["final_error"] * 100, label=_plot_label(s))
        axes[1].scatter(s["train_flops"], s["cer"])
    for ax, what in zip(axes, ("final error %", "CER")):
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=6)
    fig.suptitle("error against training compute")
    return fig


FIGURES = (("alma_error.png", error_curves), ("alma_error_vs_flops.png", error_vs_flops))


def plot_alma(summaries: list[dict], out_dir: str) -> list[str]:
    """``alma_error.png``: test error after every arrival (markers at updates), and
    ``alma_error_vs_flops.png``: final error and CER against training FLOPs, one point per run."""
    runs = [s for s in summaries if is_alma(s) and s["errors"]]
    return write_figures(out_dir, FIGURES, runs) if runs else []


def progress(view):
    """``hpccl status``: mega-batches arrived of the total; samples/s of the stream (arrived
    training samples per second of the stream's wall time) and the ETA at that pace."""
    from hpccl.analysis.progress import Progress
    total = view.setting("scenario.num_megabatches")
    done = view.rows("arrivals")
    if done == 0:
        return Progress(f"megabatch 0/{total}", 0, total)
    wall = float(view.last("arrivals/wall_time_s")[0])
    num_train = view.attrs.get("num_train")
    rate = float(num_train) * done / total / wall if num_train and total and wall > 0 else None
    eta = wall / done * (total - done) if total else None
    return Progress(f"megabatch {done}/{total}", done, total, rate, eta)
