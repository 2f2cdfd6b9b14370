"""``hpccl analyze`` for ``online_rnn`` runs (log attribute ``job_kind == "online_rnn"``).

:func:`summarize_rnn` turns one run's ``log.h5`` into a summary dict, :func:`format_rnn_report`
prints one block per run plus (for several runs, or ``--compare``) one comparison table, and
:func:`plot_rnn` draws accuracy-over-stream and activity PNGs for several runs.
"""

from __future__ import annotations

import math
import os

import numpy as np

from hpccl.analysis.plots import pyplot, write_figures
from hpccl.analysis.report import run_heading

CURVE_POINTS = 200   # per-sequence curves in a summary are thinned to at most this many points


def is_rnn(summary_or_attrs: dict) -> bool:
    return summary_or_attrs.get("job_kind") == "online_rnn"


def _f(x, default=float("nan")) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def _thin(seq: np.ndarray, *cols: np.ndarray):
    n = len(seq)
    idx = np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int)) if n else []
    return [np.asarray(c)[idx].tolist() for c in (seq,) + cols]


def _nanmean(a) -> float:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def summarize_rnn(run_dir: str, run: dict, ranks: list[dict] | None = None) -> dict:
    """Summary of an online_rnn run from its ``read_h5`` log (``ranks``: the rank logs)."""
    a = run["attrs"]
    cfg = {}
    try:
        import yaml
        cfg = (yaml.safe_load(a.get("config_yaml", "")) or {}).get("rnn", {}) or {}
    except Exception:  # noqa: BLE001 - a summary without the config is still useful
        pass
    s = {"run_dir": run_dir, "job_kind": "online_rnn", "name": a.get("name"),
         "learner": a.get("mode"), "mode": a.get("mode"), "status": a.get("status"),
         "world_size": int(a.get("world_size", 0)), "backend": a.get("backend"),
         "device": a.get("device"), "task": a.get("task"),
         "num_classes": int(a.get("num_classes", 0)), "chance_accuracy": _f(a.get("chance_accuracy")),
         "seq_len": int(a.get("seq_len", 0)), "hidden": int(a.get("hidden", 0)),
         "weight_density": _f(a.get("weight_density")),
         "activity_sparse": bool(a.get("activity_sparse", True)),
         "update_every": cfg.get("update_every"), "lr": cfg.get("lr"),
         "num_params": int(a.get("num_params", 0)),
         "sequences_completed": int(a.get("sequences_completed", 0)),
         "train_time_s": _f(a.get("train_time_s"), 0.0),
         "final_test_accuracy": _f(a.get("final_test_accuracy", a.get("test_accuracy"))),
         "masked_weight_max_abs": _f(a.get("masked_weight_max_abs")),
         "replica_max_abs_diff": _f(a.get("replica_max_abs_diff"))}
    s["sequences_total"] = s["sequences_completed"] * max(s["world_size"], 1)
    seq = np.asarray(run.get("stream/sequence", []))
    if seq.size:
        act = np.asarray(run["stream/activity"], dtype=float)
        nnz = np.asarray(run["stream/influence_nnz"], dtype=float)
        macs = np.asarray(run["stream/macs_per_step"], dtype=float)
        mem = np.asarray(run["stream/mem_bytes"], dtype=float)
        tps = np.asarray(run["stream/time_per_step"], dtype=float)
        accw = np.asarray(run["stream/acc_window"], dtype=float)
        s.update({"mean_activity": _nanmean(act), "mean_influence_nnz": _nanmean(nnz),
                  "macs_per_step": _nanmean(macs), "mem_bytes_per_step": float(np.max(mem)),
                  "time_per_step_s": _nanmean(tps), "final_stream_accuracy": float(accw[-1]),
                  "mean_loss": _nanmean(run["stream/loss"])})
        x, y_acc, y_act, y_nnz = _thin(seq, accw, act, nnz)
        s["curves"] = {"sequence": x, "acc_window": y_acc, "activity": y_act, "influence_nnz": y_nnz}
    else:
        s.update({"mean_activity": float("nan"), "mean_influence_nnz": float("nan"),
                  "macs_per_step": float("nan"), "mem_bytes_per_step": float("nan"),
                  "time_per_step_s": float("nan"), "final_stream_accuracy": float("nan"),
                  "mean_loss": float("nan")})
    ev = np.asarray(run.get("evals/sequence", []))
    if ev.size:
        s["evals"] = {k: np.asarray(run[f"evals/{k}"]).tolist() for k in
                      ("sequence", "sequences_total", "test_accuracy", "stream_accuracy", "loss",
                       "activity", "influence_nnz", "macs_per_step", "mem_bytes", "time_per_step")
                      if f"evals/{k}" in run}
        if not math.isfinite(s["final_test_accuracy"]):
            s["final_test_accuracy"] = float(s["evals"]["test_accuracy"][-1])
    if s["status"] != "complete":
        s["note"] = (f"incomplete run (status '{s['status']}'): read up to its last flushed record, "
                     f"{s['sequences_completed']} sequences per rank")
    return s


def _pct(x) -> str:
    return f"{x * 100:.1f}" if x is not None and math.isfinite(x) else "-"


def _num(x, fmt="{:.3f}") -> str:
    return fmt.format(x) if x is not None and math.isfinite(x) else "-"


def format_rnn_block(s: dict) -> str:
    lines = run_heading(s, f"online_rnn {s['mode']}, {s['world_size']} ranks, {s['device']}")
    lines.append(f"task {s['task']} (T={s['seq_len']}, {s['num_classes']} classes, chance "
                 f"{_pct(s['chance_accuracy'])}%), EGRU {s['hidden']} units, weight density "
                 f"{_num(s['weight_density'], '{:.2f}')}, activity sparse {s['activity_sparse']}")
    lines.append(f"final test accuracy {_pct(s['final_test_accuracy'])}%, stream accuracy (last "
                 f"window) {_pct(s['final_stream_accuracy'])}%, mean loss {_num(s['mean_loss'], '{:.4f}')}")
    lines.append(f"mean activity {_num(s['mean_activity'])} (fraction of active units), influence "
                 f"matrix non-zeros {_num(s['mean_influence_nnz'])}")
    lines.append(f"compute {_num(s['macs_per_step'], '{:.4g}')} MACs/step, memory "
                 f"{_num(s['mem_bytes_per_step'] / 1024, '{:.1f}')} KiB/step, "
                 f"{_num(s['time_per_step_s'] * 1e3, '{:.3f}')} ms/step")
    lines.append(f"stream {s['sequences_completed']} sequences/rank ({s['sequences_total']} total), "
                 f"training time {s['train_time_s']:.2f}s; masked weights max |U| "
                 f"{_num(s['masked_weight_max_abs'], '{:.3g}')}, replica max diff "
                 f"{_num(s['replica_max_abs_diff'], '{:.3g}')}")
    ev = s.get("evals")
    if ev:
        lines.append("test accuracy over the stream: " + ", ".join(
            f"{n}: {_pct(a)}%" for n, a in zip(ev["sequence"], ev["test_accuracy"])))
    return "\n".join(lines)


def format_rnn_compare(reports: list[dict], fmt: str = "text") -> str:
    """One row per online_rnn run; ``MACs x`` and ``mem x`` relative to the largest.
    ``fmt``: text, csv or md."""
    max_macs = max((s["macs_per_step"] for s in reports if math.isfinite(s["macs_per_step"])), default=0)
    max_mem = max((s["mem_bytes_per_step"] for s in reports if math.isfinite(s["mem_bytes_per_step"])),
                  default=0)
    rows = [("run", "mode", "ranks", "hidden", "w.dens", "events", "test acc %", "stream acc %", "activity",
             "infl nnz", "MACs/step", "MACs x", "mem KiB", "mem x", "ms/step")]
    for s in reports:
        rows.append((os.path.basename(os.path.normpath(s["run_dir"])), str(s["mode"]),
                     str(s["world_size"]), str(s["hidden"]), _num(s["weight_density"], "{:.2f}"),
                     "yes" if s["activity_sparse"] else "no",
                     _pct(s["final_test_accuracy"]), _pct(s["final_stream_accuracy"]),
                     _num(s["mean_activity"]), _num(s["mean_influence_nnz"]),
                     _num(s["macs_per_step"], "{:.4g}"),
                     _num(s["macs_per_step"] / max_macs, "{:.3f}") if max_macs else "-",
                     _num(s["mem_bytes_per_step"] / 1024, "{:.1f}"),
                     _num(s["mem_bytes_per_step"] / max_mem, "{:.3f}") if max_mem else "-",
                     _num(s["time_per_step_s"] * 1e3, "{:.3f}")))
    if fmt in ("csv", "md"):
        from hpccl.analysis.tables import render
        return render(list(rows[0]), [list(r) for r in rows[1:]], fmt=fmt)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"note: {s['run_dir']}: {s['note']}" for s in reports if s.get("note")]
    return "\n".join(lines + notes)


def format_rnn_report(rnn: list[dict], fmt: str = "text", compare: bool = False) -> str:
    """Text, csv or md for summaries of online_rnn runs (JSON: hpccl.analysis.report)."""
    parts = []
    if fmt in ("csv", "md"):
        parts.append(format_rnn_compare(rnn, fmt))
    elif compare:
        parts.append(format_rnn_compare(rnn))
    else:
        parts.extend(format_rnn_block(s) for s in rnn)
        if len(rnn) > 1:
            parts.append("comparison\n" + format_rnn_compare(rnn))
    return "\n\n".join(parts)


def _plot_label(s) -> str:
    return f"{os.path.basename(os.path.normpath(s['run_dir']))} ({s['mode']})"


def accuracy_curves(runs: list[dict]):
    """Running stream accuracy, and test accuracy where it was evaluated, over the stream."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for s in runs:
        c = s["curves"]
        line, = ax.plot(c["sequence"], np.asarray(c["acc_window"]) * 100, label=f"{_plot_label(s)} stream")
        ev = s.get("evals")
        if ev:
            ax.plot(ev["sequence"], np.asarray(ev["test_accuracy"], dtype=float) * 100, "o--",
                    color=line.get_color(), label=f"{_plot_label(s)} test")
    chance = runs[0].get("chance_accuracy")
    if chance is not None and math.isfinite(chance):
        ax.axhline(chance * 100, color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="sequences (per rank)", ylabel="accuracy %", title="online accuracy over the stream")
    ax.legend(fontsize=7)
    return fig


def activity_curves(runs: list[dict]):
    """Fraction of active units and of influence-matrix non-zeros over the stream."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for s in runs:
        c = s["curves"]
        line, = ax.plot(c["sequence"], c["activity"], label=f"{_plot_label(s)} activity")
        nnz = np.asarray(c["influence_nnz"], dtype=float)
        if np.isfinite(nnz).any():
            ax.plot(c["sequence"], nnz, "--", color=line.get_color(), label=f"{_plot_label(s)} influence nnz")
    ax.set(ylim=(0, 1.02), xlabel="sequences (per rank)", ylabel="fraction",
           title="activity (active units) and influence-matrix non-zeros")
    ax.legend(fontsize=7)
    return fig


FIGURES = (("rnn_accuracy.png", accuracy_curves), ("rnn_activity.png", activity_curves))


def plot_rnn(summaries: list[dict], out_dir: str) -> list[str]:
    """Write ``rnn_accuracy.png`` (running stream accuracy and test accuracy over the
    stream) and ``rnn_activity.png`` (fraction of active units and influence-matrix
    non-zeros over the stream) for the online_rnn summaries among ``summaries``; return
    the paths written (none when there is no such summary)."""
    runs = [s for s in summaries if is_rnn(s) and s.get("curves")]
    return write_figures(out_dir, FIGURES, runs) if runs else []


def progress(view):
    """``hpccl status``: sequences per rank of ``rnn.num_sequences`` (at the last evaluation,
    when the log is flushed); samples/s: sequences of all ranks per second of training."""
    from hpccl.analysis.progress import Progress
    total = view.setting("rnn.num_sequences")
    if view.rows("evals") == 0:
        return Progress(f"sequence 0/{total}", 0, total)
    done = int(view.last("evals/sequence")[0])
    seconds = float(view.last("evals/time_s")[0])
    rate = float(view.last("evals/sequences_total")[0]) / seconds if seconds > 0 else None
    eta = seconds / done * (total - done) if total and done else None
    return Progress(f"sequence {done}/{total}", done, total, rate, eta)
