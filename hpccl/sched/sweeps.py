"""Scaling studies: one run per GPU count under one sweep directory, and a manifest.

weak:   every point keeps the job's per-GPU batch (``train.batch_size``); the global batch grows.
strong: every point keeps one global batch (``--global-batch``, default the job's batch times
        the smallest GPU count) and divides it over the GPUs; a point where it does not divide,
        or where the per-GPU batch falls below ``--min-batch-per-gpu``, is refused.

The learning-rate rule is the job's (``train.lr_scaling``, ``lr_scaling_cap``, ``warmup_epochs``);
the multiplier the runner will use at each point is recorded. Every point is planned (layout,
queue, batch) before anything is written: one refused point refuses the sweep, listing every
refused point and why.

manifest.json (schema_version 1), read by the analysis with :func:`load_manifest`::

    {"schema_version": 1, "kind": "scaling_sweep", "mode": "weak", "site": "polaris",
     "job": "<path given>", "name": "quickstart", "created": "...", "dry_run": false,
     "lr_scaling": "linear", "lr_scaling_cap": null, "warmup_epochs": 0, "base_lr": 0.025,
     "points": [{"gpus": 8, "nodes": 2, "ranks_per_node": 4, "batch_per_gpu": 16,
                 "global_batch": 128, "lr_multiplier": 8.0, "lr": 0.2, "queue": "debug",
                 "walltime": "01:00:00", "run_dir": "g0008", "job_id": "123.polaris-pbs"}, ...]}

``run_dir`` is relative to the sweep directory; ``job_id`` is null until submitted.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Optional

from hpccl.core.errors import ConfigError
from hpccl.sched.submit import Prepared, prepare

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def parse_gpus(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; refuses non-integers, values < 1 and repeats."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise ConfigError(f"--gpus {text!r}: expected a GPU count or a comma-separated list of "
                              f"them (e.g. 1,2,4,8), found {part!r}.") from None
        if value < 1:
            raise ConfigError(f"--gpus {text!r}: GPU counts must be >= 1, found {value}.")
        if value in out:
            raise ConfigError(f"--gpus {text!r}: {value} appears twice.")
        out.append(value)
    return out


def point_dir_name(gpus: int) -> str:
    return f"g{gpus:04d}"


@dataclass
class SweepPoint:
    gpus: int
    batch_per_gpu: int
    global_batch: int
    lr_multiplier: float
    lr: float
    prep: Prepared

    def manifest_entry(self, sweep_dir: str, job_id: Optional[str] = None) -> dict:
        plan = self.prep.plan
        return {"gpus": self.gpus, "nodes": plan.nodes, "ranks_per_node": plan.ranks_per_node,
                "batch_per_gpu": self.batch_per_gpu, "global_batch": self.global_batch,
                "lr_multiplier": self.lr_multiplier, "lr": self.lr, "queue": plan.queue,
                "walltime": plan.walltime, "run_dir": os.path.relpath(plan.run_dir, sweep_dir),
                "job_id": job_id}


def batches(mode: str, base_batch: int, gpus: list[int], global_batch: Optional[int],
            min_batch: int) -> tuple[dict, list[str]]:
    """gpus -> (per-GPU batch, global batch), and the reasons of refused points."""
    out, refused = {}, []
    if mode == "weak":
        if global_batch is not None:
            raise ConfigError("--global-batch is for --scaling strong (weak scaling keeps the "
                              "per-GPU batch, train.batch_size).")
        return {g: (base_batch, base_batch * g) for g in gpus}, []
    total = global_batch if global_batch is not None else base_batch * min(gpus)
    if total < 1:
        raise ConfigError(f"--global-batch: expected an integer >= 1, found {total}.")
    for g in gpus:
        if total % g:
            refused.append(f"{g} GPUs: the global batch {total} does not divide by {g}")
        elif total // g < min_batch:
            refused.append(f"{g} GPUs: {total} / {g} = {total // g} per GPU, below the minimum "
                           f"{min_batch} (--min-batch-per-gpu)")
        else:
            out[g] = (total // g, total)
    return out, refused


def plan_sweep(site, job_path: str, overrides, mode: str, gpus: list[int], walltime_s: int,
               sweep_dir: str, queue: Optional[str] = None, account: Optional[str] = None,
               global_batch: Optional[int] = None, min_batch: int = 1) -> list[SweepPoint]:
    """Plan every point; raise one ConfigError listing all refused points (nothing written)."""
    from hpccl.core.training import lr_multiplier
    from hpccl.sched.submit import load_job_for_site
    if mode not in ("weak", "strong"):
        raise ConfigError(f"--scaling: expected 'weak' or 'strong', found {mode!r}.")
    if min_batch < 1:
        raise ConfigError(f"--min-batch-per-gpu: expected an integer >= 1, found {min_batch}.")
    base = load_job_for_site(job_path, overrides)
    sizes, refused = batches(mode, base.train.batch_size, gpus, global_batch, min_batch)
    points, taken = [], {}
    for g in gpus:
        if g not in sizes:
            continue
        per_gpu, total = sizes[g]
        name = f"{base.name}-{mode}-g{g}"
        try:   # the smaller batch may break a rule of the job (e.g. rehearsal.candidates)
            cfg = load_job_for_site(job_path, list(overrides) + [f"train.batch_size={per_gpu}"])
            prep = prepare(site, cfg, g, walltime_s, os.path.join(sweep_dir, point_dir_name(g)),
                           name, queue, account, taken)
        except ConfigError as e:
            refused.append(f"{g} GPUs: {e}")
            continue
        if prep.queue is not None:
            taken[prep.queue.name] = taken.get(prep.queue.name, 0) + 1
        mult = float(lr_multiplier(cfg.train, g))
        points.append(SweepPoint(gpus=g, batch_per_gpu=per_gpu, global_batch=total,
                                 lr_multiplier=mult, lr=cfg.train.lr * mult, prep=prep))
    if refused:
        raise ConfigError(f"{mode} scaling sweep on {site.label} refused; nothing was written "
                          f"or submitted. Refused points: " + " | ".join(refused) +
                          " HINT: drop these GPU counts from --gpus, or change the limit they hit.")
    return points


def manifest(site, job_path: str, mode: str, base_cfg, points: list[SweepPoint], sweep_dir: str,
             job_ids: dict, dry_run: bool) -> dict:
    t = base_cfg.train
    return {"schema_version": MANIFEST_VERSION, "kind": "scaling_sweep", "mode": mode,
            "site": site.name, "scheduler": site.scheduler, "job": job_path, "name": base_cfg.name,
            "created": _dt.datetime.now().isoformat(timespec="seconds"), "dry_run": dry_run,
            "lr_scaling": t.lr_scaling, "lr_scaling_cap": t.lr_scaling_cap,
            "warmup_epochs": t.warmup_epochs, "base_lr": t.lr,
            "points": [p.manifest_entry(sweep_dir, job_ids.get(p.gpus)) for p in points]}


def write_manifest(sweep_dir: str, data: dict) -> str:
    path = os.path.join(sweep_dir, MANIFEST_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load_manifest(path: str) -> dict:
    """A sweep's manifest (give the file or the sweep directory), with ``run_dir`` made absolute."""
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no sweep manifest at {path!r}.") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a sweep manifest: byte {e.start} is not UTF-8 text.") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a scaling-sweep manifest (a JSON object), found "
                          f"{type(data).__name__}.")
    if data.get("kind") != "scaling_sweep" or data.get("schema_version") != MANIFEST_VERSION:
        raise ConfigError(f"{path}: expected a scaling-sweep manifest of schema_version "
                          f"{MANIFEST_VERSION}, found kind {data.get('kind')!r}, version "
                          f"{data.get('schema_version')!r}.")
    _check_manifest(path, data)
    root = os.path.dirname(os.path.abspath(path))
    for p in data["points"]:
        p["run_dir"] = os.path.normpath(os.path.join(root, p["run_dir"]))
    return data


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


# Every field the analysis reads (hpccl.sched.scaling), with what it must be.
_TOP_FIELDS = {"mode": (lambda v: v in ("weak", "strong"), "'weak' or 'strong'"),
               "site": (lambda v: v is None or isinstance(v, str), "a site name"),
               "points": (lambda v: isinstance(v, list), "a list of points")}
_POINT_FIELDS = {"gpus": (_count, "an integer >= 1"), "nodes": (_count, "an integer >= 1"),
                 "batch_per_gpu": (_count, "an integer >= 1"), "global_batch": (_count, "an integer >= 1"),
                 "lr_multiplier": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                                   "a number"),
                 "run_dir": (lambda v: isinstance(v, str) and v != "", "a directory relative to the sweep")}


def _check_manifest(path: str, data: dict) -> None:
    """The fields the analysis reads are there and of their type, else one ConfigError naming
    the file, the field and what it should be (it raised KeyError deep in the analysis)."""
    def bad(where, key, expected, found=None, missing=False):
        what = "is missing" if missing else f"expected {expected}, found {json.dumps(found)[:60]}"
        return ConfigError(f"{path}: {where}{key!r} {what}. The manifest is written by 'hpccl sweep' and "
                           "damaged or edited since; nothing was read or changed.")
    for key, (ok, expected) in _TOP_FIELDS.items():
        if key not in data and key != "site":
            raise bad("", key, expected, missing=True)
        if key in data and not ok(data[key]):
            raise bad("", key, expected, data[key])
    for i, p in enumerate(data["points"]):
        if not isinstance(p, dict):
            raise bad(f"points[{i}] ", "", "an object", p)
        for key, (ok, expected) in _POINT_FIELDS.items():
            if key not in p:
                raise bad(f"points[{i}]: ", key, expected, missing=True)
            if not ok(p[key]):
                raise bad(f"points[{i}]: ", key, expected, p[key])
