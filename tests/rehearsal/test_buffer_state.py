"""The rehearsal buffer's checkpointed state restores the sampler's snapshot of the other
ranks' totals: a resumed rank draws the samples the interrupted one would have, also while
its view of another node is stale (as it is between the turns that re-read it)."""

import json
import os
import sys

from helpers import run_cmd
from hpccl.core.launch import mpirun_prefix

WORKER = os.path.join(os.path.dirname(__file__), "snapshot_worker.py")


def test_a_restored_buffer_draws_from_the_saved_snapshot(tmp_path):
    out = tmp_path / "draws.json"
    r = run_cmd(mpirun_prefix(2) + [sys.executable, WORKER, str(out)], timeout=240,
                env={"OMPI_MCA_btl": "tcp,self"})
    assert r.returncode == 0 and out.exists(), r.stdout + r.stderr
    got = json.loads(out.read_text())
    assert got["snapshot"] == [12, 12]           # rank 1's 9 later samples not yet seen
    first = got["before"][0]
    # The first draw after the save picks from the snapshot: of rank 1's samples, only its
    # first 12 (ids 1000-1011); later draws see its new ones (ids 1100-1108) as turns re-read it.
    assert len(first) == 6 and all(i < 12 or 1000 <= i < 1012 for i in first), first
    assert any(i >= 1100 for d in got["before"][1:] for i in d), got["before"]
    assert got["after"] == got["before"]
