"""From samples as the dataset stores them to the model's input on its device.

Samples stay in the dataset's dtype on the host (uint8 images: a quarter of float32's bytes
in host memory, in the rehearsal buffer's slots and over its RMA reads), and become float32
only where the model runs: moved to the device first, then converted (uint8 scaled to
[0, 1]), so the host-to-device copy also moves a quarter of the bytes. There, batch by batch
and for new and rehearsal samples alike:

- ``data.normalize``: per-channel (x - mean) / std with the statistics the converters store
  in the dataset file (root attributes ``mean`` and ``std``, in [0, 1] units);
- ``data.augment`` (training batches only), per sample, seeded by (job seed, rank, task,
  epoch, iteration) so a resumed run draws the same augmentations:
  ``cifar``: random crop of the stored size from the image zero-padded by 4, and a
  horizontal flip with probability 1/2;
  ``imagenet``: a random-resized crop (area 8-100 % of the image, aspect ratio 3/4-4/3,
  bilinear) to ``data.crop`` pixels, and a flip; evaluation takes the centre crop.

A batch moves in two steps, ``start`` (host side: on CUDA, a copy into a pinned staging
buffer, then the host-to-device copy queued on a side stream) and ``finish`` (the compute
stream waits for that copy, then the batch is converted and augmented). The training loop
starts the next batch right after queueing the current step, so the host work and the copy
overlap the step's compute. A copy from pageable memory, as ``non_blocking=True`` on an
ordinary tensor is, would be synchronous and overlap nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "cifar", "imagenet")
CIFAR_PAD = 4


class HostToDevice:
    """Host tensors to the device. On CUDA through pinned staging buffers (``depth`` per dtype
    and sample shape, reused round robin, grown to the largest batch) and a side stream;
    elsewhere a plain move."""

    def __init__(self, device, depth: int = 2):
        self.device = torch.device(device)
        self.depth = depth
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._rings: dict[tuple, list] = {}      # (dtype, sample shape) -> [[pinned, event], ...]
        self._turn: dict[tuple, int] = {}

    def start(self, x: torch.Tensor):
        """Begin moving ``x``; the handle goes to ``finish``."""
        if not self.cuda or x.device.type != "cpu":
            return x.to(self.device), None
        key = (x.dtype, tuple(x.shape[1:]))
        ring = self._rings.setdefault(key, [[None, None] for _ in range(self.depth)])
        turn = self._turn.get(key, 0)
        self._turn[key] = (turn + 1) % self.depth
        slot = ring[turn]
        if slot[1] is not None:
            slot[1].synchronize()        # the copy that last read this buffer is done
        if slot[0] is None or len(slot[0]) < len(x):
            slot[0] = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        staged = slot[0][:len(x)]
        staged.copy_(x)
        with torch.cuda.stream(self.stream):
            moved = staged.to(self.device, non_blocking=True)
            slot[1] = torch.cuda.Event()
            slot[1].record(self.stream)
        return moved, slot[1]

    def finish(self, handle) -> torch.Tensor:
        moved, copied = handle
        if copied is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(copied)
            moved.record_stream(current)    # allocated on the side stream, used on this one
        return moved


class InputPipeline:
    def __init__(self, device, augment: str = "none", crop: int | None = None, mean=None, std=None,
                 seed: int = 0, rank: int = 0):
        self.device = torch.device(device)
        self.h2d = HostToDevice(self.device)
        self.augment, self.crop, self.seed, self.rank = augment, crop, seed, rank
        shape = (1, -1, 1, 1)
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32, device=self.device).view(shape)

    def output_shape(self, sample_shape: tuple) -> tuple:
        """The shape the model sees for stored samples of ``sample_shape``."""
        if self.augment == "imagenet" and self.crop:
            return (sample_shape[0], self.crop, self.crop)
        return tuple(sample_shape)

    def __call__(self, x: torch.Tensor, key: tuple | None = None) -> torch.Tensor:
        """``key`` (task, epoch, iteration): a training batch, augmented with a generator seeded
        by it; None: an evaluation batch."""
        return self.finish(self.start(x), key)

    def start(self, x: torch.Tensor):
        return self.h2d.start(x)

    def finish(self, handle, key: tuple | None = None) -> torch.Tensor:
        x = self.h2d.finish(handle)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        elif x.dtype != torch.float32:
            x = x.to(torch.float32)
        if x.dim() == 4:
            if self.mean is not None:
                x = (x - self.mean) / self.std
            if self.augment == "cifar" and key is not None:
                x = cifar_augment(x, self._generator(key))
            elif self.augment == "imagenet":
                x = (resized_crop_flip(x, self.crop, self._generator(key)) if key is not None
                     else center_crop(x, self.crop))
            if self.device.type == "cuda":      # what channels_last models take
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _generator(self, key) -> torch.Generator:
        from hpccl.core.seeding import derive_seed
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.seed, "augment", self.rank, *key) % (1 << 63))
        return gen


def cifar_augment(x: torch.Tensor, gen: torch.Generator, pad: int = CIFAR_PAD) -> torch.Tensor:
    """Per sample: a crop of x's size at a random offset of the zero-padded image, then a
    horizontal flip with probability 1/2 (one gather for the whole batch)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    flip = torch.rand(n, generator=gen, device=x.device) < 0.5
    rows = dy[:, None] + torch.arange(h, device=x.device)                       # [n, h]
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]         # [n, w]
    b = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[b, ch, rows[:, None, :, None], cols[:, None, None, :]]


def resized_crop_flip(x: torch.Tensor, size: int, gen: torch.Generator, scale=(0.08, 1.0),
                      ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Per sample: a box of random area share in ``scale`` and aspect ratio in ``ratio`` (log
    uniform), clipped to the image, resized to ``size`` x ``size`` (bilinear), flipped with
    probability 1/2; one affine grid sample for the whole batch."""
    n, _, h, w = x.shape
    area = torch.empty(n, device=x.device).uniform_(*scale, generator=gen)
    log_r = torch.empty(n, device=x.device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    aspect = torch.exp(log_r)
    bw = torch.sqrt(area * aspect).clamp(max=1.0)      # box width and height, as shares of the image
    bh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * (1 - bw)   # box centre in [-1, 1]
    cy = (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * (1 - bh)
    flip = torch.where(torch.rand(n, generator=gen, device=x.device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = bw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = bh, cy
    grid = F.affine_grid(theta, (n, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def pipeline_for(data_cfg, info, device, seed: int, rank: int, source: str = "job") -> InputPipeline:
    """The pipeline a job's ``data`` section asks for, on a dataset with ``info``."""
    from hpccl.core.errors import ConfigError
    stats = info.mean is not None and info.std is not None
    normalize = stats if data_cfg.normalize == "auto" else data_cfg.normalize
    if normalize and not stats:
        raise ConfigError(f"{source}: key 'data.normalize': true needs the per-channel mean and std in "
                          f"the dataset file {info.path!r}, which has none. HINT: convert it again with "
                          "'hpccl data convert' (uint8 image converters store them), or set 'normalize: auto'.")
    image = len(info.sample_shape) == 3
    if data_cfg.augment != "none" and not image:
        raise ConfigError(f"{source}: key 'data.augment': {data_cfg.augment!r} augments images [C, H, W], "
                          f"but {info.path!r} holds vectors of shape {info.sample_shape}. HINT: 'augment: none'.")
    crop = data_cfg.crop
    if data_cfg.augment == "imagenet":
        side = min(info.sample_shape[1:])
        crop = crop or side
        if crop > side:
            raise ConfigError(f"{source}: key 'data.crop': expected at most the stored image side "
                              f"{side} of {info.path!r}, found {crop}.")
    return InputPipeline(device, data_cfg.augment, crop, info.mean if normalize else None,
                         info.std if normalize else None, seed, rank)
