"""The job schema: one YAML file describes one training job.

Every section is a dataclass here, so this file is the one typed place that says what a job
may contain. Later capabilities add sections (``rehearsal``) or kinds (learners, scenarios).
Loading goes: YAML -> raw dict -> ``--set`` overrides -> typed :class:`JobConfig` (unknown keys
and wrong types are errors naming the file and key) -> cross-section checks.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import yaml

from hpccl.erm.jobconfig import ErmConfig
from hpccl.core.errors import ConfigError
from hpccl.continual.lora.jobconfig import LoraConfig, PretrainConfig, check_lora_job
from hpccl.rtrl.jobconfig import OnlineRnnConfig
from hpccl.core.schema import (Loader, YamlInputError, apply_override, load_yaml, path_component, ranged,
                               refuse_control_characters, suggest, user_path)

BUILTIN_DATASETS = ("digits", "breast_cancer")   # breast_cancer: 2 classes, for kind: erm
LEARNER_KINDS = ("incremental", "scratch", "rehearsal", "lorac", "finetune")


@dataclass
class DataConfig:
    path: Optional[str] = user_path()   # an hpccl HDF5 dataset file (see docs/datasets.md);
                                     # kind: erm also reads LIBSVM text files (.bz2/.gz/.xz ok)
    builtin: Optional[str] = None    # or a dataset shipped with a dependency: digits
    # On the device, continual jobs (hpccl/data/pipeline.py):
    augment: Literal["none", "cifar", "imagenet"] = "none"   # training batches only, seeded
    crop: Optional[int] = ranged(None, ge=1)     # imagenet: the side the model sees (default: stored)
    normalize: Union[bool, Literal["auto"]] = "auto"   # auto: when the file stores mean/std

    def check(self, loader: Loader, path: str):
        if self.crop is not None and self.augment != "imagenet":
            raise loader.error(f"{path}.crop", "no value unless 'augment: imagenet' (the crop side of "
                               "a random-resized crop)", self.crop)
        if (self.path is None) == (self.builtin is None):
            raise ConfigError(f"{loader.source}: section '{path}' needs exactly one of 'path' (an "
                              "HDF5 dataset file) or 'builtin' (one of: "
                              f"{', '.join(BUILTIN_DATASETS)}), found "
                              f"{'both' if self.path else 'neither'}.")
        if self.builtin is not None and self.builtin not in BUILTIN_DATASETS:
            raise loader.error(f"{path}.builtin", "one of " + ", ".join(map(repr, BUILTIN_DATASETS)),
                               self.builtin, suggest(self.builtin, BUILTIN_DATASETS))


@dataclass
class ScenarioConfig:
    kind: Literal["class_incremental", "megabatch"] = "class_incremental"   # tasks of classes, or ALMA mega-batches
    # class_incremental: the classes in num_tasks tasks
    num_tasks: int = ranged(5, ge=1)        # tasks the classes are split into
    class_order: Literal["seeded", "natural"] = "seeded"  # natural: 0, 1, 2, ...
    classes: Optional[list[int]] = None      # only these dataset classes (null: all), e.g. those
                                             # disjoint from a pre-training subset
    # megabatch (ALMA, see hpccl.alma.job): the training set in M i.i.d. mega-batches
    num_megabatches: int = ranged(10, ge=1)  # M: mega-batches the training set arrives in
    wait: Union[int, Literal["all"]] = ranged(1, ge=1)    # train every w arrivals; all: once, at the end (w = M)
    replay: float = ranged(0.0, ge=0, le=1)                     # share of every past mega-batch added to an update
    val_share: float = ranged(0.1, ge=0, lt=1)                  # of each update's data, held out for early stopping
    patience: int = ranged(3, ge=1)                       # epochs without a better validation accuracy
    flush: bool = True                       # w not dividing M: also update at the last arrival

    def check(self, loader: Loader, path: str):
        if self.classes is not None and (len(self.classes) < self.num_tasks or min(self.classes) < 0
                                         or len(set(self.classes)) != len(self.classes)):
            raise loader.error(f"{path}.classes", f"distinct class labels >= 0, at least num_tasks "
                               f"({self.num_tasks}) of them, or null", self.classes)
        if self.wait == "all":
            self.wait = self.num_megabatches
        if not 1 <= self.wait <= self.num_megabatches:
            raise loader.error(f"{path}.wait", f"an integer in [1, num_megabatches = {self.num_megabatches}] "
                               "or 'all'", self.wait)


@dataclass
class _KindWithOptions:
    """A section naming a ``kind`` and giving that kind's own options flat beside it: every key
    but ``kind`` lands in ``options``, for the subclass's ``check`` to judge."""
    __extra_keys__ = "options"
    kind: str
    options: dict = field(default_factory=dict)

    def _check_kind(self, loader: Loader, path: str, kinds) -> None:
        """ConfigError unless ``kind`` is one of ``kinds`` (listed in the order given)."""
        if self.kind not in kinds:
            raise loader.error(f"{path}.kind", "one of " + ", ".join(map(repr, kinds)),
                               self.kind, suggest(self.kind, kinds))


@dataclass
class ModelConfig(_KindWithOptions):
    """``kind`` plus that model's own options, given flat (e.g. ``hidden: [128, 128]``)."""
    kind: str = "mlp"       # mlp | cnn | resnet18 | resnet50 | vit | moe

    def check(self, loader: Loader, path: str):
        from hpccl.models import MODEL_KINDS, model_option_names
        self._check_kind(loader, path, sorted(MODEL_KINDS))
        known = model_option_names(self.kind)
        if isinstance(self.options.get("pretrained"), str):     # a path, read as schema.user_path reads
            self.options["pretrained"] = os.path.expanduser(self.options["pretrained"])
        for key in self.options:
            if key not in known:
                raise ConfigError(f"{loader.source}: unknown key '{path}.{key}' for model kind "
                                  f"'{self.kind}'; its options are: {', '.join(sorted(known)) or 'none'}."
                                  f"{suggest(key, known)}")


@dataclass
class LearnerConfig(_KindWithOptions):
    """``kind`` plus, for the ALMA learners, their options given flat (e.g. ``init: copy``)."""
    kind: str = "incremental"   # what to train on: incremental | scratch | rehearsal | lorac |
                                # finetune, or an ALMA learner

    def check(self, loader: Loader, path: str):
        from hpccl.alma.jobconfig import ALMA_LEARNER_KINDS
        self._check_kind(loader, path, LEARNER_KINDS + ALMA_LEARNER_KINDS)
        if self.options and self.kind not in ALMA_LEARNER_KINDS:
            key = next(iter(self.options))
            raise ConfigError(f"{loader.source}: unknown key '{path}.{key}' in section '{path}': "
                              f"learner '{self.kind}' takes no options besides 'kind'.")


@dataclass
class TrainConfig:
    epochs: int = ranged(5, ge=1)     # per task
    batch_size: int = ranged(32, ge=1)  # per rank
    lr: float = ranged(0.05, gt=0)    # for one rank; scaled by lr_scaling
    lr_scaling: Literal["none", "linear"] = "linear"   # linear: lr x ranks on N ranks (Goyal et al.)
    lr_scaling_cap: Optional[float] = ranged(None, ge=1)   # e.g. 64: never scale by more than x64
    warmup_epochs: int = ranged(0, ge=0)  # ramp from lr to the scaled lr (Goyal et al.)
    optimizer: Literal["sgd", "adam"] = "sgd"   # the local optimizer, wrapped by the gradient backend
    momentum: float = ranged(0.9, ge=0, le=1)   # SGD momentum
    weight_decay: float = ranged(0.0, ge=0)     # L2 penalty of the optimizer
    grad_clip_norm: Optional[float] = ranged(None, gt=0)   # clip the averaged gradient's L2 norm (null: off)
    eval_batch_size: int = ranged(256, ge=1)    # samples per batch when scoring the test data
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"   # autocast of forward and loss; fp16 scales the loss



@dataclass
class RehearsalConfig:
    """The distributed rehearsal buffer (used by ``learner: rehearsal``)."""
    __aliases__ = {"async": "async_updates"}
    slots_per_class: Optional[int] = ranged(None, ge=1)    # K slots per class on each rank; or:
    buffer_ratio: Optional[float] = ranged(None, gt=0, le=1)     # global budget as a share of the training set (default 0.1)
    candidates: int = ranged(14, ge=0)       # c: samples of each mini-batch offered to the local shard
    representatives: int = ranged(7, ge=0)   # r: samples drawn from the global buffer per mini-batch
    start_task: int = ranged(1, ge=0, le=1)  # first task whose mini-batches get representatives
    async_updates: bool = True               # YAML key 'async': overlap buffer work with training
    ranks_per_node: Optional[int] = ranged(None, ge=1)     # null: real nodes; 1: every rank its own node (remote path)
    progress_ms: float = ranged(1.0, gt=0, le=1000)   # idle buffer thread lets MPI serve others' reads this often
    # Reads from other nodes: rma (one-sided gets), messages (one request per owner, answered
    # by its rehearsal thread: any MPI), auto (rma where a window across nodes can be created).
    transport: Literal["auto", "rma", "messages"] = "auto"

    def check(self, loader: Loader, path: str):
        if self.slots_per_class is not None and self.buffer_ratio is not None:
            raise ConfigError(f"{loader.source}: section '{path}' sets both 'slots_per_class' and "
                              "'buffer_ratio'; give one (K slots per class per rank, or a share of "
                              "the training set).")
        if self.slots_per_class is None and self.buffer_ratio is None:
            self.buffer_ratio = 0.1


@dataclass
class RuntimeConfig:
    # Gradient allreduce: horovod | torch | mpi for continual jobs (default horovod); the
    # kinds that run their own MPI collectives (megabatch, erm, online_rnn) take mpi only.
    backend: Optional[Literal["horovod", "torch", "mpi"]] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"   # auto: cuda:<local rank> where torch sees a GPU, else cpu
    threads_per_rank: Optional[int] = ranged(None, ge=1, le=1024)   # torch threads; default: this rank's cores / the ranks sharing them
    profile_sync: bool = False      # CUDA: synchronise after every timed phase (exact breakdown, no overlap)
    # A rank that waits on the others (a collective, the gradient allreduce, a rehearsal draw)
    # longer than this ends the job, naming itself and the wait: a lost node or a partition
    # otherwise holds a TCP collective for many minutes. Seconds, '5min', or 'off'.
    hang_timeout: Union[float, str, bool] = ranged("5min", gt=0)

    def check(self, loader: Loader, path: str):
        from hpccl.core.schema import parse_timeout
        if parse_timeout(self.hang_timeout) is None:
            raise loader.error(f"{path}.hang_timeout", "a number of seconds > 0, a time such as "
                               "'5min' or '90s', or 'off'", self.hang_timeout)
        if self.hang_timeout is False:
            self.hang_timeout = "off"

    @property
    def hang_timeout_s(self) -> float:
        """0.0 when off."""
        from hpccl.core.schema import parse_timeout
        return parse_timeout(self.hang_timeout)


EVERY_EXPECTED = "a number of epochs >= 1, a time such as '30min', '90s' or '2h', 'task' or 'off'"


@dataclass
class CheckpointConfig:
    """Periodic checkpoints (besides the one a stop signal writes), for surviving failures."""
    __aliases__ = {"async": "write_async"}
    # YAML reads a bare `off` as false: accepted as 'off'.
    every: Union[int, str, bool] = ranged("30min", ge=1, expected=EVERY_EXPECTED)   # N epochs | '30min' | 'task' | 'off'
    keep: int = ranged(2, ge=1)                      # the latest and keep - 1 before it
    write_async: bool = True                         # YAML key 'async': written by a background thread

    def check(self, loader: Loader, path: str):
        from hpccl.core.schema import parse_every
        if self.every is False:
            self.every = "off"
        if self.every is True or parse_every(self.every) is None:
            raise loader.error(f"{path}.every", EVERY_EXPECTED, self.every)


@dataclass
class LogConfig:
    dir: str = user_path("runs")              # run directories are created below this
    # YAML reads a bare `off` as false: accept booleans (false: off, true: auto).
    progress: Union[Literal["auto", "bar", "lines", "off"], bool] = "auto"   # rank 0's progress: a bar
                                              # on a terminal (auto), lines in a log file, or none
    tensorboard: bool = False                 # rank 0 also writes TensorBoard scalars into RUN_DIR/tensorboard/
                                              # as it trains (loss, accuracy per task, lr, samples/s, phase
                                              # times, each kind's per-epoch rows), flushed every epoch

    def check(self, loader: Loader, path: str):
        if isinstance(self.progress, bool):
            self.progress = "auto" if self.progress else "off"


# What a job is: a continual-learning run (scenario + learner), an ERM solve, or online
# recurrent learning. Each kind has its runner (hpccl.continual.job.JOB_RUNNERS) and its own section.
JOB_KINDS = ("continual", "erm", "online_rnn")


@dataclass
class JobConfig:
    name: str = path_component()             # names the run directory (NAME-TIME) and the logs
    kind: Literal["continual", "erm", "online_rnn"] = "continual"   # what runs: continual learning,
                                             # an ERM solve, online RNN learning
    data: Optional[DataConfig] = None        # required by continual and erm jobs
    seed: int = ranged(0, ge=0, lt=2**63)   # one seed for the job, derived per purpose: reruns reproduce the numbers
    # the continual kind (scenario, model and train also serve megabatch jobs)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)   # what arrives, in which order
    model: ModelConfig = field(default_factory=ModelConfig)   # the network
    learner: LearnerConfig = field(default_factory=LearnerConfig)   # what to train on at each task
    train: TrainConfig = field(default_factory=TrainConfig)   # optimisation of each task
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)            # learner: lorac
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # hpccl pretrain
    # the other kinds, each its own section
    erm: ErmConfig = field(default_factory=ErmConfig)   # kind: erm
    rnn: OnlineRnnConfig = field(default_factory=OnlineRnnConfig)   # kind: online_rnn
    # every kind
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)   # ranks, devices and the gradient backend
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)   # where runs are written, how progress shows

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = {"kind": self.model.kind, **self.model.options}
        d["learner"] = {"kind": self.learner.kind, **self.learner.options}
        d["rehearsal"]["async"] = d["rehearsal"].pop("async_updates")
        d["checkpoint"]["async"] = d["checkpoint"].pop("write_async")
        return d

    def check(self, loader: Loader, path: str):
        if self.kind in ("continual", "erm") and self.data is None:
            raise ConfigError(f"{loader.source}: a '{self.kind}' job needs a 'data' section "
                              "(data: {path: FILE} or data: {builtin: NAME}).")
        from hpccl.alma.jobconfig import ALMA_LEARNER_KINDS, check_alma_job
        if self.kind == "continual" and self.scenario.kind == "megabatch":
            check_alma_job(self, loader.source)
        elif self.kind == "continual" and self.learner.kind in ALMA_LEARNER_KINDS:
            raise ConfigError(f"{loader.source}: key 'learner.kind': {self.learner.kind!r} is an ALMA "
                              "learner for mega-batch streams; set 'scenario: {kind: megabatch}' or use "
                              f"one of {', '.join(map(repr, LEARNER_KINDS))}.")
        self._resolve_backend(loader)
        if self.data is not None and (self.kind != "continual" or self.scenario.kind == "megabatch"):
            for key, default in (("augment", "none"), ("normalize", "auto")):
                if getattr(self.data, key) != default:
                    raise loader.error(f"data.{key}", f"{default!r} (or no key) for this kind of job: only "
                                       "class-incremental continual jobs transform samples on the device",
                                       getattr(self.data, key))
        check_lora_job(self, loader.source)
        if self.learner.kind == "rehearsal" and self.rehearsal.candidates > self.train.batch_size:
            raise ConfigError(f"{loader.source}: key 'rehearsal.candidates': expected at most "
                              f"train.batch_size ({self.train.batch_size}) candidates per mini-batch, "
                              f"found {self.rehearsal.candidates}.")

    def _resolve_backend(self, loader: Loader):
        """ALMA, ERM and online RNN jobs allreduce with MPI collectives on communicators of their
        own (rank groups, replicated solver iterates), not through a gradient backend; a job
        that asks them for another backend would be told one thing and get another."""
        own_mpi = self.kind != "continual" or self.scenario.kind == "megabatch"
        if self.runtime.backend is None:
            self.runtime.backend = "mpi" if own_mpi else "horovod"
        elif own_mpi and self.runtime.backend != "mpi":
            what = "'scenario: megabatch'" if self.kind == "continual" else f"'{self.kind}'"
            raise loader.error("runtime.backend", f"'mpi' for {what} jobs, whose collectives go through "
                               "MPI directly (or no key: mpi is their default)", self.runtime.backend)


def _shorthand(raw: dict) -> dict:
    # `learner: rehearsal` means `learner: {kind: rehearsal}`; same for model and scenario.
    for key in ("learner", "model", "scenario"):
        if isinstance(raw.get(key), str):
            raw[key] = {"kind": raw[key]}
    return raw


def parse_set(item: str) -> tuple[str, object]:
    """``train.lr=0.1`` -> ("train.lr", 0.1); the value is read as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set train.lr=0.1.")
    key, _, text = item.partition("=")
    shown = item if len(item) <= 80 else item[:60] + "..." + item[-10:]
    try:
        try:
            value = load_yaml(text) if text.strip() else ""
        except YamlInputError:
            raise
        except yaml.YAMLError:
            value = text        # not YAML: the text as written, held to the same rules
            refuse_control_characters(value, key.strip())
    except YamlInputError as e:
        raise ConfigError(f"--set {shown!r}: {e}.") from None
    return key.strip(), value


def load_job(path: str, overrides: list[str] | tuple = ()) -> JobConfig:
    """Read, override and validate a job file; every problem is a ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"job file {path!r} does not exist (or is not a file).")
    try:
        with open(path, "rb") as f:        # bytes: load_yaml checks the encoding
            raw = load_yaml(f)
    except YamlInputError as e:
        raise ConfigError(f"{path}: {e}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return job_from_dict(raw, source=path, overrides=overrides)


def job_from_dict(raw, source: str = "<job>", overrides=()) -> JobConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (name, data, model, ...) at "
                          f"the top level, found {type(raw).__name__}.")
    raw = _shorthand(copy.deepcopy(raw))     # --set edits nested sections: never the caller's
    for item in overrides:
        key, value = parse_set(item)
        apply_override(raw, key, value, f"{source} (--set {item})", JobConfig)
    raw = _shorthand(raw)
    return Loader(source).section(JobConfig, raw, "")


def dump_job(cfg: JobConfig, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
