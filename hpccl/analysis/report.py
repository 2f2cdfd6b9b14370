"""``hpccl analyze``: one summary per run directory, merged from the rank logs."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from hpccl.errors import HpcclError
from hpccl.logs import SCHEMA_VERSION, read_h5
from hpccl.metrics import average_accuracy, backward_transfer, forgetting, format_matrix
from hpccl.timers import PHASES

TIMER_PARTS = PHASES + ("other",)


def load_run(run_dir: str) -> tuple[dict, list[dict]]:
    path = os.path.join(run_dir, "log.h5")
    if not os.path.isfile(path):
        raise HpcclError(f"{run_dir!r} is not an hpccl run directory: it has no log.h5. HINT: pass "
                         "the directory printed by 'hpccl run' (e.g. runs/quickstart-20260101-120000).")
    try:
        run = read_h5(path)
    except OSError as e:
        raise HpcclError(f"{path}: not a readable HDF5 log ({e}).") from None
    version = int(run["attrs"].get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise HpcclError(f"{path}: log schema version {version}, but this hpccl reads version "
                         f"{SCHEMA_VERSION}. HINT: analyse it with the hpccl version that wrote it.")
    ranks = [read_h5(p) for p in sorted(glob.glob(os.path.join(run_dir, "ranks", "rank*.h5")))]
    return run, ranks


def timer_breakdown(ranks: list[dict]) -> dict:
    per_rank = []
    for r in ranks:
        totals = {part: float(np.sum(r.get(f"timers/{part}", 0.0))) for part in TIMER_PARTS}
        total = float(np.sum(r.get("timers/total", 0.0)))
        per_rank.append({"rank": int(r["attrs"]["rank"]), "hostname": r["attrs"].get("hostname"),
                         "iterations": int(len(r.get("timers/total", []))), "total_s": total,
                         "seconds": totals,
                         "fractions": {k: (v / total if total > 0 else 0.0) for k, v in totals.items()}})
    if not per_rank:
        return {"per_rank": [], "mean_fractions": {}, "slowest_rank": None}
    slowest = max(per_rank, key=lambda r: r["total_s"])
    mean = {k: float(np.mean([r["fractions"][k] for r in per_rank])) for k in TIMER_PARTS}
    return {"per_rank": per_rank, "mean_fractions": mean, "slowest_rank": slowest["rank"],
            "slowest_fractions": slowest["fractions"]}


def summarize(run_dir: str) -> dict:
    run, ranks = load_run(run_dir)
    attrs = run["attrs"]
    done = int(attrs.get("tasks_completed", 0))
    top1 = run.get("eval/top1")
    top5 = run.get("eval/top5")
    summary = {"run_dir": run_dir, "name": attrs.get("name"), "learner": attrs.get("learner"),
               "status": attrs.get("status"), "world_size": int(attrs.get("world_size", 0)),
               "backend": attrs.get("backend"), "tasks_completed": done}
    if top1 is not None and done:
        acc = top1[:done, :done]
        summary.update({
            "accuracy_matrix": acc.tolist(), "top5_matrix": top5[:done, :done].tolist(),
            "average_accuracy": average_accuracy(acc).tolist(),
            "final_average_accuracy": float(average_accuracy(acc)[-1]),
            "final_average_top5": float(average_accuracy(top5[:done, :done])[-1]),
            "forgetting": float(forgetting(acc)[-1]), "forgetting_per_task": forgetting(acc).tolist(),
            "backward_transfer": backward_transfer(acc)})
    train_time = float(attrs.get("train_time_s", 0.0))
    samples = int(np.sum(run.get("tasks/samples", 0)))
    summary["train_time_s"] = train_time
    summary["samples"] = samples
    summary["samples_per_s"] = samples / train_time if train_time > 0 else 0.0
    summary["samples_per_s_per_rank"] = summary["samples_per_s"] / max(1, summary["world_size"])
    summary["timers"] = timer_breakdown(ranks)
    if summary["status"] != "complete":
        summary["note"] = (f"incomplete run (status '{summary['status']}'): read up to its last flushed "
                           f"record, {done} task(s) evaluated")
    return summary


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def format_report(reports: list[dict], fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(_jsonable(reports[0] if len(reports) == 1 else reports), indent=2)
    blocks = []
    for s in reports:
        lines = [f"== {s['run_dir']}: {s['name']} ({s['learner']}, {s['world_size']} ranks, "
                 f"{s['backend']}, {s['status']})"]
        if s.get("note"):
            lines.append(f"note: {s['note']}")
        if "accuracy_matrix" in s:
            lines.append(format_matrix(np.array(s["accuracy_matrix"])))
            lines.append(f"final average accuracy {s['final_average_accuracy'] * 100:.1f}% "
                         f"(top-5 {s['final_average_top5'] * 100:.1f}%), forgetting "
                         f"{s['forgetting'] * 100:.1f}%, BWT {s['backward_transfer'] * 100:+.1f}%")
        lines.append(f"training time {s['train_time_s']:.2f}s, {s['samples']} samples, "
                     f"{s['samples_per_s']:.0f} samples/s ({s['samples_per_s_per_rank']:.0f} per rank)")
        t = s["timers"]
        if t["per_rank"]:
            lines.append("iteration time   " + "".join(f"{p:>17}" for p in TIMER_PARTS))
            lines.append("mean of ranks    " + "".join(f"{t['mean_fractions'][p] * 100:16.1f}%" for p in TIMER_PARTS))
            lines.append(f"slowest (rank {t['slowest_rank']})" .ljust(17)
                         + "".join(f"{t['slowest_fractions'][p] * 100:16.1f}%" for p in TIMER_PARTS))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
