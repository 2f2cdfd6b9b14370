"""`hpccl model` against measurements on real hosts: calibrate from a 1-rank run and a 2-host
run of each backend on the multi-host test bed (tests/cluster/testbed.py; needs root), then
predict and measure the iteration time and the rehearsal wait at 1, 2 and 3 hosts, with the
torch and mpi backends, with rehearsal and without (the incremental learner).

    python benchmarks/model_validation.py            # the full table (~5 minutes on 2 cores)
    python benchmarks/model_validation.py --smoke    # calibration runs and 3 hosts, torch, rehearsal
    python benchmarks/model_validation.py --engine both   # the SimGrid replay's predictions beside
    python benchmarks/model_validation.py --rehearsal-wait --engine both   # the wait's own table (~1 min)

Every link is limited by tc tbf (``--rate``, default 50 Mbit/s), so the network, not the 2
cores the hosts share, sets the pace: the job is the digits quickstart with a 512x512 MLP
(a 1.2 MB gradient, about 0.2 s per ring allreduce at 2 hosts), 2 tasks of 1 epoch, one rank
per host. A 2-host run per backend, because each moves its bytes its own way: gloo swaps
bytes with a peer at the link's speed both ways, Open MPI over UCX's TCP transport (the
mpi backend, which uses recursive halving/doubling here) at about half of it. The calibration
runs' own rows are in-sample (marked *); the others are predictions.
Goal (issue #26): every prediction within 15 % of the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
sys.path.insert(0, ROOT)

from cluster_helpers import run_on_cluster, write_quickstart  # noqa: E402
from testbed import Testbed  # noqa: E402

STACK = "openmpi-ucx"
JOB = {"scenario.num_tasks": 2, "train.epochs": 1, "model.hidden": [512, 512]}


# The rehearsal wait's own validation: records big enough that the gets, not the CPU, set the
# wait. 3x32x32 float32 records (12 KB), r = 32 per draw: 197 KB crosses a 6 MB/s link per draw
# at 2 hosts (~33 ms), 262 KB at 3; a 16-unit MLP keeps the gradient as small (197 KB), so
# neither the allreduce nor the 2 cores hide the gets. Digits' 256 B records carry ~2 KB a draw:
# their measured wait is scheduling noise.
SYNTH_SHAPE = (3, 32, 32)
REHEARSAL_JOB = {"scenario.num_tasks": 2, "train.epochs": 1, "model.hidden": [16],
                 "data.builtin": None, "rehearsal.representatives": 32}


def write_synthetic(work: str, train_per_class: int = 96) -> str:
    """A 4-class synthetic dataset of SYNTH_SHAPE records on a path every host sees."""
    from hpccl.data.convert import convert_synthetic
    return convert_synthetic(os.path.join(work, "synthetic.h5"), num_classes=4, shape=SYNTH_SHAPE,
                             train_per_class=train_per_class, test_per_class=8)


# async: r = 64, so a draw's bytes outlast the allreduce's (2 hosts: ~63 against ~31 ms) and the
# main thread really waits for the rest; at equal bytes the two end together and the wait is
# whichever thread the 2 cores schedule last
ASYNC_REPRESENTATIVES = 64


def rehearsal_job(data: str, sync: bool) -> dict:
    return {**REHEARSAL_JOB, "data.path": data, "rehearsal.async": not sync,
            **({} if sync else {"rehearsal.representatives": ASYNC_REPRESENTATIVES})}


def run_config(tb, hosts: int, backend: str, learner: str, work: str, job: dict | None = None,
               tag: str = "") -> str:
    """One run of the validation job (``job``: other overrides than JOB's) on the first
    ``hosts`` hosts, one rank each; its run dir."""
    tag = f"{backend}-{learner}-{hosts}h{tag}"
    job = write_quickstart(os.path.join(work, f"{tag}.yaml"),
                           **{**(JOB if job is None else job), "runtime.backend": backend,
                              "learner.kind": learner})
    out = os.path.join(work, tag)
    r = run_on_cluster(tb, STACK, 1, ["-m", "hpccl", "run", job, "--out", out], hosts=tb.names[:hosts],
                       env={"HPCCL_DATA_CACHE": os.path.join(work, "data")}, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{tag} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return out


def predict_config(calibrated, hosts: int, backend: str, rehearsal: bool, engine: str = "analytical") -> dict:
    from dataclasses import replace

    if engine == "simgrid":
        from hpccl.analysis.simgrid_replay import iteration_time
    else:
        from hpccl.analysis.model import iteration_time
    # one rank per host: every peer is across the network
    return iteration_time(replace(calibrated, backend=backend), hosts, 1, None, rehearsal=rehearsal)


def compare(calibrated, run_dir: str, hosts: int, backend: str, rehearsal: bool, in_sample: bool,
            engines=("analytical",)) -> dict:
    """The row of one configuration; the first engine's numbers under the plain keys
    (predicted_ms, error_pct...), every engine's under ``<engine>_`` keys."""
    from hpccl.analysis.model import measured_point
    got = measured_point(run_dir)
    row = {"config": f"{hosts} host(s) {backend} {'rehearsal' if rehearsal else 'incremental'}"
                     + (" *" if in_sample else ""),
           "hosts": hosts, "backend": backend, "rehearsal": rehearsal, "in_sample": in_sample,
           "measured_ms": got["iteration_s"] * 1e3, "measured_wait_ms": got["rehearsal_wait_s"] * 1e3}
    for engine in reversed(engines):
        pred = predict_config(calibrated, hosts, backend, rehearsal, engine)
        these = {"predicted_ms": pred["iteration_s"] * 1e3,
                 "error_pct": 100 * (pred["iteration_s"] - got["iteration_s"]) / got["iteration_s"],
                 "predicted_wait_ms": pred["rehearsal_exposed"] * 1e3,
                 "allreduce_ms": pred["t_allreduce"] * 1e3, "algorithm": pred["allreduce_algorithm"]}
        row.update(these)
        row.update({f"{engine}_{k}": v for k, v in these.items()})
    return row


def table(rows: list[dict], engines=("analytical",)) -> str:
    if len(engines) > 1:
        cols = "".join(f" {'pred. ' + e[:4] + ' ms':>15} {'err ' + e[:4] + ' %':>10}" for e in engines)
        head = f"{'configuration':<34}{cols} {'measured ms':>11} {'meas. wait ms':>13}"
        lines = [head, "-" * len(head)]
        for r in rows:
            vals = "".join(f" {r[e + '_predicted_ms']:>15.1f} {r[e + '_error_pct']:>10.1f}" for e in engines)
            lines.append(f"{r['config']:<34}{vals} {r['measured_ms']:>11.1f} {r['measured_wait_ms']:>13.2f}")
        return "\n".join(lines)
    head = (f"{'configuration':<34} {'predicted ms':>12} {'measured ms':>11} {'error %':>8} "
            f"{'pred. wait ms':>13} {'meas. wait ms':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['config']:<34} {r['predicted_ms']:>12.1f} {r['measured_ms']:>11.1f} "
                     f"{r['error_pct']:>8.1f} {r['predicted_wait_ms']:>13.2f} {r['measured_wait_ms']:>13.2f}")
    return "\n".join(lines)


def validate(tb, work: str, configs, rate: str, engines=("analytical",)) -> tuple[object, list[dict]]:
    from hpccl.analysis.model import calibrate
    tb.set_bandwidth(rate)
    try:
        base = run_config(tb, 1, "torch", "rehearsal", work)
        done = {(1, "torch", True): base}
        for backend in sorted({be for _, be, _ in configs}):
            done[(2, backend, True)] = run_config(tb, 2, backend, "rehearsal", work)
        calibrated = calibrate(list(done.values()))
        rows = []
        for hosts, backend, rehearsal in configs:
            key = (hosts, backend, rehearsal)
            in_sample = key in done
            run = done.get(key) or run_config(tb, hosts, backend, "rehearsal" if rehearsal else "incremental", work)
            rows.append(compare(calibrated, run, hosts, backend, rehearsal, in_sample, engines))
    finally:
        tb.set_bandwidth(None)
    return calibrated, rows


def validate_rehearsal(tb, work: str, rate: str, engines=("analytical",), hosts=(2, 3)) -> tuple[object, list[dict]]:
    """The rehearsal wait against each engine's ``rehearsal_exposed``: calibrated from a 1-rank
    and a 2-host run of the synthetic job with sync rehearsal (the wait is the whole fetch and
    insert), then predicted for sync and async rehearsal at ``hosts``."""
    from dataclasses import replace

    from hpccl.analysis.model import calibrate, measured_point
    data = write_synthetic(work)
    tb.set_bandwidth(rate)
    try:
        runs = {}

        def run(h, sync):
            key = (h, sync)
            if key not in runs:
                runs[key] = run_config(tb, h, "torch", "rehearsal", work, rehearsal_job(data, sync),
                                       "-sync" if sync else "-async")
            return runs[key]
        calibrated = calibrate([run(1, True), run(2, True)])
        rows = []
        for sync in (True, False):
            for h in hosts:
                got = measured_point(run(h, sync))
                reps = REHEARSAL_JOB["rehearsal.representatives"] if sync else ASYNC_REPRESENTATIVES
                row = {"config": f"{h} host(s) {'sync' if sync else 'async'} rehearsal 12 KB x {reps}"
                                 + (" *" if (h in (1, 2) and sync) else ""),
                       "hosts": h, "sync": sync, "in_sample": h in (1, 2) and sync,
                       "measured_ms": got["iteration_s"] * 1e3, "measured_wait_ms": got["rehearsal_wait_s"] * 1e3}
                for engine in engines:
                    pred = predict_config(replace(calibrated, async_rehearsal=not sync, representatives=reps),
                                          h, "torch", True, engine)
                    w = pred["rehearsal_exposed"]
                    row.update({f"{engine}_predicted_ms": pred["iteration_s"] * 1e3,
                                f"{engine}_error_pct": 100 * (pred["iteration_s"] - got["iteration_s"]) / got["iteration_s"],
                                f"{engine}_wait_ms": w * 1e3, f"{engine}_fetch_ms": pred["t_fetch"] * 1e3,
                                f"{engine}_wait_error_pct": 100 * (w - got["rehearsal_wait_s"]) / max(got["rehearsal_wait_s"], 1e-9)})
                rows.append(row)
    finally:
        tb.set_bandwidth(None)
    return calibrated, rows


def wait_table(rows: list[dict], engines=("analytical",)) -> str:
    cols = "".join(f" {e[:4] + ' wait':>9} {'err %':>6} {e[:4] + ' fetch':>10} {e[:4] + ' it ms':>10} {'err %':>6}"
                   for e in engines)
    head = f"{'configuration':<42}{cols} {'meas. wait':>10} {'meas. it':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        vals = "".join(f" {r[e + '_wait_ms']:>9.1f} {r[e + '_wait_error_pct']:>6.1f} {r[e + '_fetch_ms']:>10.1f}"
                       f" {r[e + '_predicted_ms']:>10.1f} {r[e + '_error_pct']:>6.1f}" for e in engines)
        lines.append(f"{r['config']:<42}{vals} {r['measured_wait_ms']:>10.1f} {r['measured_ms']:>9.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the 3-host torch rehearsal prediction only")
    ap.add_argument("--rate", default="50mbit", help="tc rate of every link (default 50mbit)")
    ap.add_argument("--json", default=None, help="also write the rows and the calibration here")
    ap.add_argument("--engine", choices=("analytical", "simgrid", "both"), default="analytical",
                    help="which engine predicts (both: a column pair each; simgrid needs smpirun)")
    ap.add_argument("--rehearsal-wait", action="store_true",
                    help="the rehearsal wait's table instead: 12 KB synthetic records, sync and async")
    ap.add_argument("--keep", action="store_true", help="keep the runs' directory (--rehearsal-wait)")
    args = ap.parse_args(argv)
    engines = ("analytical", "simgrid") if args.engine == "both" else (args.engine,)
    if "simgrid" in engines:
        from hpccl.analysis.simgrid_replay import smpirun
        smpirun()       # before the runs: a missing SimGrid says so at once
    if args.smoke:
        configs = [(3, "torch", True)]
    else:
        configs = [(h, be, reh) for be in ("torch", "mpi") for reh in (True, False) for h in (1, 2, 3)]
    work = tempfile.mkdtemp(prefix="hpccl-model-validation-", dir="/var/tmp")   # every host sees /var/tmp
    tb = Testbed(3, prefix="hpcclm", subnet="10.219.0").start()
    if args.rehearsal_wait:
        try:
            calibrated, rows = validate_rehearsal(tb, work, args.rate, engines)
        finally:
            tb.stop()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        print(f"calibrated at {args.rate}: wire {calibrated.wire_bandwidth / 1e6:.2f} MB/s, fetch "
              f"{calibrated.fetch_s_per_rep * 1e6:.1f} us/record + {calibrated.fetch_s_per_owner * 1e3:.2f} ms/owner, "
              f"insert {calibrated.insert_s_per_candidate * 1e6:.1f} us/candidate, handoff {calibrated.handoff_s * 1e3:.2f} ms")
        print(wait_table(rows, engines))
        if args.json:
            from dataclasses import asdict
            with open(args.json, "w") as f:
                json.dump({"calibration": asdict(calibrated), "rows": rows}, f, indent=2)
        return 0
    try:
        calibrated, rows = validate(tb, work, configs, args.rate, engines)
    finally:
        tb.stop()
        shutil.rmtree(work, ignore_errors=True)
    links = ", ".join(f"{b} {link['bandwidth'] / 1e6:.2f} MB/s + {link['latency_s'] * 1e6:.0f} us"
                      for b, link in calibrated.links.items())
    print(f"calibrated at {args.rate}: compute {calibrated.compute_s_per_sample * 1e6:.1f} us/sample, "
          f"gradient {calibrated.gradient_bytes / 1e6:.2f} MB, swaps with a peer: {links}; wire "
          f"{calibrated.wire_bandwidth / 1e6:.2f} MB/s, "
          f"fetch {calibrated.fetch_s_per_rep * 1e6:.1f} us/record + {calibrated.fetch_s_per_owner * 1e3:.2f} ms/owner")
    print(table(rows, engines))
    # 1 host: a few ms of compute on cores other work shares, which no model of hpccl predicts;
    # across hosts the links set the pace
    for engine in engines:
        for label, keep in (("across hosts (the network sets the pace)", lambda r: r["hosts"] > 1),
                            ("on 1 host (compute on shared cores)", lambda r: r["hosts"] == 1)):
            errs = [abs(r[f"{engine}_error_pct"]) for r in rows if not r["in_sample"] and keep(r)]
            if errs:
                print(f"largest prediction error ({engine}) {label}, out of sample: {max(errs):.1f} % "
                      "(goal 15 %)")
    if args.json:
        from dataclasses import asdict
        with open(args.json, "w") as f:
            json.dump({"calibration": asdict(calibrated), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
