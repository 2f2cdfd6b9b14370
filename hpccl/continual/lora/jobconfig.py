"""The ``lora`` and ``pretrain`` sections of a job file: LoRAC-IPC on a pre-trained ViT
(``learner: lorac``, baseline ``learner: finetune``) and ``hpccl pretrain``. Owned by the LoRA
capability; hpccl.config includes both sections in the job schema.

    lora:
      rank: 4              # r of every adapter; scaling alpha / r
      alpha: null          # null: = rank (scaling 1)
      matrices: [q, k, v, proj, fc1, fc2]
      ortho_weight: 0.1    # weight of the orthogonality penalty (0: LoRAC without it)
      ipc_fraction: 0.1    # share of (layer, matrix) pairs frozen at each task's end (0: no IPC)
      ipc_beta: 0.85       # EMA factor of the sensitivity and the uncertainty
      omega_init: 1.0      # a new past adapter's composition weight
      omega_lr_scale: 10   # omegas train at lr x this
      shared: false        # true: one adapter fine-tuned across all tasks (baseline)
      train_head: true
    pretrain:              # hpccl pretrain JOB: the ViT on classes disjoint from the continual ones
      classes: null        # null: every class not in scenario.classes
      epochs / batch_size / lr / optimizer / weight_decay: null (the train section's)
      out: null            # null: model.pretrained (the file the continual run loads)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, Optional

from hpccl.core.errors import ConfigError, HpcclError
from hpccl.core.schema import Loader, ranged, user_path

LORA_MATRICES = ("q", "k", "v", "proj", "fc1", "fc2")
LORA_LEARNERS = ("lorac", "finetune")   # both need model kind 'vit'


@dataclass
class LoraConfig:
    rank: int = ranged(4, ge=1)                    # the rank of every LoRA adapter
    alpha: Optional[float] = ranged(None, gt=0)     # null: = rank
    matrices: list[str] = field(default_factory=lambda: list(LORA_MATRICES))   # which weights of every block get adapters
    ortho_weight: float = ranged(0.1, ge=0)        # 0: no orthogonality term
    ipc_fraction: float = ranged(0.1, ge=0, lt=1)  # share of pairs; 0: no IPC
    ipc_beta: float = ranged(0.85, ge=0, lt=1)     # EMA factor
    omega_init: float = ranged(1.0, ge=0)          # initial weight of each past adapter in the composition
    omega_lr_scale: float = ranged(10.0, gt=0)     # the omegas' learning rate, as a multiple of train.lr
    shared: bool = False                           # one adapter trained on and on (an ablation)
    train_head: bool = True                        # train the classifier head with the adapters

    def check(self, loader: Loader, path: str):
        bad = [m for m in self.matrices if m not in LORA_MATRICES]
        if bad or not self.matrices or len(set(self.matrices)) != len(self.matrices):
            raise loader.error(f"{path}.matrices", "a non-empty list of distinct names from "
                               + ", ".join(LORA_MATRICES), self.matrices)


@dataclass
class PretrainConfig:
    classes: Optional[list[int]] = None              # classes to pre-train on (null: those not in scenario.classes)
    epochs: Optional[int] = ranged(None, ge=1)       # null: the train section's
    batch_size: Optional[int] = ranged(None, ge=1)   # null: the train section's
    lr: Optional[float] = ranged(None, gt=0)         # null: the train section's
    optimizer: Optional[Literal["sgd", "adam"]] = None   # null: the train section's
    weight_decay: Optional[float] = ranged(None, ge=0)   # null: the train section's
    out: Optional[str] = user_path()                 # the state-dict file written (null: model.pretrained)

    def check(self, loader: Loader, path: str):
        if self.classes is not None and (not self.classes or min(self.classes) < 0
                                         or len(set(self.classes)) != len(self.classes)):
            raise loader.error(f"{path}.classes", "a non-empty list of distinct class labels >= 0 or "
                               "null (every class not in scenario.classes)", self.classes)


def check_lora_job(job, source: str) -> None:
    """Cross-section rules: the LoRA learners need a ViT; pre-training and continual classes
    are disjoint."""
    if job.learner.kind in LORA_LEARNERS and job.model.kind != "vit":
        raise ConfigError(f"{source}: key 'model.kind': learner '{job.learner.kind}' fine-tunes a "
                          f"pre-trained ViT; expected 'vit', found {job.model.kind!r}.")
    scen = getattr(job.scenario, "classes", None)
    if job.pretrain.classes is not None and scen is not None:
        common = sorted(set(job.pretrain.classes) & set(scen))
        if common:
            raise ConfigError(f"{source}: key 'pretrain.classes': expected classes disjoint from "
                              f"scenario.classes, found {common} in both.")


def require_pretrain_subset(job, source: str) -> None:
    if job.pretrain.classes is None and getattr(job.scenario, "classes", None) is None:
        raise ConfigError(f"{source}: hpccl pretrain needs classes disjoint from the continual phase: "
                          "set 'pretrain.classes' or 'scenario.classes' (the rest are pre-trained on).")


def pretrain_classes(job, num_classes: int, source: str) -> list[int]:
    """The classes ``hpccl pretrain`` trains on."""
    require_pretrain_subset(job, source)
    if job.pretrain.classes is not None:
        classes = list(job.pretrain.classes)
    else:
        classes = [c for c in range(num_classes) if c not in set(job.scenario.classes)]
    if not classes or max(classes) >= num_classes:
        raise ConfigError(f"{source}: key 'pretrain.classes': expected labels in 0..{num_classes - 1} "
                          f"(and at least one), found {classes}.")
    return classes


def check_pretrained_file(job, source: str) -> None:
    """Fail before any rank starts when ``model.pretrained`` names no file, or one that is not
    a torch.save archive (a truncated copy, text): the ranks failed on it after launch, exit 1."""
    path = job.model.options.get("pretrained") if job.model.kind == "vit" else None
    if isinstance(path, str) and not os.path.isfile(path):
        raise HpcclError(f"{source}: key 'model.pretrained': the file {path!r} does not exist. HINT: "
                         f"create it with 'hpccl pretrain {source}' (it writes model.pretrained unless "
                         "pretrain.out or --out says otherwise), or give a plain ViT state-dict file.")
    if isinstance(path, str):
        problem = _torch_archive_problem(path)
        if problem:
            raise HpcclError(f"{source}: key 'model.pretrained': expected a state-dict file written by "
                             f"torch.save (as 'hpccl pretrain' writes it), found that {path!r} {problem}. "
                             f"HINT: write it again with 'hpccl pretrain {source}'.")


def _torch_archive_problem(path: str) -> str | None:
    """What keeps ``path`` from being a torch.save zip archive, from its directory and the CRC of
    its pickle (no tensor is read), or None."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if not pickles:
                return "is a zip archive without torch.save's data.pkl"
            z.read(pickles[0])
    except zipfile.BadZipFile as e:
        return f"is not a zip archive ({e}; {os.path.getsize(path)} bytes: truncated or another kind of file)"
    except (OSError, EOFError, ValueError) as e:
        return f"cannot be read ({e})"
    return None
