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
from hpccl.seeding import derive_seed, torch_generator

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
    if s.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer {s.optimizer!r} (sgd | adam)")


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
            samples += len(idx)
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


# -- mixture of experts -------------------------------------------------------------------------

class MoELayer(nn.Module):
    """``out = sum_e softmax(gate(x))_e * (W_e x + b_e)``: a dense (soft) mixture of affine
    experts, so that every expert gets a gradient and splitting is exact."""

    def __init__(self, d_in: int, d_out: int, num_experts: int = 1):
        super().__init__()
        self.gate = nn.Linear(d_in, num_experts)
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(num_experts, d_out, d_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_experts, d_out).uniform_(-bound, bound))
        self.record = False
        self.usage_sum: Optional[torch.Tensor] = None
        self.usage_count = 0

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    def forward(self, x):
        probs = torch.softmax(self.gate(x), dim=1)                                # [B, E]
        experts = torch.einsum("bi,eoi->beo", x, self.weight) + self.bias         # [B, E, O]
        if self.record:
            self.usage_sum = probs.detach().sum(0) + (0 if self.usage_sum is None else self.usage_sum)
            self.usage_count += len(x)
        return (probs.unsqueeze(-1) * experts).sum(1)

    @torch.no_grad()
    def split(self, e: int, noise: float = 1e-3, generator: Optional[torch.Generator] = None):
        """Split expert ``e`` in two without changing the layer's function.

        The copy gets expert e's gate row, and both gate biases get ``+ log(1/2)``: the
        softmax then gives each copy exactly half of e's old probability, since
        ``exp(z_e + log 1/2) * 2 = exp(z_e)`` leaves every other probability unchanged too.
        Two identical copies would receive identical gradients forever; to break the tie the
        copies' weights are perturbed in opposite directions, ``W_e + d`` and ``W_e - d``
        (``d`` ~ ``noise`` x mean |W_e| x N(0, 1)). Because the experts are affine and the two
        share one probability ``p/2``, ``p/2 (W + d) x + p/2 (W - d) x = p W x``: the output is
        unchanged (up to rounding), while the gate rows of the copies now get different
        gradients (their experts' outputs differ) and the copies drift apart as training goes on.
        """
        w, b = self.weight.data, self.bias.data
        d = torch.randn(w[e].shape, generator=generator, dtype=w.dtype) * noise * w[e].abs().mean()
        new_w = torch.cat([w, w[e:e + 1]])
        new_w[e] += d
        new_w[-1] -= d
        self.weight = nn.Parameter(new_w)
        self.bias = nn.Parameter(torch.cat([b, b[e:e + 1]]))
        gw, gb = self.gate.weight.data, self.gate.bias.data
        gate = nn.Linear(self.gate.in_features, self.num_experts)
        gate.weight.data.copy_(torch.cat([gw, gw[e:e + 1]]))
        new_gb = torch.cat([gb, gb[e:e + 1]])
        new_gb[e] += math.log(0.5)
        new_gb[-1] += math.log(0.5)
        gate.bias.data.copy_(new_gb)
        self.gate = gate


class MoENet(nn.Module):
    """Flatten -> [MoELayer -> ReLU] x num_layers -> Linear head."""

    def __init__(self, input_shape, num_classes: int, hidden: int = 64, num_layers: int = 2, num_experts: int = 1):
        super().__init__()
        width = math.prod(input_shape)
        self.moe = nn.ModuleList()
        for _ in range(num_layers):
            self.moe.append(MoELayer(width, hidden, num_experts))
            width = hidden
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.moe:
            h = torch.relu(layer(h))
        return self.head(h)

    @torch.no_grad()
    def gate_usage(self, x, allreduce_mean: Optional[AllreduceMean] = None, batch_size: int = 4096) -> list:
        """Mean gate probability of each expert, per layer, over x (and over ranks)."""
        was = self.training
        self.eval()
        for layer in self.moe:
            layer.record, layer.usage_sum, layer.usage_count = True, None, 0
        try:
            for i in range(0, len(x), batch_size):
                self(x[i:i + batch_size])
        finally:
            for layer in self.moe:
                layer.record = False
            self.train(was)
        usage = []
        for layer in self.moe:
            sums = layer.usage_sum if layer.usage_sum is not None else torch.zeros(layer.num_experts)
            stats = torch.cat([sums, torch.tensor([float(layer.usage_count)])])
            if allreduce_mean is not None:
                stats = allreduce_mean([stats])[0]
            usage.append(stats[:-1] / stats[-1].clamp_min(1e-12))
        return usage


# -- learners -----------------------------------------------------------------------------------

ALMA_LEARNERS: dict[str, type] = {}


def _register(name):
    def deco(cls):
        ALMA_LEARNERS[name] = cls
        cls.kind = name
        return cls
    return deco


class AlmaLearner:
    """Common interface: ``update(x_train, y_train, x_val, y_val, index)`` after an update is
    scheduled (this rank's shards), ``predict(x)`` -> logits, ``models()`` (for the size),
    ``flops.total`` (this rank's training FLOPs so far)."""
    kind = "?"

    def __init__(self, make_model: Callable[[], nn.Module], settings: TrainSettings = None,
                 allreduce_mean: Optional[AllreduceMean] = None, world_size: int = 1, rank: int = 0):
        self.make_model, self.settings = make_model, settings or TrainSettings()
        self.allreduce_mean, self.world_size, self.rank = allreduce_mean, world_size, rank
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
        return sum(p.numel() for m in self.models() for p in m.parameters())

    @torch.no_grad()
    def predict(self, x):
        raise NotImplementedError


@_register("single")
class SingleModel(AlmaLearner):
    def __init__(self, make_model, settings=None, mode: str = "finetune", **kw):
        super().__init__(make_model, settings, **kw)
        if mode not in ("finetune", "reinit"):
            raise ValueError(f"mode must be 'finetune' or 'reinit', got {mode!r}")
        self.mode = mode
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


@_register("growing_ensemble")
class GrowingEnsemble(AlmaLearner):
    def __init__(self, make_model, settings=None, init: str = "fresh", **kw):
        super().__init__(make_model, settings, **kw)
        if init not in ("copy", "fresh"):
            raise ValueError(f"init must be 'copy' or 'fresh', got {init!r}")
        self.init = init
        self.members: list[nn.Module] = []
        self._untrained = self.new_model("member", 0)   # what answers before the first update

    def update(self, x_train, y_train, x_val, y_val, index):
        if not self.members:
            member = self._untrained
        elif self.init == "copy":
            member = copy.deepcopy(self.members[-1])
        else:
            member = self.new_model("member", index)
        out = self._train(member, x_train, y_train, x_val, y_val, ("member", index))
        self.members.append(member)
        self.history.append(out)
        return out

    def models(self):
        return self.members or [self._untrained]

    @torch.no_grad()
    def predict(self, x):
        members = self.models()
        for m in members:
            m.eval()
        return ensemble_logits(members, x)


@_register("fixed_ensemble")
class FixedEnsemble(AlmaLearner):
    def __init__(self, make_model, settings=None, size: int = 3, train: str = "all", **kw):
        super().__init__(make_model, settings, **kw)
        if size < 1 or train not in ("all", "round_robin"):
            raise ValueError(f"need size >= 1 and train in (all, round_robin); got {size}, {train!r}")
        self.train_mode = train
        self.members = [self.new_model("member", i) for i in range(size)]

    def update(self, x_train, y_train, x_val, y_val, index):
        which = (range(len(self.members)) if self.train_mode == "all" else [index % len(self.members)])
        outs = [self._train(self.members[i], x_train, y_train, x_val, y_val, ("member", i, index)) for i in which]
        out = {"members": list(which), "val_accuracy": [o["val_accuracy"] for o in outs],
               "samples": sum(o["samples"] for o in outs), "epochs": [o["epochs"] for o in outs]}
        self.history.append(out)
        return out

    def models(self):
        return self.members

    @torch.no_grad()
    def predict(self, x):
        for m in self.members:
            m.eval()
        return ensemble_logits(self.members, x)


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
