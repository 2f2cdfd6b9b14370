"""ALMA learners: what to do with the data of each update.

All learners share one training routine, ``train_early_stopping``: the update's data comes
with a held-out validation share (``Update.split``); the model trains for at most
``max_epochs`` epochs, its validation accuracy is measured after every epoch, training stops
after ``patience`` epochs without a strict improvement, and the best epoch's weights are
restored (a copy of the state dict, taken whenever validation accuracy improves). A fresh
optimizer is made for each update (no momentum is carried between updates).

Data parallelism without MPI in the core: pass ``allreduce_mean(list_of_tensors) ->
list_of_tensors`` (the mean over ranks of each tensor) and ``world_size``. Then gradients are
averaged before every step, the number of steps per epoch is computed from the global
training size (the same on every rank, as collectives require), and validation accuracy and
gate usage are reduced over ranks. Replicas stay identical because every model is built
from a seed derived from (seed, purpose) only, the same on every rank.

Learners (``ALMA_LEARNERS``):

* ``single``: one model; ``mode="finetune"`` keeps training it at every update,
  ``mode="reinit"`` starts from a fresh initialisation at every update.
* ``growing_ensemble``: a new member per update (``init="copy"``: a copy of the last member,
  ``"fresh"``: a new initialisation); only the new member trains. Prediction: mean of the
  members' logits.
* ``fixed_ensemble``: ``size`` members from the start; each update fine-tunes all of them
  (``train="all"``) or one in turn (``"round_robin"``: member ``update % size``).
* ``growing_moe``: one ``MoENet`` fine-tuned at every update; after every ``split_every``-th
  update the most used expert of each layer (mean gate probability on the validation data)
  is split in two without changing the network's function (see ``MoELayer.split``).
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from hpccl.alma.metrics import FlopMeter
from hpccl.core.errors import HpcclError
from hpccl.core.training import parameters_finite
from hpccl.models.moe import MoELayer, MoENet
from hpccl.core.optim import make_local_optimizer
from hpccl.core.seeding import derive_seed, torch_generator

# MoELayer and MoENet are re-exported: the MoE learner's building blocks, importable with it.
__all__ = ["ALMA_LEARNERS", "AlmaLearner", "AllreduceMean", "FixedEnsemble", "GrowingEnsemble", "GrowingMoE",
           "MoELayer", "MoENet", "Placement", "SingleModel", "TrainSettings", "ensemble_logits",
           "make_alma_learner", "train_early_stopping"]

# Serialises seeded model construction (see Learner.new_model); torch's RNG is process-wide.
_GLOBAL_RNG_LOCK = threading.Lock()

AllreduceMean = Callable[[list], list]


@dataclass
class TrainSettings:
    lr: float = 0.05
    batch_size: int = 32
    max_epochs: int = 20
    patience: int = 3
    optimizer: str = "sgd"      # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0


def _make_optimizer(model: nn.Module, s: TrainSettings):
    return make_local_optimizer(model.parameters(), s.optimizer, s.lr, s.momentum, s.weight_decay)


def _global_count(n: int, allreduce_mean: Optional[AllreduceMean], world_size: int) -> int:
    if allreduce_mean is None:
        return n
    return int(round(float(allreduce_mean([torch.tensor([float(n)])])[0].item()) * world_size))


@torch.no_grad()
def _accuracy(model, x, y, allreduce_mean, batch_size=4096) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    counts = torch.tensor([float(correct), float(len(y))])
    if allreduce_mean is not None:
        counts = allreduce_mean([counts])[0]   # mean of both: their ratio is the global accuracy
    return float(counts[0] / counts[1]) if counts[1] > 0 else 0.0


def _stop_if_diverged(model, nonfinite, allreduce_mean, purpose, epoch) -> None:
    """Early stopping would keep the 'best' of diverged states and report chance accuracy as
    a result; a non-finite loss or weights end the job instead (the flag is averaged over the
    model's rank group, so its ranks agree; the raise aborts the whole job)."""
    bad = (nonfinite + (0.0 if parameters_finite(model) else 1.0)).float().reshape(1)
    if allreduce_mean is not None:
        bad = allreduce_mean([bad])[0]
    if float(bad.sum()) > 0:
        raise HpcclError(f"training diverged: non-finite loss or weights while training "
                         f"{' '.join(map(str, purpose)) or 'the model'}, epoch {epoch + 1}. HINT: "
                         "lower train.lr, and check the data with 'hpccl validate'.")


def train_early_stopping(model: nn.Module, x_train, y_train, x_val, y_val, settings: TrainSettings,
                         purpose=(), flops: Optional[FlopMeter] = None, allreduce_mean: Optional[AllreduceMean] = None,
                         world_size: int = 1, rank: int = 0) -> dict:
    """Train ``model`` in place on this rank's (x_train, y_train) with early stopping on
    (x_val, y_val); returns a summary. FLOPs: the first step is run under FlopCounterMode and
    its per-sample count times every sample processed is added to ``flops``."""
    from torch.utils.flop_counter import FlopCounterMode
    s = settings
    n_global = _global_count(len(x_train), allreduce_mean, world_size)
    iters = max(1, math.ceil(n_global / (world_size * s.batch_size)))
    gen = torch_generator(s.seed, "alma_batches", rank, *purpose)
    opt = _make_optimizer(model, s)
    best_acc, best_epoch, best_state, epochs_run, samples = -1.0, -1, None, 0, 0
    per_sample = None
    for epoch in range(s.max_epochs):
        model.train()
        n = len(x_train)
        reps = math.ceil(iters * s.batch_size / n) if n else 0
        order = (torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:iters * s.batch_size]
                 if n else torch.empty(0, dtype=torch.long))
        nonfinite = torch.zeros((), device=x_train.device)
        for it in range(iters):
            idx = order[it * s.batch_size:(it + 1) * s.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            opt.zero_grad(set_to_none=False)
            if per_sample is None and len(idx):
                with FlopCounterMode(display=False) as fc:
                    loss = F.cross_entropy(model(xb), yb)
                    loss.backward()
                per_sample = fc.get_total_flops() / len(idx)
            elif len(idx):
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
            if allreduce_mean is not None:
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
                for p, g in zip(model.parameters(), allreduce_mean(grads)):
                    p.grad = g.reshape(p.shape).to(p.dtype)
            opt.step()
            if len(idx):
                nonfinite += ~torch.isfinite(loss.detach())    # no sync per step
            samples += len(idx)
        _stop_if_diverged(model, nonfinite, allreduce_mean, purpose, epoch)
        epochs_run = epoch + 1
        acc = _accuracy(model, x_val, y_val, allreduce_mean)
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= s.patience:
            break
    model.load_state_dict(best_state)
    if flops is not None and per_sample is not None:
        flops.add(per_sample, samples)
    return {"epochs": epochs_run, "best_epoch": best_epoch, "val_accuracy": best_acc, "samples": samples,
            "flops_per_sample": per_sample or 0.0}


# -- learners -----------------------------------------------------------------------------------

ALMA_LEARNERS: dict[str, type] = {}


def _register(name):
    def deco(cls):
        ALMA_LEARNERS[name] = cls
        cls.kind = name
        return cls
    return deco


def _one_of(option: str, value, allowed: tuple):
    """``value``, when it is one of ``allowed``; a ValueError naming ``option`` otherwise."""
    if value not in allowed:
        raise ValueError(f"{option} must be {' or '.join(map(repr, allowed))}, got {value!r}")
    return value


@dataclass
class Placement:
    """Where an ensemble's members live when the ranks are split into ``num_groups`` equal
    groups: member i belongs to group ``i % num_groups`` and is trained data-parallel by that
    group alone (its ``allreduce_mean``), so members train side by side instead of one after
    the other. ``cross_sum(tensors)`` sums over the groups (between the ranks that hold the
    same share of the data in every group); ``cross_bcast(obj, group)`` sends a Python object
    from that group to all. One group (the default) holds every member."""
    group: int = 0
    num_groups: int = 1
    cross_sum: Callable[[list], list] = lambda tensors: tensors
    cross_bcast: Callable = lambda obj, root: obj

    def owns(self, member: int) -> bool:
        return member % self.num_groups == self.group


class AlmaLearner:
    """Common interface: ``update(x_train, y_train, x_val, y_val, index)`` after an update is
    scheduled (this rank's shards), ``predict(x)`` -> logits, ``models()`` (this rank's
    members, for the size), ``num_parameters()`` (the whole learner's, over all groups; a
    collective when there are several), ``flops.total`` (this rank's training FLOPs so far)."""
    kind = "?"

    def __init__(self, make_model: Callable[[], nn.Module], settings: TrainSettings = None,
                 allreduce_mean: Optional[AllreduceMean] = None, world_size: int = 1, rank: int = 0,
                 placement: Optional[Placement] = None):
        self.make_model, self.settings = make_model, settings or TrainSettings()
        self.allreduce_mean, self.world_size, self.rank = allreduce_mean, world_size, rank
        self.placement = placement or Placement()
        self.flops = FlopMeter()
        self.history: list[dict] = []

    def new_model(self, *purpose) -> nn.Module:
        """A fresh model from a seed of (seed, purpose): the same on every rank.

        torch's layer initialisers draw from the process-global RNG, so seeding and building
        must happen as one step: two learners building models in two threads (e.g. ranks
        simulated by threads) would otherwise interleave their draws."""
        with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.settings.seed, "alma_model", *purpose))
            return self.make_model()

    def _train(self, model, x_train, y_train, x_val, y_val, purpose) -> dict:
        return train_early_stopping(model, x_train, y_train, x_val, y_val, self.settings, purpose=purpose,
                                    flops=self.flops, allreduce_mean=self.allreduce_mean,
                                    world_size=self.world_size, rank=self.rank)

    def update(self, x_train, y_train, x_val, y_val, index: int) -> dict:
        raise NotImplementedError

    def models(self) -> list:
        raise NotImplementedError

    def num_parameters(self) -> int:
        mine = sum(p.numel() for m in self.models() for p in m.parameters())
        if self.placement.num_groups == 1:
            return mine
        return int(self.placement.cross_sum([torch.tensor([float(mine)], dtype=torch.float64)])[0].item())

    @torch.no_grad()
    def predict(self, x):
        raise NotImplementedError


@_register("single")
class SingleModel(AlmaLearner):
    def __init__(self, make_model, settings=None, mode: str = "finetune", **kw):
        super().__init__(make_model, settings, **kw)
        self.mode = _one_of("mode", mode, ("finetune", "reinit"))
        self.model = self.new_model("single", 0)

    def update(self, x_train, y_train, x_val, y_val, index):
        if self.mode == "reinit" and index > 0:
            self.model = self.new_model("single", index)
        out = self._train(self.model, x_train, y_train, x_val, y_val, ("single", index))
        self.history.append(out)
        return out

    def models(self):
        return [self.model]

    @torch.no_grad()
    def predict(self, x):
        self.model.eval()
        return self.model(x)


def ensemble_logits(members, x):
    """Mean of the members' logits."""
    return torch.stack([m(x) for m in members]).mean(0)


class _Ensemble(AlmaLearner):
    """Members placed on rank groups (``Placement``); prediction is the mean of all members'
    logits, summed across groups when there are several."""

    @torch.no_grad()
    def predict(self, x):
        members = self.models()
        for m in members:
            m.eval()
        if self.placement.num_groups == 1:
            return ensemble_logits(members, x)
        total = torch.zeros(len(x), self.num_outputs, dtype=x.dtype, device=x.device)
        for m in members:
            total += m(x)
        total, count = self.placement.cross_sum([total, torch.tensor([float(len(members))])])
        return total / float(count.item())


@_register("growing_ensemble")
class GrowingEnsemble(_Ensemble):
    def __init__(self, make_model, settings=None, init: str = "fresh", **kw):
        super().__init__(make_model, settings, **kw)
        self.init = _one_of("init", init, ("copy", "fresh"))
        self.members: list = []   # None where another rank group holds the member
        self._untrained = self.new_model("member", 0)   # what answers before the first update
        self.num_outputs = _num_outputs(self._untrained)

    def update(self, x_train, y_train, x_val, y_val, index):
        k, place = len(self.members), self.placement
        if self.init == "copy" and self.members:
            prev = self.members[-1]
            if place.num_groups == 1:
                state = prev.state_dict()
            else:   # the previous member lives on group (k - 1) % G
                state = place.cross_bcast(prev.state_dict() if prev is not None else None,
                                          (k - 1) % place.num_groups)
        if not place.owns(k):
            self.members.append(None)
            out = {"member": k, "trained_by_group": k % place.num_groups, "skipped": True}
            self.history.append(out)
            return out
        if not self.members:
            member = self._untrained
        elif self.init == "copy":
            member = self.new_model("member", index)
            member.load_state_dict(state)   # copies the values
        else:
            member = self.new_model("member", index)
        out = self._train(member, x_train, y_train, x_val, y_val, ("member", index))
        out.update(member=k, trained_by_group=place.group)
        self.members.append(member)
        self.history.append(out)
        return out

    def models(self):
        if not self.members:
            return [self._untrained] if self.placement.owns(0) else []
        return [m for m in self.members if m is not None]


@_register("fixed_ensemble")
class FixedEnsemble(_Ensemble):
    def __init__(self, make_model, settings=None, size: int = 3, train: str = "all", **kw):
        super().__init__(make_model, settings, **kw)
        if size < 1 or train not in ("all", "round_robin"):
            raise ValueError(f"need size >= 1 and train in (all, round_robin); got {size}, {train!r}")
        self.train_mode, self.size = train, size
        # Every member is built from its own seed, so a group builds only those it holds.
        self.members = {i: self.new_model("member", i) for i in range(size) if self.placement.owns(i)}
        self.num_outputs = _num_outputs(next(iter(self.members.values()))) if self.members else 0

    def update(self, x_train, y_train, x_val, y_val, index):
        which = range(self.size) if self.train_mode == "all" else [index % self.size]
        mine = [i for i in which if i in self.members]
        outs = [self._train(self.members[i], x_train, y_train, x_val, y_val, ("member", i, index)) for i in mine]
        out = {"members": mine, "val_accuracy": [o["val_accuracy"] for o in outs],
               "samples": sum(o["samples"] for o in outs), "epochs": [o["epochs"] for o in outs]}
        if not mine:
            out["skipped"] = True
        self.history.append(out)
        return out

    def models(self):
        return list(self.members.values())


def _num_outputs(model) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


@_register("growing_moe")
class GrowingMoE(SingleModel):
    """Fine-tunes one ``MoENet``; after every ``split_every``-th update splits the most used
    expert of each layer (gate usage on that update's validation data), up to ``max_experts``
    per layer. The grown network is what the next update trains (with a fresh optimizer)."""

    def __init__(self, make_model, settings=None, split_every: int = 1, max_experts: Optional[int] = None,
                 split_noise: float = 1e-3, **kw):
        super().__init__(make_model, settings, mode="finetune", **kw)
        if not isinstance(self.model, MoENet):
            raise ValueError("growing_moe needs make_model to build an MoENet")
        self.split_every, self.max_experts, self.split_noise = int(split_every), max_experts, split_noise

    def update(self, x_train, y_train, x_val, y_val, index):
        out = super().update(x_train, y_train, x_val, y_val, index)
        out["split"] = []
        if (index + 1) % self.split_every == 0:
            out["split"] = self.grow(x_val, index)
        return out

    def grow(self, x_val, index=0) -> list:
        """Split the most used expert of each layer; returns the split experts (None: full)."""
        usage = self.model.gate_usage(x_val, self.allreduce_mean)
        gen = torch_generator(self.settings.seed, "moe_split", index)   # same on every rank
        split = []
        for layer, u in zip(self.model.moe, usage):
            if self.max_experts is not None and layer.num_experts >= self.max_experts:
                split.append(None)
                continue
            e = int(torch.argmax(u))
            layer.split(e, self.split_noise, generator=gen)
            split.append(e)
        return split


def make_alma_learner(kind: str, make_model: Callable[[], nn.Module], settings: TrainSettings = None,
                      allreduce_mean: Optional[AllreduceMean] = None, world_size: int = 1, rank: int = 0,
                      **options) -> AlmaLearner:
    """The learner ``kind`` of ``ALMA_LEARNERS`` with its ``options`` (e.g. mode, init, size,
    train, split_every, max_experts, split_noise)."""
    try:
        cls = ALMA_LEARNERS[kind]
    except KeyError:
        raise ValueError(f"unknown ALMA learner {kind!r}; known: {', '.join(sorted(ALMA_LEARNERS))}") from None
    return cls(make_model, settings, allreduce_mean=allreduce_mean, world_size=world_size, rank=rank, **options)
