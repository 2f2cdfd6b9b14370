"""The continual kind's part of ``hpccl analyze``: its summary of a run (accuracy matrix,
forgetting, throughput, timers, buffer, communication), its text / CSV / Markdown report and
the comparison of runs."""

from __future__ import annotations

import os

import numpy as np

from hpccl.analysis import frames
from hpccl.analysis.frames import timer_breakdown_frame
from hpccl.analysis.report import run_heading
from hpccl.analysis.tables import render
from hpccl.continual.metrics import average_accuracy, backward_transfer, forgetting, format_matrix
from hpccl.core.timers import PHASES

TIMER_PARTS = PHASES + ("other",)


def timer_breakdown(ranks: list[dict]) -> dict:
    """Per rank, mean over ranks and of the slowest rank: seconds and share of iteration time
    per phase, from the same frame as ``Run.timer_breakdown`` (hpccl.analysis.frames)."""
    frame = timer_breakdown_frame(ranks, TIMER_PARTS)
    per_rank = [{"rank": int(r["rank"]), "hostname": r["hostname"], "iterations": int(r["iterations"]),
                 "total_s": float(r["total_s"]),
                 "seconds": {k: float(r[f"{k}_s"]) for k in TIMER_PARTS},
                 "fractions": {k: float(r[f"{k}_fraction"]) for k in TIMER_PARTS}}
                for r in frame.to_dict("records")]
    if not per_rank:
        return {"per_rank": [], "mean_fractions": {}, "slowest_rank": None}
    slowest = max(per_rank, key=lambda r: r["total_s"])
    mean = {k: float(np.mean([r["fractions"][k] for r in per_rank])) for k in TIMER_PARTS}
    return {"per_rank": per_rank, "mean_fractions": mean, "slowest_rank": slowest["rank"],
            "slowest_fractions": slowest["fractions"]}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def buffer_footprint(ranks: list[dict]) -> list[dict]:
    """Each rank's rehearsal buffer after its last task (empty for learners without one), from
    the same frame as ``Run.buffer`` (hpccl.analysis.frames)."""
    out = []
    for r in frames.buffer_footprint(ranks).to_dict("records"):
        out.append({"rank": int(r["rank"]),
                    **{k: int(r[k]) for k in ("buffer_stored", "buffer_bytes_stored", "buffer_bytes_allocated",
                                              "buffer_slots_per_class")},
                    **{k: float(r[k]) for k in ("buffer_fetch_s", "buffer_fetched", "buffer_insert_s",
                                                "buffer_offered", "buffer_remote_ops", "buffer_remote_bytes",
                                                "buffer_remote_rounds") if k in r},
                    **({"buffer_transport": _text(r["buffer_transport"])} if "buffer_transport" in r else {})})
    return out


def communication(run: dict) -> dict:
    """Per task: gradient bytes allreduced per step vs full fine-tuning, trainable parameters,
    and (LoRAC) the (layer, matrix) pairs IPC froze."""
    per_task = {k: run[f"tasks/{k}"].tolist() for k in (
        "allreduce_bytes_per_step", "full_finetune_bytes_per_step", "trainable_params", "iterations",
        "ipc_frozen_pairs", "ipc_frozen_total", "ipc_frozen_keys") if f"tasks/{k}" in run}
    steps = np.asarray(per_task["iterations"], dtype=float)
    sent = np.asarray(per_task["allreduce_bytes_per_step"], dtype=float)
    full = np.asarray(per_task["full_finetune_bytes_per_step"], dtype=float)
    return {**per_task, "mean_bytes_per_step": float(np.sum(sent * steps) / max(np.sum(steps), 1)),
            "full_finetune_bytes_per_step_mean": float(np.mean(full)) if len(full) else 0.0,
            "fraction_of_full": float(np.sum(sent * steps) / max(np.sum(full * steps), 1))}


def summarize_continual(run_dir: str, run: dict, ranks: list[dict]) -> dict:
    attrs = run["attrs"]
    done = int(attrs.get("tasks_completed", 0))
    top1 = frames.accuracy_frame(run, "top1").to_numpy()     # the tasks evaluated so far
    top5 = frames.accuracy_frame(run, "top5").to_numpy()
    summary = {"run_dir": run_dir, "name": attrs.get("name"), "learner": attrs.get("learner"),
               "status": attrs.get("status"), "world_size": int(attrs.get("world_size", 0)),
               "backend": attrs.get("backend"), "tasks_completed": done}
    if top1.size:
        acc = top1
        summary.update({
            "accuracy_matrix": acc.tolist(), "top5_matrix": top5.tolist(),
            "average_accuracy": average_accuracy(acc).tolist(),
            "final_average_accuracy": float(average_accuracy(acc)[-1]),
            "final_average_top5": float(average_accuracy(top5)[-1]),
            "forgetting": float(forgetting(acc)[-1]), "forgetting_per_task": forgetting(acc).tolist(),
            "backward_transfer": backward_transfer(acc)})
    train_time = float(attrs.get("train_time_s", 0.0))
    samples = int(np.sum(run.get("tasks/samples", 0)))
    summary["train_time_s"] = train_time
    summary["samples"] = samples
    summary["samples_per_s"] = samples / train_time if train_time > 0 else 0.0
    summary["samples_per_s_per_rank"] = summary["samples_per_s"] / max(1, summary["world_size"])
    summary["timers"] = timer_breakdown(ranks)
    summary["buffer"] = buffer_footprint(ranks)
    if "tasks/allreduce_bytes_per_step" in run:
        summary["communication"] = communication(run)
    if summary["status"] != "complete":
        summary["note"] = (f"incomplete run (status '{summary['status']}'): read up to its last flushed "
                           f"record, {done} task(s) evaluated")
    return summary


def timer_table(t: dict, fmt: str = "text") -> str:
    """Where iteration time went: seconds (share) per phase, per rank, then mean and slowest."""
    header = ["rank", "host", "iterations", "total s"] + list(TIMER_PARTS)
    rows = []
    for r in t["per_rank"]:
        rows.append([r["rank"], r["hostname"], r["iterations"], r["total_s"]]
                    + [f"{r['seconds'][p]:.3f} ({r['fractions'][p] * 100:.1f}%)" for p in TIMER_PARTS])
    rows.append(["mean", "", "", sum(r["total_s"] for r in t["per_rank"]) / len(t["per_rank"])]
                + [f"({t['mean_fractions'][p] * 100:.1f}%)" for p in TIMER_PARTS])
    rows.append([f"slowest: {t['slowest_rank']}", "", "", max(r["total_s"] for r in t["per_rank"])]
                + [f"({t['slowest_fractions'][p] * 100:.1f}%)" for p in TIMER_PARTS])
    return "iteration time by phase, seconds (share)\n" + render(header, rows, fmt)


# Why a run that is not complete is left out of a comparison, by its log's status.
_NOT_COMPARED_WHY = {
    "failed": "it stopped on an error",
    "preempted": "it stopped on a signal (preemption or time limit) after writing a checkpoint; "
                 "finish it with 'hpccl run --resume {run_dir}'",
    "running": "it is still running, or was killed before it could record an end (SIGKILL, out of "
               "memory, a node failure)",
}


def split_complete(reports: list[dict]) -> tuple[list[dict], list[dict]]:
    """(complete runs, the others), each in the given order: only complete runs are ranked
    against one another, since a run cut short reports the accuracy and time of fewer tasks."""
    complete = [s for s in reports if s.get("status") == "complete"]
    return complete, [s for s in reports if s.get("status") != "complete"]


def not_compared_notes(excluded: list[dict]) -> list[str]:
    """One line per run left out of a comparison: its status, why, and how far it got."""
    lines = []
    for s in excluded:
        status = s.get("status")
        why = _NOT_COMPARED_WHY.get(status, "it is not complete").format(run_dir=s["run_dir"])
        done = s.get("tasks_completed")
        got = f"; {done} task(s) evaluated" if done is not None else ""
        lines.append(f"not compared: {s['run_dir']}: status '{status}', {why}{got}. "
                     f"HINT: 'hpccl analyze {s['run_dir']}' shows what it recorded.")
    return lines


def compare_table(reports: list[dict]):
    """A row per run: final accuracy, forgetting, training time and time relative to the fastest.

    Only complete runs are compared: "x fastest" is relative to the fastest complete run, and
    runs of another status (failed, preempted, running or killed) come last with their metric
    cells empty ('-') and their status, so that a table read alone (CSV) still shows them."""
    complete, excluded = split_complete(reports)
    fastest = min((s["train_time_s"] for s in complete if s["train_time_s"] > 0), default=0.0)
    header = ["run", "learner", "ranks", "final acc %", "top-5 %", "forgetting %", "BWT %",
              "train time s", "x fastest", "samples/s", "status"]
    comm = any(s.get("communication") for s in complete)
    if comm:   # runs that logged their allreduce volume (lorac, finetune)
        header[-1:-1] = ["allreduce kB/step", "% of full FT"]
    rows = []
    for s in complete:
        pct = lambda key: s[key] * 100 if key in s else None  # noqa: E731
        rows.append([os.path.basename(os.path.normpath(s["run_dir"])), s["learner"], s["world_size"],
                     pct("final_average_accuracy"), pct("final_average_top5"), pct("forgetting"),
                     pct("backward_transfer"), s["train_time_s"],
                     s["train_time_s"] / fastest if fastest else None, round(s["samples_per_s"]),
                     s["status"]])
        if comm:
            c = s.get("communication")
            rows[-1][-1:-1] = [c["mean_bytes_per_step"] / 1e3 if c else None,
                               c["fraction_of_full"] * 100 if c else None]
    for s in excluded:
        rows.append([os.path.basename(os.path.normpath(s["run_dir"])), s["learner"], s["world_size"]]
                    + [None] * (len(header) - 4) + [s["status"]])
    return header, rows


def format_compare(reports: list[dict], fmt: str = "text") -> str:
    """The comparison table. Text and Markdown list only complete runs in the table and name the
    others after it (status, why, tasks evaluated); CSV keeps them as rows with empty metrics."""
    header, rows = compare_table(reports)
    complete, excluded = split_complete(reports)
    if fmt == "csv":
        return render(header, rows, fmt=fmt)
    rows = rows[:len(complete)]
    if complete:
        text = render(header, rows, fmt=fmt)
    else:
        text = f"no run to compare: none of the {len(reports)} run(s) is complete."
    notes = not_compared_notes(excluded)
    head = [f"{len(excluded)} run(s) not compared (only complete runs are ranked):"] if notes and complete else []
    if fmt == "md":
        return "\n\n".join([text] + head + (["\n".join(f"- {n}" for n in notes)] if notes else []))
    return "\n".join([text] + head + notes)


def format_continual(reports: list[dict], fmt: str = "text", compare: bool = False) -> str:
    if fmt in ("csv", "md") or (compare and fmt == "text"):
        return format_compare(reports, fmt)
    blocks = []
    for s in reports:
        lines = run_heading(s, f"{s['learner']}, {s['world_size']} ranks, {s['backend']}")
        if "accuracy_matrix" in s:
            lines.append(format_matrix(np.array(s["accuracy_matrix"])))
            lines.append(f"final average accuracy {s['final_average_accuracy'] * 100:.1f}% "
                         f"(top-5 {s['final_average_top5'] * 100:.1f}%), forgetting "
                         f"{s['forgetting'] * 100:.1f}%, BWT {s['backward_transfer'] * 100:+.1f}%")
        lines.append(f"training time {s['train_time_s']:.2f}s, {s['samples']} samples, "
                     f"{s['samples_per_s']:.0f} samples/s ({s['samples_per_s_per_rank']:.0f} per rank)")
        if s.get("buffer"):
            b = s["buffer"]
            lines.append(f"rehearsal buffer: {sum(x['buffer_stored'] for x in b)} samples stored "
                         f"({sum(x['buffer_bytes_stored'] for x in b) / 1e6:.2f} MB of "
                         f"{sum(x['buffer_bytes_allocated'] for x in b) / 1e6:.2f} MB allocated), "
                         "per rank: " + ", ".join(str(x["buffer_stored"]) for x in b))
        if s.get("communication"):
            c = s["communication"]
            lines.append(f"allreduced gradients: {c['mean_bytes_per_step'] / 1e3:.1f} kB/step per rank "
                         f"({c['fraction_of_full'] * 100:.2f}% of full fine-tuning's "
                         f"{c['full_finetune_bytes_per_step_mean'] / 1e3:.1f} kB); per task "
                         + ", ".join(f"{b / 1e3:.1f} kB" for b in c["allreduce_bytes_per_step"])
                         + "; trainable parameters per task " + ", ".join(map(str, c["trainable_params"])))
            if "ipc_frozen_pairs" in c:
                lines.append("IPC-frozen (layer, matrix) pairs per task: " + "; ".join(
                    f"T{i}: {n} ({keys or '-'})" for i, (n, keys) in
                    enumerate(zip(c["ipc_frozen_pairs"], c["ipc_frozen_keys"])))
                    + f"; {c['ipc_frozen_total'][-1]} frozen in all")
        t = s["timers"]
        if t["per_rank"]:
            lines.append(timer_table(t))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def progress(view):
    """``hpccl status``: task and epoch of the totals; samples/s and the ETA from the mean of the
    last epochs (training time only: the evaluation after each task is not in it)."""
    from hpccl.analysis.progress import Progress
    tasks, epochs = view.setting("scenario.num_tasks"), view.setting("train.epochs")
    total = tasks * epochs if tasks and epochs else None
    if view.rows("epochs") == 0:
        return Progress(f"task 0/{tasks or '?'}", 0, total)
    task, epoch = int(view.last("epochs/task")[0]), int(view.last("epochs/epoch")[0])
    samples, seconds = view.last("epochs/samples", 5), view.last("epochs/time_s", 5)
    done = task * (epochs or 0) + epoch + 1
    rate = float(np.sum(samples) / np.sum(seconds)) if np.sum(seconds) > 0 else None
    eta = float(np.mean(seconds)) * (total - done) if total else None
    return Progress(f"task {task + 1}/{tasks} epoch {epoch + 1}/{epochs}", done, total, rate, eta)
