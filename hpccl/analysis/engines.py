"""``hpccl model --engine analytical|simgrid|both``: the same calibrated inputs through one or both
prediction engines, their rows side by side, where they disagree, and the component plot."""

from __future__ import annotations

import os

from hpccl.core.errors import HpcclError

ENGINES = ("analytical", "simgrid")
# stacked in this order; together they make the iteration time of either engine
COMPONENTS = (("data", ("t_data",)), ("compute", ("t_compute",)), ("step and other", ("t_step", "t_other")),
              ("allreduce", ("t_allreduce", "t_rehearsal_link")), ("exposed rehearsal", ("rehearsal_exposed",)))


def engines_of(choice: str) -> tuple[str, ...]:
    return ENGINES if choice == "both" else (choice,)


def predict_all(choice: str, m, gpus, gpus_per_node, net, scaling, global_batch, rehearsal, cores) -> dict:
    """{engine: rows} for the engines ``choice`` names (the analytical one first)."""
    out = {}
    for engine in engines_of(choice):
        if engine == "simgrid":
            from hpccl.analysis.simgrid_replay import predict, smpirun
            smpirun()     # missing SimGrid: its install hint, before any trace is written
        else:
            from hpccl.analysis.model import predict
        out[engine] = predict(m, gpus, gpus_per_node, net, scaling, global_batch, rehearsal=rehearsal,
                              cores_per_node=cores)
    return out


def disagreements(rows: dict) -> list[str]:
    """Warning lines where the two engines are more than 25 % apart (none with one engine)."""
    if len(rows) < 2:
        return []
    from hpccl.analysis.simgrid_replay import disagreements as apart
    return [f"warning: engines disagree by more than 25 %: {line}"
            for line in apart(rows["analytical"], rows["simgrid"])]


def table(rows: dict, measured: dict | None = None):
    """model_table's header and lines; with two engines an 'engine' column first and the
    engines' lines of one GPU count next to each other."""
    from hpccl.analysis.model import model_table
    tables = {e: model_table(r, measured) for e, r in rows.items()}
    if len(tables) == 1:
        return next(iter(tables.values()))
    header = ["engine"] + next(iter(tables.values()))[0]
    lines = [[e] + tables[e][1][i] for i in range(len(next(iter(rows.values())))) for e in tables]
    return header, lines


def check_plot_path(path: str) -> str:
    """HpcclError unless ``path`` is a .png file that can be written; before any prediction."""
    from hpccl.core.paths import check_output_file
    if not str(path).lower().endswith(".png"):
        raise HpcclError(f"hpccl model --plot {path!r}: expected a file name ending in .png (the figure "
                         "is written as PNG), found another extension.")
    return check_output_file(path, "hpccl model --plot", "a PNG file to write", "model.png")


def component_stack(row: dict) -> list[float]:
    """Seconds of each of COMPONENTS in ``row``; they add up to row['iteration_s']."""
    return [sum(row.get(k) or 0.0 for k in keys) for _, keys in COMPONENTS]


def plot_components(rows: dict, path: str, measured: dict | None = None, title: str = "") -> str:
    """Time per iteration by component, stacked against GPUs (log2 axis), a panel per engine."""
    import numpy as np

    from hpccl.analysis.plots import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4), sharey=True, squeeze=False)
    for ax, (engine, engine_rows) in zip(axes[0], rows.items()):
        gpus = [r["gpus"] for r in engine_rows]
        stack = np.array([component_stack(r) for r in engine_rows]).T * 1e3
        ax.stackplot(gpus, stack, labels=[name for name, _ in COMPONENTS], alpha=0.85)
        if measured:
            pts = sorted((g, p["iteration_s"] * 1e3) for g, p in measured.items())
            ax.plot(*zip(*pts), "ko", label="measured")
        ax.set_xscale("log", base=2)
        ax.set_xticks(gpus, [str(g) for g in gpus])
        ax.set(xlabel="GPUs (ranks)", title=f"{engine} engine" + (f": {title}" if title else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("time per iteration (ms)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    return save_figure(fig, os.fspath(path))
