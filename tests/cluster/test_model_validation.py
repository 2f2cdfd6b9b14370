"""`hpccl model` calibrated on real hosts predicts a third: a 1-rank run and a 2-host run on the
test bed, every link limited to 50 Mbit/s by tc tbf (so the 1.2 MB gradient allreduce, not the
2 shared cores, sets the pace), calibrate the model; it then predicts the iteration time at 3
hosts, which is measured. The tolerance (25 %) is what the model before issue #26 missed by
far: it had no allreduce term from measurements and took a 25 GB/s link.
(benchmarks/model_validation.py runs the whole table: 1-3 hosts, torch and mpi, with and
without rehearsal.)"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from cluster_helpers import ROOT
from testbed import Testbed, Unavailable

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from model_validation import run_config  # noqa: E402

TOLERANCE_PCT = 25


@pytest.fixture(scope="module")
def bed():
    """Hosts of its own: the bandwidth limit must not reach the session's test bed."""
    try:
        tb = Testbed(3, prefix="hpcclv", subnet="10.221.0").start()
    except Unavailable as e:
        pytest.skip(str(e))
    tb.set_bandwidth("50mbit")
    try:
        yield tb
    finally:
        tb.stop()


def test_a_model_calibrated_on_one_and_two_hosts_predicts_three(bed, shared):
    from hpccl.analysis.model import calibrate, iteration_time, measured_point
    from hpccl.core.errors import HpcclError
    one = run_config(bed, 1, "torch", "rehearsal", str(shared))
    # one rank alone says nothing about the network: the model refuses rather than guess
    with pytest.raises(HpcclError, match="no run at 2\\+ ranks and no site network"):
        iteration_time(calibrate([one]), 3, 1, None)
    two = run_config(bed, 2, "torch", "rehearsal", str(shared))
    m = calibrate([one, two])
    assert m.sources["allreduce"] == f"torch: {two}" and m.sources["compute"] == one
    assert m.allreduce_scope == "inter"
    predicted = iteration_time(m, 3, 1, None)        # one rank per host
    assert predicted["allreduce_algorithm"] == "ring"
    three = run_config(bed, 3, "torch", "rehearsal", str(shared))
    measured = measured_point(three)
    error = 100 * (predicted["iteration_s"] - measured["iteration_s"]) / measured["iteration_s"]
    assert abs(error) < TOLERANCE_PCT, (
        f"3 hosts: predicted {predicted['iteration_s'] * 1e3:.1f} ms, measured "
        f"{measured['iteration_s'] * 1e3:.1f} ms ({error:+.1f} %); calibration {m}")
    # the SimGrid replay of the same calibration, on a platform of the fitted link (under a
    # second; CI installs SimGrid, elsewhere tests/analysis/test_simgrid_replay.py says it is absent)
    if not shutil.which("smpirun") and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    from hpccl.analysis import simgrid_replay
    replayed = simgrid_replay.iteration_time(m, 3, 1, None)
    error = 100 * (replayed["iteration_s"] - measured["iteration_s"]) / measured["iteration_s"]
    assert abs(error) < TOLERANCE_PCT, (
        f"3 hosts, simgrid: predicted {replayed['iteration_s'] * 1e3:.1f} ms, measured "
        f"{measured['iteration_s'] * 1e3:.1f} ms ({error:+.1f} %)")
