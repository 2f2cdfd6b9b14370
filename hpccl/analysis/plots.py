"""``hpccl analyze --plot DIR``: PNG figures with matplotlib (no display needed)."""

from __future__ import annotations

import os

import numpy as np


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> str:
    """Lay ``fig`` out, write it to ``path`` as a PNG and close it; ``path``."""
    fig.tight_layout()
    # The path was checked before any work (check_output_file: missing folders may be made);
    # a file name holding a '/' names such folders too.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    # pyplot keeps every figure it made alive until closed: a long analysis would pile them up.
    pyplot().close(fig)
    return path


def write_figures(out_dir: str, figures, runs) -> list[str]:
    """Draw and save each ``(file name, draw)`` of ``figures`` in ``out_dir`` (made when missing),
    ``draw(runs)`` returning the figure; the paths written, in that order."""
    os.makedirs(out_dir, exist_ok=True)
    return [save_figure(draw(runs), os.path.join(out_dir, name)) for name, draw in figures]


def scaling_curves(sweep, path):
    plt = pyplot()
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
    save_figure(fig, path)


def check_plot_paths(out_dir, names=(), what: str = "--plot") -> None:
    """HpcclError unless ``out_dir`` is (or can be made) a writable directory in which each of
    ``names`` can be written as a file; checked before any figure is drawn."""
    from hpccl.core.paths import check_output_dir, check_output_file
    check_output_dir(out_dir, what, "a directory to write PNG figures into")
    for name in names:
        check_output_file(os.path.join(out_dir, name), f"{what} {out_dir!r}: figure", "a PNG file to write")
