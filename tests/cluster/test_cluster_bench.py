"""benchmarks/cluster_bench.py in its smoke mode: it builds its own hosts beside the suite's,
runs a stack and backend with and without rehearsal, then under a 100 Mbit/s limit, and its
tables and JSON carry the numbers the full run reports."""

import json
import os
import subprocess
import sys

from cluster_helpers import ROOT


def test_cluster_bench_smoke(testbed, tmp_path):      # testbed: skipped or failed alike
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cluster_bench.py"),
                        "--smoke", "--json", str(out)], capture_output=True, text=True, timeout=900,
                       cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads(out.read_text())
    for row in res["stacks"] + res["bandwidth"]:
        reh, inc = row["reh"], row["inc"]
        assert reh["result"] == "complete" and inc["result"] == "complete", row
        assert reh["epoch_s"] > 0 and inc["epoch_s"] > 0 and 0 <= reh["wait"] < 1, row
    assert "x fastest" in r.stdout and "x incremental" in r.stdout and "torch @100mbit" in r.stdout
