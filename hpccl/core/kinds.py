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
  inputs       (cfg, job file) -> notes: the files the job reads, checked before any rank
               starts or anything is queued (``hpccl run``, ``validate``, ``submit``); None: none
  resumable    whether it writes checkpoints; if not, ``no_resume`` says why, and
               ``hpccl run --resume`` refuses before starting any rank
  host_memory  (cfg, ranks, on_gpu) -> HostMemoryEstimate: what one rank will hold in host
               memory (``hpccl submit`` checks it against the site's nodes); None: no estimate
  progress     (LogView of a log being written) -> Progress: how far the run is, for
               ``hpccl status`` (hpccl.analysis.progress); None: no progress shown
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

from hpccl.core.errors import HpcclError


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
    inputs: Optional[str] = None
    host_memory: Optional[str] = None
    progress: Optional[str] = None

    def progress_of(self, view):
        return None if self.progress is None else _load(self.progress)(view)

    def estimate_host_memory(self, cfg, ranks: int, on_gpu: bool):
        return None if self.host_memory is None else _load(self.host_memory)(cfg, ranks, on_gpu)

    def check_inputs(self, cfg, source: str) -> list[str]:
        return [] if self.inputs is None else _load(self.inputs)(cfg, source)

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
    name="continual", runner="hpccl.continual.job:run", resumable=True,
    summarize="hpccl.continual.report:summarize_continual", format="hpccl.continual.report:format_continual",
    plots="hpccl.continual.plots:write_run_plots", plot_names="hpccl.continual.plots:RUN_PLOTS",
    inputs="hpccl.preflight:check_dataset_job", host_memory="hpccl.continual.host_memory:estimate",
    progress="hpccl.continual.report:progress",
    describe=lambda cfg: (f"learner {cfg.learner.kind}, model {cfg.model.kind}, "
                          f"{cfg.scenario.num_tasks} tasks")))


def _kind_package(name: str, package: str, summarize: str, format: str, plots: str, no_resume: str,
                  describe, inputs: Optional[str] = None, host_memory: Optional[str] = None) -> JobKind:
    """A kind whose runner is ``hpccl.PACKAGE.job:run`` and whose analysis is in
    ``hpccl.PACKAGE.report`` (its figures in ``FIGURES``, its ``hpccl status`` progress in
    ``progress``); none of them keeps checkpoints yet."""
    report = f"hpccl.{package}.report"
    return register(JobKind(name=name, runner=f"hpccl.{package}.job:run", no_resume=no_resume,
                            summarize=f"{report}:{summarize}", format=f"{report}:{format}",
                            plots=f"{report}:{plots}", plot_names=f"{report}:FIGURES",
                            describe=describe, inputs=inputs, host_memory=host_memory,
                            progress=f"{report}:progress"))


_kind_package("megabatch", "alma", "summarize_alma", "format_alma_report", "plot_alma",
              "'scenario: megabatch' runs keep no checkpoint and cannot be resumed; its log.h5 holds "
              "the error curve up to the last arrival. Start a new run.",
              lambda cfg: (f"learner {cfg.learner.kind}, model {cfg.model.kind}, "
                           f"{cfg.scenario.num_megabatches} mega-batches, wait {cfg.scenario.wait}, "
                           f"replay {cfg.scenario.replay:g}"),
              inputs="hpccl.preflight:check_dataset_job")
_kind_package("erm", "erm", "erm_summary", "format_erm_reports", "plot_erm",
              "ERM runs keep no checkpoint and cannot be resumed; start a new run (a solve restarts "
              "in seconds to minutes).", lambda cfg: "kind erm", inputs="hpccl.erm.data:check_input")
_kind_package("online_rnn", "rtrl", "summarize_rnn", "format_rnn_report", "plot_rnn",
              "online_rnn jobs cannot be resumed (they write no checkpoint); start a new run instead.",
              lambda cfg: "kind online_rnn", inputs="hpccl.rtrl.job:check_input",
              host_memory="hpccl.rtrl.host_memory:estimate")
