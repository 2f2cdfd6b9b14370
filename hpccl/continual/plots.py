"""The continual kind's figures for ``hpccl analyze --plot DIR``."""

from __future__ import annotations

import os

import numpy as np

from hpccl.continual.report import TIMER_PARTS
from hpccl.analysis.plots import pyplot, check_plot_paths, write_figures

def _label(s: dict) -> str:
    return f"{os.path.basename(os.path.normpath(s['run_dir']))} ({s['learner']}, {s['world_size']} ranks)"


def accuracy_per_task(reports):
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for s in reports:
        if "average_accuracy" in s:
            acc = np.array(s["average_accuracy"]) * 100
            ax.plot(range(1, len(acc) + 1), acc, marker="o", label=_label(s))
    ax.set(xlabel="tasks learnt", ylabel="average accuracy on tasks seen (%)", ylim=(0, 101),
           title="Accuracy after each task")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def accuracy_vs_time(reports):
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for s in reports:
        if "final_average_accuracy" in s:
            ax.scatter(s["train_time_s"], s["final_average_accuracy"] * 100, s=60)
            ax.annotate(_label(s), (s["train_time_s"], s["final_average_accuracy"] * 100),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="training time (s)", ylabel="final average accuracy (%)", ylim=(0, 101),
           title="Accuracy versus training time")
    ax.grid(alpha=0.3)
    return fig


def time_breakdown(reports):
    fig, axes = pyplot().subplots(1, len(reports), figsize=(4 * len(reports), 4), squeeze=False)
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
    return fig


RUN_PLOTS = (("accuracy_per_task.png", accuracy_per_task), ("accuracy_vs_time.png", accuracy_vs_time),
             ("time_breakdown.png", time_breakdown))


def write_run_plots(reports, out_dir) -> list[str]:
    check_plot_paths(out_dir, [name for name, _ in RUN_PLOTS])
    return write_figures(out_dir, RUN_PLOTS, reports)
