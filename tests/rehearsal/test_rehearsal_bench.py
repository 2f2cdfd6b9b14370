"""benchmarks/rehearsal_bench.py's remote part in its smoke mode (seconds), so the benchmark
cannot rot, and the counts it reports hold: one round per draw, at most (records drawn on
other nodes) + 2 remote operations, bytes within 1.05x of the payload."""

import json
import os
import subprocess
import sys

from helpers import ROOT


def test_remote_draw_benchmark_smoke(tmp_path):
    out = tmp_path / "remote.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "rehearsal_bench.py"), "--part",
                        "remote", "--smoke", "--json", str(out)], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "raw get MB/s" in r.stdout and "rma/raw" in r.stdout, r.stdout
    (stack,) = json.loads(out.read_text())["local"]
    (row,) = stack["rows"]
    for key in ("raw_MBps", "rma_MBps", "messages_MBps", "gather_MBps"):
        assert row[key] > 0, row
    rma, msg = row["rma"], row["messages"]
    # 2 ranks, r = 7: about half of each draw lies on the other rank's node
    assert 1.5 < rma["remote_records"] < 5.5, rma
    assert rma["rounds"] == 1.0 and msg["rounds"] == 1.0, row       # a whole record never tears here
    assert rma["ops"] <= rma["remote_records"] + 2, rma
    assert msg["ops"] == 1.0, msg                  # one request to the one other owner
    assert rma["bytes_per_payload"] <= 1.05, rma
