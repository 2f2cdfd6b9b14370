#!/usr/bin/env python
"""Run an ALMA study (a base job + named variants x seeds) and tabulate it.

    scripts/alma_study.py jobs/studies/alma_digits.yaml [--ranks N] [--out DIR] [--seeds 0,1]

A study file names its base job, the seeds, and groups of variants, each a mapping of
``--set`` overrides. Every run goes to DIR/<group>/<variant>/seed<S>; an existing complete
run is reused, so an interrupted study continues. The table (mean +- std over seeds of CER,
final error, training FLOPs, parameters, training time) is printed and written to
DIR/study.md; error curves of the first seed go to DIR/<group>/*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hpccl.alma.study import load_study  # noqa: E402
from hpccl.core import cli_args  # noqa: E402
from hpccl.core.errors import ConfigError  # noqa: E402
from hpccl.analysis.report import summarize  # noqa: E402
from hpccl.analysis.tables import render  # noqa: E402


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")


def _complete(run_dir: str) -> bool:
    try:
        return summarize(run_dir)["status"] == "complete"
    except Exception:  # noqa: BLE001 - missing or broken: run it again
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study")
    p.add_argument("--ranks", "-n", type=cli_args.ranks, default=1)
    p.add_argument("--out", default=os.path.join("runs", "alma_study"))
    p.add_argument("--seeds", type=cli_args.integer_list(0, cli_args.MAX_SEED), default=None,
                   help="comma-separated; default: the study's")
    args = p.parse_args(argv)
    try:
        study = load_study(args.study)
    except ConfigError as e:
        print(f"alma_study: error: {e}", file=sys.stderr)
        return 2
    seeds = args.seeds or study.seeds
    hpccl = [sys.executable, "-m", "hpccl"]
    rows, curves, done_runs = [], {}, {}
    for v in study.variants:
        group, name = v.group, v.name
        reports = []
        for seed in seeds:
            # A variant equal to one already run (e.g. every group's baseline) reuses it.
            key = json.dumps([seed, v.overrides], sort_keys=True)
            run_dir = done_runs.setdefault(key, os.path.join(args.out, _slug(group), _slug(name), f"seed{seed}"))
            if not _complete(run_dir):
                if os.path.exists(run_dir):
                    shutil.rmtree(run_dir)
                cmd = hpccl + ["run", study.job, "--out", run_dir, "--set", f"seed={seed}",
                               "--set", "log.progress=off"] + v.set_args()
                if args.ranks > 1:
                    cmd += ["-n", str(args.ranks)]
                print(f"[{group}] {name} seed {seed}", flush=True)
                done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
                if done.returncode != 0:
                    print(f"  failed (exit {done.returncode}): {' '.join(cmd)}", file=sys.stderr)
                    return done.returncode
            reports.append(summarize(run_dir))
        curves.setdefault(group, []).append(reports[0])

        def ms(key, scale=1.0, fmt="{:.2f}"):
            vals = np.array([r[key] for r in reports], dtype=float) * scale
            return fmt.format(vals.mean()) + ("" if len(vals) == 1 else " ± " + fmt.format(vals.std()))
        rows.append([group, name, reports[0]["wait"], f"{reports[0]['replay']:g}", reports[0]["updates"],
                     ms("cer"), ms("final_error", 100, "{:.1f}"), ms("train_flops", 1e-6, "{:.0f}"),
                     ms("parameters", 1, "{:.0f}"), ms("train_time_s")])
    header = ["study", "variant", "wait", "replay", "updates", "CER", "final error %", "train MFLOPs",
              "parameters", "train time s"]
    text = render(header, rows, "md")
    print(f"\n{len(seeds)} seed(s), {args.ranks} rank(s); mean ± std over seeds\n\n{text}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "study.md"), "w") as f:
        f.write(text + "\n")
    from hpccl.alma.report import plot_alma
    for group, reports in curves.items():
        for path in plot_alma(reports, os.path.join(args.out, _slug(group))):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
