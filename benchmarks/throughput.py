"""Training throughput of hpccl's step against a plain PyTorch loop, in the same run.

    python benchmarks/throughput.py                      # CPU-sized defaults
    python benchmarks/throughput.py --device cuda --preset gpu
    python benchmarks/throughput.py --smoke              # seconds: 8 samples of 16x16, b = 4, r = 2

For each model, samples/s of:
  plain      a plain PyTorch loop: uint8 batch -> device -> float / 255 -> forward, backward,
             SGD step (the baseline; the same model, initial weights, batches and precision);
  hpccl      ``learners/loop.fit`` on one rank: its data path (InputPipeline), timers,
             gradient backend (``mpi``: no collective on one rank) and epoch-end checks;
  rehearsal  the same with the rehearsal buffer: b new samples + r drawn from the buffer
             per step, the buffer kept uint8 (the samples' dtype).
Ratios are to ``plain``. The goals are hpccl >= 0.95 and rehearsal >= 0.95 x b / (b + r)
(a rehearsal step trains b + r samples and counts b). Synthetic uint8 images; each variant
runs ``--repeats`` times, interleaved with the others, and its best epoch counts (shared
machines are noisy). Prints one table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PRESETS = {   # model, image side, samples per epoch
    "smoke": [("resnet18", 16, 8), ("resnet50", 16, 8)],       # --smoke: the test suite
    "tiny": [("resnet18", 32, 112), ("resnet50", 32, 56)],     # does it run (seconds)
    "cpu": [("resnet18", 32, 448), ("resnet50", 64, 112)],
    "gpu": [("resnet18", 32, 14336), ("resnet50", 224, 3584)],
}


def _plain_epoch(model, opt, x, y, b, device, dtype, scaler):
    import torch
    import torch.nn.functional as F
    model.train()
    for i in range(0, len(x) - b + 1, b):
        xb = x[i:i + b].to(device, non_blocking=True).float().div_(255)
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        yb = y[i:i + b].to(device, non_blocking=True)
        opt.zero_grad()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(xb), yb)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch", type=int, default=56, help="b, new samples per step")
    p.add_argument("--reps", type=int, default=7, help="r, representatives per step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--smoke", action="store_true", help="seconds: preset smoke (8 samples of 16x16), b = 4, "
                   "r = 2, 1 repeat, 1 thread (the test suite: every variant, the same table)")
    args = p.parse_args()
    if args.smoke:
        args.preset, args.batch, args.reps, args.repeats = "smoke", 4, 2, 1

    import numpy as np
    import torch

    from hpccl.config import RehearsalConfig, RuntimeConfig, TrainConfig
    from hpccl.continual.learners.loop import LoopContext, fit, make_optimizer
    from hpccl.continual.rehearsal.buffer import RehearsalBuffer
    from hpccl.core.progress import Progress
    from hpccl.core.runtime import init_world, shutdown_world
    from hpccl.core.timers import IterationTimers
    from hpccl.models import build_model, place_model

    # smoke: one thread, since on a busy shared machine a second one spinning in OpenMP's barrier costs minutes
    world = init_world(RuntimeConfig(backend="mpi", device=args.device, threads_per_rank=1 if args.smoke else None))
    device, b = world.device, args.batch
    train = TrainConfig(epochs=1, batch_size=b, lr=0.01, momentum=0.9, precision=args.precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    rows = []
    for kind, side, n in PRESETS[args.preset]:
        n = max(b, n // b * b)
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.integers(0, 256, size=(n, 3, side, side), dtype=np.uint8))
        y = torch.from_numpy(rng.integers(0, args.classes, size=n))
        shape = (3, side, side)

        def fresh():
            torch.manual_seed(0)
            return place_model(build_model(kind, shape, args.classes), device)

        plain_model = fresh()
        plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16" else None
        timers = IterationTimers(device)
        ctx = LoopContext(world=world, train=train, seed=0, timers=timers,
                          progress=Progress("off", enabled=False))
        hp_model = fresh()
        hp_opt = make_optimizer(hp_model, train, world)
        reh_model = fresh()
        reh_opt = make_optimizer(reh_model, train, world)
        reh_cfg = RehearsalConfig(representatives=args.reps, candidates=min(14, b), async_updates=True,
                                  start_task=0, buffer_ratio=0.1)     # representatives from the first task on
        buffer = RehearsalBuffer(world, reh_cfg, args.classes, shape, n, 0, dtype="uint8")
        buffer.begin_task(0)
        variants = {
            "plain": lambda: _plain_epoch(plain_model, plain_opt, x, y, b, device, dtype, scaler),
            "hpccl": lambda: fit(hp_model, hp_opt, x, y, n, ctx, 0, 1),
            "rehearsal": lambda: fit(reh_model, reh_opt, x, y, n, ctx, 0, 1, rehearsal=buffer),
        }
        best = {name: float("inf") for name in variants}
        for run in variants.values():    # warm-up: allocator, cudnn, the buffer's first samples
            run()
        for _ in range(args.repeats):
            for name, run in variants.items():
                t0 = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - t0)
        buffer.close()
        rate = {name: n / t for name, t in best.items()}
        rows.append((f"{kind} {side}x{side}", rate))

    if world.is_root:
        target = 0.95 * b / (b + args.reps)
        print(f"training throughput, samples/s (new samples), b = {b}, r = {args.reps}, device "
              f"{device}, {args.precision}, best of {args.repeats} epochs; goals: hpccl >= 0.95, rehearsal "
              f">= {target:.3f} x plain")
        print(f"{'model':<20}{'plain':>10}{'hpccl':>10}{'ratio':>8}{'rehearsal':>11}{'ratio':>8}")
        for name, rate in rows:
            print(f"{name:<20}{rate['plain']:10.1f}{rate['hpccl']:10.1f}{rate['hpccl'] / rate['plain']:8.3f}"
                  f"{rate['rehearsal']:11.1f}{rate['rehearsal'] / rate['plain']:8.3f}")
        if args.json:
            import json
            with open(args.json, "w") as f:
                json.dump({"device": str(device), "precision": args.precision, "b": b, "r": args.reps, "target_rehearsal": target,
                           "rows": [{"model": name, **rate} for name, rate in rows]}, f, indent=2)
    shutdown_world(world)


if __name__ == "__main__":
    main()
