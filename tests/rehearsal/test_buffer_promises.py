"""Two promises of the rehearsal buffer on real MPI ranks, with shards that grow while others
draw (promises_worker.py; one launch per layout serves both tests):

- sampler.py: "a sample stored elsewhere becomes drawable within size / REFRESH_PER_DRAW + 1
  draws" (REFRESH_PER_DRAW = 2). The uniformity tests draw from static shards, where a stale
  snapshot of another rank's total cannot show.
- windows.py: after ``free()``, "later reads or writes fail clearly", instead of a KeyError
  or a segmentation fault on memory that is gone.
"""

import json
import os
import sys

import pytest

from hpccl.core.launch import mpirun_prefix

from helpers import run_cmd

WORKER = os.path.join(os.path.dirname(__file__), "promises_worker.py")
TCP = {"OMPI_MCA_btl": "tcp,self"}      # as test_buffer_mpi.py: two-sided traffic over TCP
# 4 ranks: every rank its own node, read by gets (3 other nodes, refreshed 2 a draw: the
# bound is reached), and 2 nodes of 2 (node totals by loads, the other node's by messages).
LAYOUTS = ["remote", "pairs+messages"]
_results = {}


def results(mode, part, tmp_path_factory):
    """The part's result from the worker's one launch for ``mode``; the frees come last, so
    the staleness result stands even when a read after a free crashes the ranks."""
    if mode not in _results:
        out = tmp_path_factory.mktemp("buffer-promises") / mode
        r = run_cmd(mpirun_prefix(4) + [sys.executable, WORKER, mode, str(out)], timeout=240,
                    env=TCP if mode.startswith("remote") else {})
        _results[mode] = (r, out)
    r, out = _results[mode]
    path = out.with_name(f"{out.name}.{part}")
    assert path.exists() and (part != "free" or r.returncode == 0), r.stdout + r.stderr
    return json.loads(path.read_text())


def true_total(q, step):
    """Rank q's total once step ``step`` inserted (step -1: before any insert)."""
    return (step + 1) * (1 + q % 2)


@pytest.mark.parametrize("mode", LAYOUTS)
def test_a_sample_stored_on_another_node_is_drawable_within_size_over_2_plus_1_draws(mode, tmp_path_factory):
    ranks = results(mode, "staleness", tmp_path_factory)
    size = len(ranks)
    for p, got in enumerate(ranks):
        snaps = got["snapshots"]
        for d in range(1, len(snaps)):
            for q in range(size):
                if got["same_node"][q]:
                    # read by loads at the start of every draw: never stale
                    assert snaps[d][q] == true_total(q, d), (p, q, d, snaps)
                    continue
                used = snaps[d - 1][q]          # what draw d draws from: read by an earlier draw
                assert used in [true_total(q, s) for s in range(-1, d + 1)], (p, q, d, snaps)
                age = d - next(s for s in range(-1, d + 1) if true_total(q, s) == used)
                # Inserted before draw d - age + 1 and not yet drawable at draw d: the promise
                # is that an insert before draw i is drawable by draw i + size // 2.
                assert age <= size // 2, (f"rank {p}'s draw {d} used rank {q}'s total from "
                                          f"{age} draws before", snaps)


@pytest.mark.parametrize("mode", LAYOUTS)
def test_reads_and_writes_after_free_fail_clearly(mode, tmp_path_factory):
    for rank, outcomes in enumerate(results(mode, "free", tmp_path_factory)):
        assert outcomes.pop("free again") == "no error"
        for name, outcome in outcomes.items():
            assert outcome.startswith("HpcclError: rehearsal buffer: ") and "after its windows were freed" \
                in outcome, (rank, name, outcome)
