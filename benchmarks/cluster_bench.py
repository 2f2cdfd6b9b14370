"""hpccl across the multi-host test bed (tests/cluster/testbed.py), every MPI stack and
gradient backend at 3 hosts x 2 ranks, in one run (needs root: it builds its own hosts).

    python benchmarks/cluster_bench.py             # the full tables (~6 minutes on 2 cores)
    python benchmarks/cluster_bench.py --smoke     # one stack, one backend, 1 epoch (the suite)

For each stack x backend, the rehearsal quickstart (``--epochs`` per task) and the same job
with the incremental learner (no buffer), and reports:
  result          complete, or the first words of the refusal
  epoch s         mean epoch time of the rehearsal run
  x fastest       against the fastest backend on the same stack, in this run
  wait %          rehearsal wait, share of iteration time (mean over ranks)
  allreduce %     gradient allreduce + optimizer step, share of iteration time
  x incremental   rehearsal epoch time against the incremental run's
Then the default stack and backend with every link limited by tc tbf (1 Gbit/s, 100 Mbit/s),
where the network and not the shared cores sets the pace. Goals: every backend within 1.5x of
the fastest; rehearsal wait under 2 % where the gradient allreduce is not the bottleneck.

The hosts share this machine's cores: 6 ranks on 2 cores here are 3 per core, so an epoch
time is about the software's cost, not a cluster's speed; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
sys.path.insert(0, ROOT)

from cluster_helpers import STACKS, run_on_cluster, write_quickstart  # noqa: E402
from testbed import Testbed  # noqa: E402

BACKENDS = ("horovod", "torch", "mpi")


def run_job(tb, stack, backend, learner, epochs, work, per_host=2, label=""):
    tag = f"{stack}-{backend}-{learner}-{per_host}{label}"
    job = write_quickstart(os.path.join(work, f"{tag}.yaml"), **{
        "runtime.backend": backend, "learner.kind": learner, "train.epochs": epochs})
    out = os.path.join(work, tag)
    t0 = time.time()
    r = run_on_cluster(tb, stack, per_host, ["-m", "hpccl", "run", job, "--out", out],
                       env={"HPCCL_DATA_CACHE": os.path.join(work, "data")}, timeout=900)
    wall = time.time() - t0
    if r.returncode != 0:
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("hpccl: error")]
        why = err[0].split(": ", 2)[-1] if err else f"exit {r.returncode}"
        return {"result": "refused: " + why[:40] + "...", "why": why, "wall_s": wall}
    s = json.loads(subprocess.run([sys.executable, "-m", "hpccl", "analyze", out, "--format", "json"],
                                  capture_output=True, text=True, check=True).stdout)
    fr = s["timers"]["mean_fractions"]
    return {"result": s["status"], "wall_s": wall, "epoch_s": s["train_time_s"] / (5 * epochs),
            "wait": fr.get("rehearsal_wait", 0.0), "allreduce": fr.get("allreduce_step", 0.0),
            "accuracy": s["final_average_accuracy"]}


def table(rows, title):
    print(f"\n{title}")
    head = ["stack", "backend", "result", "epoch s", "x fastest", "wait %", "allreduce %",
            "x incremental", "acc %"]
    fastest = {}
    for r in rows:
        if "epoch_s" in r["reh"]:
            fastest[r["stack"]] = min(fastest.get(r["stack"], 1e9), r["reh"]["epoch_s"])
    lines = []
    for r in rows:
        reh, inc = r["reh"], r.get("inc", {})
        if "epoch_s" not in reh:
            lines.append([r["stack"], r["backend"], reh["result"]] + ["-"] * 6)
            continue
        lines.append([r["stack"], r["backend"], reh["result"], f"{reh['epoch_s']:.3f}",
                      f"{reh['epoch_s'] / fastest[r['stack']]:.2f}", f"{100 * reh['wait']:.1f}",
                      f"{100 * reh['allreduce']:.1f}",
                      f"{reh['epoch_s'] / inc['epoch_s']:.2f}" if "epoch_s" in inc else "-",
                      f"{100 * reh['accuracy']:.1f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="one stack and backend, 1 epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs per task (default 3)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    stacks = ("openmpi-ucx",) if a.smoke else STACKS
    backends = ("torch",) if a.smoke else BACKENDS
    rates = ("100mbit",) if a.smoke else ("1gbit", "100mbit")
    epochs = 1 if a.smoke else a.epochs
    work = tempfile.mkdtemp(prefix="hpccl-cluster-bench-", dir="/var/tmp")   # shared by the hosts
    tb = Testbed(3, prefix="hpcclb", subnet="10.215.0").start()
    results = {"stacks": [], "bandwidth": []}
    try:
        for stack in stacks:
            for backend in backends:
                reh = run_job(tb, stack, backend, "rehearsal", epochs, work)
                inc = run_job(tb, stack, backend, "incremental", epochs, work) if "epoch_s" in reh else {}
                results["stacks"].append({"stack": stack, "backend": backend, "reh": reh, "inc": inc})
        table(results["stacks"], f"3 hosts x 2 ranks, {epochs} epoch(s) per task, links unlimited")
        sys.stdout.flush()
        stack, backend = "openmpi-ucx", ("torch" if a.smoke else "horovod")
        # the same stack and backend with unlimited links first: the bandwidth rows' baseline
        results["bandwidth"] = [dict(r, backend=f"{backend} @unlimited") for r in results["stacks"]
                                if (r["stack"], r["backend"]) == (stack, backend)]
        for rate in rates:
            tb.set_bandwidth(rate)
            reh = run_job(tb, stack, backend, "rehearsal", epochs, work, label=rate)
            inc = run_job(tb, stack, backend, "incremental", epochs, work, label=rate) \
                if "epoch_s" in reh else {}
            results["bandwidth"].append({"stack": stack, "backend": f"{backend} @{rate}", "reh": reh,
                                         "inc": inc})
        tb.set_bandwidth(None)
        sys.stdout.flush()
        table(results["bandwidth"], f"{stack} + {backend}, links limited (tc tbf)")
    finally:
        tb.stop()
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
