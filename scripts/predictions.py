"""The predictions of issue #26 item 5, from one command, so the published tables cannot drift
from the model: the seed's experiment (ResNet-50, ImageNet-1K in 4 tasks of 250 classes,
b = 56, c = 14, r = 7, ER, uint8 records of 150 KB, AMP, Horovod over NCCL) on ThetaGPU and
Polaris at 8 to 1024 GPUs, by ``hpccl.analysis.model`` (the engine of ``hpccl model``) from the
published baseline benchmarks/published/resnet50_a100_amp.yaml and site_configs/*.yaml.

    python scripts/predictions.py            # print every table (markdown)
    python scripts/predictions.py --write    # rewrite the tables in README.md and docs/scaling.md
    python scripts/predictions.py --check    # exit 1 when those tables differ from the model's
    python scripts/predictions.py --write --simgrid   # and the SimGrid engine's table (minutes)

The same rows, one site at a time, from the command line:

    hpccl model --baseline-file benchmarks/published/resnet50_a100_amp.yaml \\
        --site site_configs/thetagpu.yaml --gpus 1,8,16,32,64,128,256,512,1024

Each table sits in the files between ``<!-- predictions:NAME -->`` and
``<!-- /predictions:NAME -->``; --write replaces only what is between them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hpccl.analysis.baseline import load_baseline  # noqa: E402
from hpccl.analysis.model import Network, iteration_time, predict  # noqa: E402
from hpccl.sched.sites import load_site  # noqa: E402

BASELINE = os.path.join(ROOT, "benchmarks", "published", "resnet50_a100_amp.yaml")
SITES = ("thetagpu", "polaris")
GPUS = (8, 16, 32, 64, 128, 256, 512, 1024)
TASKS = 4
# The seed authors' reported training times on ThetaGPU at batch 64 (issue #26): GPUs -> minutes.
# Their epochs per task are not stated there; jobs/imagenet_resnet50.yaml's 30 is assumed.
SEED_MINUTES = {16: 50, 32: 30, 64: 15}
SEED_BATCH = 64
EPOCHS_PER_TASK = 30
# float32 records (hpccl's default buffer dtype) of the same images: 4 x 150,528 bytes, with the
# per-record costs measured at that size (benchmarks/published/resnet50_a100_amp.yaml's sources)
RECORD_600KB = {"sample_bytes": 602112, "fetch_s_per_rep": 1.23e-4, "insert_s_per_candidate": 2.8e-5}
FILES = {"readme": "README.md", "site": "docs/scaling.md", "sensitivity": "docs/scaling.md",
         "seed": "docs/scaling.md", "simgrid": "docs/scaling.md"}


def site(name: str):
    s = load_site(os.path.join(ROOT, "site_configs", f"{name}.yaml"))
    return s.gpus_per_node, Network.from_site(s, name)


def scaling(m, name: str) -> list[dict]:
    """Per GPU count: incremental, rehearsal async and sync, each against its own 1-GPU rate."""
    gpn, net = site(name)
    inc = predict(m, [1, *GPUS], gpn, net, rehearsal=False)[1:]
    asy = predict(dataclasses.replace(m, async_rehearsal=True), [1, *GPUS], gpn, net)[1:]
    syn = predict(dataclasses.replace(m, async_rehearsal=False), [1, *GPUS], gpn, net)[1:]
    out = []
    for i, a, s in zip(inc, asy, syn):
        # scratch retrains on every task seen so far: task t's epoch covers t tasks' samples
        # at the incremental rate; the mean over the 4 tasks is (1+2+3+4)/4 = 2.5 epochs' worth
        scratch = sum(range(1, TASKS + 1)) / TASKS * i["epoch_s"]
        out.append({"gpus": i["gpus"], "nodes": -(-i["gpus"] // gpn), "algorithm": i["allreduce_algorithm"],
                    "allreduce_ms": 1e3 * i["t_allreduce"], "inc": i, "async": a, "sync": s,
                    "scratch_s": scratch, "over_async": a["epoch_s"] / i["epoch_s"] - 1,
                    "over_sync": s["epoch_s"] / i["epoch_s"] - 1})
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def readme_table(m) -> str:
    rows = {n: scaling(m, n) for n in SITES}
    lines = ["| GPUs | ThetaGPU: incremental / async / sync s per epoch | overhead async / sync % | "
             "efficiency | Polaris: incremental / async / sync s | overhead % | efficiency |",
             "|---|---|---|---|---|---|---|"]
    for k, p in enumerate(GPUS):
        cells = [str(p)]
        for n in SITES:
            r = rows[n][k]
            cells += [f"{r['inc']['epoch_s']:.2f} / {r['async']['epoch_s']:.2f} / {r['sync']['epoch_s']:.2f}",
                      f"{_pct(r['over_async'])} / {_pct(r['over_sync'])}", f"{r['async']['efficiency']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def site_table(m) -> str:
    lines = []
    for n in SITES:
        lines += [f"{n}: {site(n)[0]} GPUs per node", "",
                  "| GPUs | nodes | allreduce | allreduce ms | iteration ms incr. / async / sync | async exposed ms "
                  "| epoch s incr. / async / sync | scratch s (mean of 4 tasks) | overhead async / sync % "
                  "| efficiency incr. / async |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in scaling(m, n):
            i, a, s = r["inc"], r["async"], r["sync"]
            lines.append(
                f"| {r['gpus']} | {r['nodes']} | {r['algorithm']} | {r['allreduce_ms']:.2f} | "
                f"{1e3 * i['iteration_s']:.2f} / {1e3 * a['iteration_s']:.2f} / {1e3 * s['iteration_s']:.2f} | "
                f"{1e3 * a['rehearsal_exposed']:.3f} | {i['epoch_s']:.2f} / {a['epoch_s']:.2f} / {s['epoch_s']:.2f} | "
                f"{r['scratch_s']:.2f} | {_pct(r['over_async'])} / {_pct(r['over_sync'])} | "
                f"{i['efficiency']:.2f} / {a['efficiency']:.2f} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def exposing_record_bytes(m, p: int, gpn: int, net) -> float | None:
    """The smallest record (bytes, local copy cost growing with it as measured) at which async
    rehearsal is exposed on p GPUs; None beyond 1 GB."""
    per_byte_f = m.fetch_s_per_rep / m.sample_bytes
    per_byte_e = m.insert_s_per_candidate / m.sample_bytes

    def exposed(size):
        mm = dataclasses.replace(m, sample_bytes=int(size), fetch_s_per_rep=per_byte_f * size,
                                 insert_s_per_candidate=per_byte_e * size, async_rehearsal=True)
        return iteration_time(mm, p, gpn, net)["rehearsal_exposed"] > 0
    lo, hi = float(m.sample_bytes), 1e9
    if exposed(lo):
        return lo
    if not exposed(hi):
        return None
    while hi / lo > 1.001:
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if exposed(mid) else (mid, hi)
    return hi


def sensitivity_table(m) -> str:
    p = GPUS[-1]
    lines = [f"| site | r | record | fetch + insert ms | hiding window ms | async exposed ms | overhead async / "
             f"sync % | async exposed from a record of |", "|---|---|---|---|---|---|---|---|"]
    for n in SITES:
        gpn, net = site(n)
        for r in (7, 14, 28):
            for label, record in (("150 KB uint8", {}), ("600 KB float32", RECORD_600KB)):
                mm = dataclasses.replace(m, representatives=r, **record)
                inc = iteration_time(mm, p, gpn, net, rehearsal=False)["iteration_s"]
                a = iteration_time(dataclasses.replace(mm, async_rehearsal=True), p, gpn, net)
                s = iteration_time(dataclasses.replace(mm, async_rehearsal=False), p, gpn, net)
                window = a["t_compute"] + a["t_allreduce"] + a["t_rehearsal_link"]
                edge = exposing_record_bytes(mm, p, gpn, net)
                lines.append(f"| {n} | {r} | {label} | {1e3 * (a['t_fetch'] + a['t_insert']):.2f} | "
                             f"{1e3 * window:.1f} | {1e3 * a['rehearsal_exposed']:.3f} | "
                             f"{_pct(a['iteration_s'] / inc - 1)} / {_pct(s['iteration_s'] / inc - 1)} | "
                             + ("beyond 1 GB" if edge is None else f"{edge / 1e6:.1f} MB") + " |")
    # the rank count: past a few nodes every draw's r records come from r distinct owners, so
    # the exposing record size stops moving
    lines += ["", "| GPUs | " + " | ".join(f"{n}: async exposed from a record of (r = 7)" for n in SITES) + " |",
              "|---|" + "---|" * len(SITES)]
    for p in GPUS:
        edges = [exposing_record_bytes(m, p, *site(n)) for n in SITES]
        lines.append(f"| {p} | " + " | ".join("beyond 1 GB" if e is None else f"{e / 1e6:.1f} MB" for e in edges) + " |")
    return "\n".join(lines)


def seed_table(m) -> str:
    gpn, net = site("thetagpu")
    mm = dataclasses.replace(m, batch=SEED_BATCH)
    rows = predict(mm, sorted(SEED_MINUTES), gpn, net)
    lines = [f"| GPUs (ThetaGPU nodes) | predicted epoch s (b = {SEED_BATCH}, async) | predicted total min "
             f"({TASKS} tasks x {EPOCHS_PER_TASK} epochs) | reported min | reported / predicted | "
             "reported img/s per GPU (same epochs) |", "|---|---|---|---|---|---|"]
    for r in rows:
        p = r["gpus"]
        total = TASKS * EPOCHS_PER_TASK * r["epoch_s"] / 60
        got = SEED_MINUTES[p]
        rate = TASKS * EPOCHS_PER_TASK * m.samples_per_epoch / (got * 60) / p
        lines.append(f"| {p} ({p // gpn}) | {r['epoch_s']:.1f} | {total:.1f} | {got} | {got / total:.1f} | "
                     f"{rate:.0f} |")
    return "\n".join(lines)


def simgrid_table(m) -> str:
    """Both engines, async rehearsal, per site and GPU count: SimGrid's SMPI replays the
    iteration (hpccl/analysis/simgrid_replay.py); minutes, so outside --check's tables."""
    from hpccl.analysis import simgrid_replay
    lines = []
    for n in SITES:
        gpn, net = site(n)
        ana = predict(m, [1, *GPUS], gpn, net)[1:]
        sim = simgrid_replay.predict(m, [1, *GPUS], gpn, net)[1:]
        lines += [f"{n}: analytical / simgrid", "",
                  "| GPUs | allreduce | allreduce ms | async exposed ms | iteration ms | epoch s | efficiency |",
                  "|---|---|---|---|---|---|---|"]
        for a, g in zip(ana, sim):
            lines.append(f"| {a['gpus']} | {a['allreduce_algorithm']} / {g.get('allreduce_algorithm')} | "
                         f"{1e3 * a['t_allreduce']:.2f} / {1e3 * g['t_allreduce']:.2f} | "
                         f"{1e3 * a['rehearsal_exposed']:.3f} / {1e3 * g['rehearsal_exposed']:.3f} | "
                         f"{1e3 * a['iteration_s']:.2f} / {1e3 * g['iteration_s']:.2f} | "
                         f"{a['epoch_s']:.2f} / {g['epoch_s']:.2f} | {a['efficiency']:.2f} / {g['efficiency']:.2f} |")
        lines.append("")
    return "\n".join(lines).rstrip()


TABLES = {"readme": readme_table, "site": site_table, "sensitivity": sensitivity_table, "seed": seed_table}
SLOW = {"simgrid": simgrid_table}     # --simgrid: written with --write, not compared by --check


def render(baseline: str = BASELINE, slow: bool = False) -> dict[str, str]:
    m = load_baseline(baseline)
    return {name: fn(m) for name, fn in {**TABLES, **(SLOW if slow else {})}.items()}


def block(name: str) -> re.Pattern:
    return re.compile(rf"<!-- predictions:{name} -->\n(.*?)\n?<!-- /predictions:{name} -->", re.S)


def published(root: str = ROOT) -> dict[str, str | None]:
    """The tables as README.md and docs/scaling.md hold them (None: no such block)."""
    out = {}
    for name, rel in FILES.items():
        if name in SLOW:
            continue
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            found = block(name).search(f.read())
        out[name] = found.group(1) if found else None
    return out


def write(tables: dict[str, str], root: str = ROOT) -> None:
    for name, rel in FILES.items():
        if name not in tables:
            continue
        path = os.path.join(root, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new, n = block(name).subn(lambda _: f"<!-- predictions:{name} -->\n{tables[name]}\n"
                                           f"<!-- /predictions:{name} -->", text)
        if n != 1:
            raise SystemExit(f"{rel}: expected one '<!-- predictions:{name} -->' block, found {n}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE, help="published baseline file (default: %(default)s)")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help="rewrite the tables in README.md and docs/scaling.md")
    what.add_argument("--check", action="store_true", help="exit 1 where README.md or docs/scaling.md differs")
    ap.add_argument("--simgrid", action="store_true", help="also the SimGrid engine's table (minutes: "
                    "a replay per GPU count and site)")
    args = ap.parse_args(argv)
    tables = render(args.baseline, slow=args.simgrid)
    if args.write:
        write(tables)
        return 0
    if args.check:
        stale = [f"{FILES[n]} ({n})" for n, text in published().items() if text != tables[n]]
        if stale:
            print("predictions differ from the model in: " + ", ".join(stale)
                  + "; run python scripts/predictions.py --write", file=sys.stderr)
            return 1
        print("predictions in README.md and docs/scaling.md match the model")
        return 0
    for name, text in tables.items():
        print(f"## {name}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
