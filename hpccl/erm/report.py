"""``hpccl analyze`` for ERM runs (log attribute ``job_kind = "erm"``), and their plots.

* :func:`erm_summary(run_dir, run, ranks)` - one run's summary dict (``hpccl.analysis.report.
  summarize`` dispatches here);
* :func:`format_erm_reports(reports, fmt, compare)` - text (a block per run, and a comparison
  table when there are several) or JSON (``format_report`` dispatches here);
* :func:`plot_erm(summaries, out_dir)` - suboptimality vs passes and vs time, log-scale y, one
  line per run: ``erm_subopt_vs_passes.png`` and ``erm_subopt_vs_time.png``.
"""
from __future__ import annotations

import json
import os
from functools import partial

import numpy as np

from hpccl.analysis.plots import pyplot, write_figures
from hpccl.analysis.report import run_heading

TARGETS = (1e-4, 1e-6, 1e-8)


def _f(v):
    v = float(v)
    return v if np.isfinite(v) else None


def erm_summary(run_dir: str, run: dict, ranks: list) -> dict:
    a = run["attrs"]
    st = {k.split("/", 1)[1]: np.asarray(v, dtype=float) for k, v in run.items()
          if k.startswith("stages/")}
    sub = st.get("subopt", np.zeros(0))
    reach = {}
    for t in TARGETS:
        hit = np.flatnonzero(sub <= t) if sub.size else []
        if len(hit):
            i = int(hit[0])
            reach[f"{t:g}"] = {"passes": float(st["passes"][i]), "time_s": float(st["time_s"][i]),
                               "allreduces": int(st["allreduces"][i]), "stage": int(st["stage"][i])}
        else:
            reach[f"{t:g}"] = None
    last = {k: (float(v[-1]) if v.size else float("nan")) for k, v in st.items()}
    s = {"run_dir": run_dir, "job_kind": "erm", "name": a.get("name"), "status": a.get("status"),
         "solver": a.get("solver"), "loss": a.get("loss"), "l1": _f(a.get("l1", np.nan)),
         "l2": _f(a.get("l2", np.nan)), "world_size": int(a.get("world_size", 0)),
         "n": int(a.get("n", 0)), "dim": int(a.get("dim", 0)), "nnz": int(a.get("nnz", 0)),
         "data_source": a.get("data_source"), "f_star": _f(a.get("f_star", np.nan)),
         "reference_gap_bound": _f(a.get("reference_gap_bound", np.nan)),
         "stop_reason": a.get("stop_reason"), "stages": int(last.get("stage", 0) or 0),
         "passes": last.get("passes", 0.0), "time_s": last.get("time_s", 0.0),
         "allreduces": int(last.get("allreduces", 0) or 0),
         "allreduce_bytes": int(last.get("allreduce_bytes", 0) or 0),
         "final_objective": _f(last.get("objective", np.nan)),
         "final_subopt": _f(last.get("subopt", np.nan)), "reached": reach,
         "train_accuracy": _f(a.get("train_accuracy", np.nan)),
         "test_accuracy": _f(a.get("test_accuracy", np.nan)),
         "solver_params": json.loads(a["solver_params"]) if "solver_params" in a else {},
         "shard_sizes": json.loads(a["shard_sizes"]) if "shard_sizes" in a else [],
         "history": {k: st[k].tolist() for k in ("stage", "passes", "time_s", "objective", "subopt")
                     if k in st}}
    if s["status"] != "complete":
        s["note"] = (f"incomplete run (status '{s['status']}'): read up to its last flushed stage, "
                     f"{s['stages']} stage(s)")
    return s


def _num(v, spec: str) -> str:
    """A number of the summary, or '-' where the log has none (a run killed before its first
    stage; an attribute lost)."""
    return "-" if v is None else format(v, spec)


def _reach_cell(r, key):
    return "-" if r is None else (f"{r[key]:.1f}" if key == "passes" else f"{r[key]:.2f}")


def format_compare(reports: list, fmt: str = "text") -> str:
    head = ["run", "solver", "ranks"] + [f"passes {t:g}" for t in TARGETS] + \
        [f"time {t:g} s" for t in TARGETS] + ["final P-P*", "passes", "time s", "allreduces"]
    rows = [head]
    for s in reports:
        r = s["reached"]
        rows.append([os.path.basename(os.path.normpath(s["run_dir"])), str(s["solver"]),
                     str(s["world_size"])]
                    + [_reach_cell(r[f"{t:g}"], "passes") for t in TARGETS]
                    + [_reach_cell(r[f"{t:g}"], "time_s") for t in TARGETS]
                    + ["-" if s["final_subopt"] is None else f"{s['final_subopt']:.2e}",
                       f"{s['passes']:.1f}", f"{s['time_s']:.2f}", str(s["allreduces"])])
    if fmt in ("csv", "md"):
        from hpccl.analysis.tables import render
        return render(head, rows[1:], fmt)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"note: {s['run_dir']}: {s['note']}" for s in reports if s.get("note")]
    return "\n".join(lines)


def format_block(s: dict) -> str:
    lines = run_heading(s, f"erm, solver {s['solver']}, {s['world_size']} ranks")
    lines.append(f"problem: {s['loss']} loss, l1 {_num(s['l1'], 'g')}, l2 {_num(s['l2'], 'g')}; "
                 f"n {s['n']}, d {s['dim']}, "
                 f"{s['nnz']} nonzeros; shards {s['shard_sizes']}; data {s['data_source']}")
    if s["f_star"] is not None:
        gap = s["reference_gap_bound"]
        lines.append(f"reference optimum P* {s['f_star']:.15g}"
                     + (f" (certified gap {gap:.1e})" if gap is not None else ""))
    for t in TARGETS:
        r = s["reached"][f"{t:g}"]
        lines.append(f"to P-P* <= {t:g}: " + ("not reached" if r is None else
                     f"{r['passes']:.1f} passes, {r['time_s']:.2f}s, {r['allreduces']} allreduces "
                     f"(stage {r['stage']})"))
    sub = "-" if s["final_subopt"] is None else f"{s['final_subopt']:.3e}"
    lines.append(f"final: P {_num(s['final_objective'], '.12f')}, P-P* {sub} after {s['stages']} stages, "
                 f"{s['passes']:.1f} passes, {s['time_s']:.2f}s, {s['allreduces']} allreduces "
                 f"({s['allreduce_bytes'] / 1e6:.2f} MB per rank); stop: {s['stop_reason']}")
    acc = []
    if s["train_accuracy"] is not None:
        acc.append(f"train accuracy {s['train_accuracy'] * 100:.2f}%")
    if s["test_accuracy"] is not None:
        acc.append(f"test accuracy {s['test_accuracy'] * 100:.2f}%")
    if acc:
        lines.append(", ".join(acc))
    return "\n".join(lines)


def format_erm_reports(erm: list, fmt: str = "text", compare: bool = False) -> str:
    """Text, csv or md for summaries of ERM runs (JSON: hpccl.analysis.report)."""
    if fmt in ("csv", "md"):   # one table, a row per ERM run
        return format_compare(erm, fmt)
    parts = []
    if not (compare and len(erm) > 1):
        parts += [format_block(s) for s in erm]
    if len(erm) > 1 or compare:
        parts.append(format_compare(erm))
    return "\n\n".join(parts)


def subopt_curves(runs: list, xkey: str, xlabel: str):
    """P(x) - P* (log scale) against ``xkey`` of the history, a line per run."""
    floor = 1e-16   # a log axis cannot show the exact optimum, P - P* = 0
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2))
    for s in runs:
        h = s["history"]
        x = np.asarray(h[xkey], dtype=float)
        y = np.maximum(np.asarray(h["subopt"], dtype=float), floor)
        label = f"{s['solver']} ({os.path.basename(os.path.normpath(s['run_dir']))}, {s['world_size']} ranks)"
        ax.plot(x, y, marker=".", markersize=3, label=label)
    for t in TARGETS:
        ax.axhline(t, color="grey", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("P(x) - P*")
    names = sorted({str(s["name"]) for s in runs})
    ax.set_title(f"ERM suboptimality: {', '.join(names)}" if names else "ERM suboptimality")
    if runs:
        ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    return fig


FIGURES = (("erm_subopt_vs_passes.png", partial(subopt_curves, xkey="passes", xlabel="passes over the data")),
           ("erm_subopt_vs_time.png", partial(subopt_curves, xkey="time_s", xlabel="solver time (s, rank 0)")))


def plot_erm(summaries: list, out_dir: str) -> list:
    """Suboptimality vs passes and vs solver time (log y), one line per ERM run; returns the
    paths written (``erm_subopt_vs_passes.png``, ``erm_subopt_vs_time.png``). Non-ERM
    summaries are skipped; runs without a reference optimum have nothing to plot."""
    runs = [s for s in summaries if s.get("job_kind") == "erm" and s.get("f_star") is not None]
    return write_figures(out_dir, FIGURES, runs)


def progress(view):
    """``hpccl status``: data passes of ``erm.epochs``, stage count; samples/s (passes times n
    per second of the solve's wall clock) and the ETA at that pace (a solve that reaches
    ``target_subopt`` or ``max_time`` stops sooner)."""
    from hpccl.analysis.progress import Progress
    total = view.setting("erm.epochs")
    stages = view.rows("stages")
    if stages == 0:
        return Progress(f"pass 0/{total}", 0, total)
    passes, elapsed = float(view.last("stages/passes")[0]), float(view.last("stages/elapsed_s")[0])
    n = view.attrs.get("n")
    rate = passes * float(n) / elapsed if n and elapsed > 0 else None
    eta = elapsed / passes * max(0.0, total - passes) if total and passes > 0 else None
    return Progress(f"pass {passes:.1f}/{total} (stage {stages - 1})", passes, total, rate, eta)
