"""Job kinds, registered once. The command line, the analysis and the job submission ask a
kind for what they need and never test for one by name.

A kind is a capability hpccl runs as a batch job: continual learning over class-incremental
tasks (``continual``), anytime learning over mega-batches (``megabatch``, ALMA, a continual
scenario with its own runner), regularized ERM (``erm``), online recurrent learning
(``online_rnn``). Each names, as "module:function" references imported only when used (so
the CLI does not import torch to print help):

  runner       run(cfg, run_dir, argv, world, resume) -> summary dict, on every rank
  summarize    (run_dir, run log, rank logs) -> summary dict, for ``hpccl analyze``
  format       (summaries of this kind, fmt, compare) -> text | csv | md (JSON is common)
  plots        (summaries, out_dir) -> [figure paths]
  plot_names   the file names ``plots`` writes (checked before any output), or None
  describe     cfg -> one line for ``hpccl validate`` and ``hpccl submit``
  resumable    whether it writes checkpoints; if not, ``no_resume`` says why, and
               ``hpccl run --resume`` refuses before starting any rank
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

from hpccl.errors import HpcclError


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class JobKind:
    name: str
    runner: str
    summarize: str
    format: str
    plots: str
    describe: Callable
    resumable: bool = False
    no_resume: str = ""
    plot_names: Optional[str] = None     # "module:attribute" of a list of (name, ...) pairs

    def run(self, cfg, run_dir, argv, world, resume=False) -> dict:
        return _load(self.runner)(cfg, run_dir, argv, world, resume)

    def summary(self, run_dir, run, ranks) -> dict:
        return {"job_kind": self.name, **_load(self.summarize)(run_dir, run, ranks)}

    def formatted(self, summaries, fmt, compare) -> str:
        return _load(self.format)(summaries, fmt, compare)

    def figures(self, summaries, out_dir) -> list[str]:
        return _load(self.plots)(summaries, out_dir)

    def figure_names(self) -> list[str]:
        return [] if self.plot_names is None else [name for name, *_ in _load(self.plot_names)]

    def refuse_resume(self, run_dir: str) -> None:
        if not self.resumable:
            raise HpcclError(f"{run_dir}: {self.no_resume}")


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    KINDS[kind.name] = kind
    return kind


def of_job(cfg) -> JobKind:
    if cfg.kind == "continual" and cfg.scenario.kind == "megabatch":
        return KINDS["megabatch"]
    return KINDS[cfg.kind]


def of_log(attrs: dict) -> JobKind:
    """The kind of a run, from its log.h5 attributes."""
    if attrs.get("scenario") == "megabatch":
        return KINDS["megabatch"]
    return KINDS[attrs.get("job_kind", "continual")]


def of_summary(summary: dict) -> JobKind:
    return KINDS[summary.get("job_kind", "continual")]


register(JobKind(
    name="continual", runner="hpccl.run:run_continual", resumable=True,
    summarize="hpccl.analysis.report:summarize_continual", format="hpccl.analysis.report:format_continual",
    plots="hpccl.analysis.plots:write_run_plots", plot_names="hpccl.analysis.plots:RUN_PLOTS",
    describe=lambda cfg: (f"learner {cfg.learner.kind}, model {cfg.model.kind}, "
                          f"{cfg.scenario.num_tasks} tasks")))
register(JobKind(
    name="megabatch", runner="hpccl.alma.job:run",
    no_resume="'scenario: megabatch' runs keep no checkpoint and cannot be resumed; its log.h5 "
              "holds the error curve up to the last arrival. Start a new run.",
    summarize="hpccl.alma.report:summarize_alma", format="hpccl.alma.report:format_alma_report",
    plots="hpccl.alma.report:plot_alma",
    describe=lambda cfg: (f"learner {cfg.learner.kind}, model {cfg.model.kind}, "
                          f"{cfg.scenario.num_megabatches} mega-batches, wait {cfg.scenario.wait}, "
                          f"replay {cfg.scenario.replay:g}")))
register(JobKind(
    name="erm", runner="hpccl.erm.job:run",
    no_resume="ERM runs keep no checkpoint and cannot be resumed; start a new run (a solve "
              "restarts in seconds to minutes).",
    summarize="hpccl.erm.report:erm_summary", format="hpccl.erm.report:format_erm_reports",
    plots="hpccl.erm.report:plot_erm",
    describe=lambda cfg: "kind erm"))
register(JobKind(
    name="online_rnn", runner="hpccl.rtrl.job:run",
    no_resume="online_rnn jobs cannot be resumed (they write no checkpoint); start a new run instead.",
    summarize="hpccl.rtrl.report:summarize_rnn", format="hpccl.rtrl.report:format_rnn_report",
    plots="hpccl.rtrl.report:plot_rnn",
    describe=lambda cfg: "kind online_rnn"))
