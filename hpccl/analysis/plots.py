"""``hpccl analyze --plot DIR``: PNG figures with matplotlib (no display needed)."""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label(s: dict) -> str:
    return f"{os.path.basename(os.path.normpath(s['run_dir']))} ({s['learner']}, {s['world_size']} ranks)"


def accuracy_per_task(reports, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in reports:
        if "average_accuracy" in s:
            acc = np.array(s["average_accuracy"]) * 100
            ax.plot(range(1, len(acc) + 1), acc, marker="o", label=_label(s))
    ax.set(xlabel="tasks learnt", ylabel="average accuracy on tasks seen (%)", ylim=(0, 101),
           title="Accuracy after each task")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_vs_time(reports, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in reports:
        if "final_average_accuracy" in s:
            ax.scatter(s["train_time_s"], s["final_average_accuracy"] * 100, s=60)
            ax.annotate(_label(s), (s["train_time_s"], s["final_average_accuracy"] * 100),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="training time (s)", ylabel="final average accuracy (%)", ylim=(0, 101),
           title="Accuracy versus training time")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def time_breakdown(reports, path):
    from hpccl.analysis.report import TIMER_PARTS
    plt = _plt()
    fig, axes = plt.subplots(1, len(reports), figsize=(4 * len(reports), 4), squeeze=False)
    for ax, s in zip(axes[0], reports):
        ranks = s["timers"]["per_rank"]
        bottom = np.zeros(len(ranks))
        for part in TIMER_PARTS:
            values = np.array([r["seconds"][part] for r in ranks])
            ax.bar([str(r["rank"]) for r in ranks], values, bottom=bottom, label=part)
            bottom += values
        ax.set(xlabel="rank", ylabel="seconds", title=_label(s))
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Where iteration time went, per rank")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def scaling_curves(sweep, path):
    plt = _plt()
    pts = [p for p in sweep["points"] if p["epoch_s"] is not None]
    gpus = np.array([p["gpus"] for p in pts])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if sweep["mode"] == "strong":
        axes[0].plot(gpus, [p["speedup"] for p in pts], marker="o", label="measured")
        axes[0].plot(gpus, gpus / gpus.min(), "--", color="gray", label="ideal")
        axes[0].set(ylabel="speedup", title="Strong scaling")
    else:
        x = np.array([p["samples_per_s"] for p in pts])
        axes[0].plot(gpus, x, marker="o", label="measured")
        axes[0].plot(gpus, x[0] * gpus / gpus[0], "--", color="gray", label="ideal")
        axes[0].set(ylabel="samples/s", title="Weak scaling")
    axes[1].plot(gpus, [p["efficiency"] * 100 for p in pts], marker="o", label="measured")
    axes[1].axhline(100, ls="--", color="gray", label="ideal")
    axes[1].set(ylabel="efficiency (%)", ylim=(0, 110), title="Efficiency")
    for ax in axes:
        ax.set(xscale="log", xlabel="GPUs (ranks)")
        ax.set_xticks(gpus, [str(g) for g in gpus])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


RUN_PLOTS = (("accuracy_per_task.png", accuracy_per_task), ("accuracy_vs_time.png", accuracy_vs_time),
             ("time_breakdown.png", time_breakdown))


def check_plot_paths(out_dir, names=(), what: str = "--plot") -> None:
    """HpcclError unless ``out_dir`` is (or can be made) a writable directory in which each of
    ``names`` can be written as a file; checked before any figure is drawn."""
    from hpccl.paths import check_output_dir, check_output_file
    check_output_dir(out_dir, what, "a directory to write PNG figures into")
    for name in names:
        check_output_file(os.path.join(out_dir, name), f"{what} {out_dir!r}: figure", "a PNG file to write")


def write_run_plots(reports, out_dir) -> list[str]:
    check_plot_paths(out_dir, [name for name, _ in RUN_PLOTS])
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, fn in RUN_PLOTS:
        path = os.path.join(out_dir, name)
        fn(reports, path)
        paths.append(path)
    return paths
