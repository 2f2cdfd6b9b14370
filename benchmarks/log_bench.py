#!/usr/bin/env python
"""What a rank log's flush costs as the run grows: hpccl's appending flush against rewriting
the whole log (what hpccl did before, and what its rewrite path does when the structure
changes), measured in the same run.

A rank log gets one flush an epoch of ``--iterations`` timer rows (6 columns, as the
continual loop's timers). Printed per size: the median time of an appending flush, of a
whole rewrite of the same log, their ratio, and the file size.

    python benchmarks/log_bench.py [--epochs 200] [--iterations 500]
    python benchmarks/log_bench.py --smoke      # seconds: 20 epochs of 20 rows
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpccl.core.logs import H5Log  # noqa: E402

COLUMNS = ("data_load", "rehearsal_wait", "forward_backward", "allreduce_step", "other", "total")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=500, help="timer rows a flush adds")
    ap.add_argument("--smoke", action="store_true", help="seconds: 20 epochs of 20 rows (the test "
                    "suite: every size reported, the same table)")
    args = ap.parse_args()
    if args.smoke:
        args.epochs, args.iterations = 20, 20
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        log = H5Log(os.path.join(tmp, "rank00000.h5"), "rank", {"rank": 0})
        report_at = {args.epochs // 20, args.epochs // 4, args.epochs - 1}
        print(f"rank log, {args.iterations} timer rows x {len(COLUMNS)} columns a flush")
        print(f"{'epoch':>6} {'rows':>9} {'append ms':>10} {'rewrite ms':>11} {'ratio':>7} {'file MB':>8}")
        for epoch in range(args.epochs):
            log.extend("timers", **{c: rng.random(args.iterations) for c in COLUMNS},
                       task=np.full(args.iterations, 0), epoch=np.full(args.iterations, epoch))
            log.set_attrs(epochs_done=epoch + 1)
            start = time.perf_counter()
            log.flush()
            appended = time.perf_counter() - start
            if epoch in report_at:
                appends = [appended]
                for _ in range(4):      # more appending flushes of the same size
                    log.extend("timers", **{c: rng.random(args.iterations) for c in COLUMNS},
                               task=np.full(args.iterations, 0), epoch=np.full(args.iterations, epoch))
                    start = time.perf_counter()
                    log.flush()
                    appends.append(time.perf_counter() - start)
                rewrites = []
                for _ in range(3):
                    start = time.perf_counter()
                    log.flush(rewrite=True)
                    rewrites.append(time.perf_counter() - start)
                a, r = statistics.median(appends), statistics.median(rewrites)
                rows = log.lengths()["timers/total"]
                print(f"{epoch + 1:>6} {rows:>9} {a * 1e3:>10.2f} {r * 1e3:>11.2f} {a / r:>7.3f} "
                      f"{os.path.getsize(log.path) / 1e6:>8.1f}")
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
