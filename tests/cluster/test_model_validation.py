"""`hpccl model` calibrated on real hosts predicts a third: a 1-rank run and a 2-host run on the
test bed, every link limited to 50 Mbit/s by tc tbf (so the 1.2 MB gradient allreduce, not the
2 shared cores, sets the pace), calibrate the model; it then predicts the iteration time at 3
hosts, which is measured. The tolerance (25 %) is what the model before issue #26 missed by
far: it had no allreduce term from measurements and took a 25 GB/s link.
(benchmarks/model_validation.py runs the whole table: 1-3 hosts, torch and mpi, with and
without rehearsal.) A second test predicts the wait of sync rehearsal, where remote gets of 12 KB
records are the network's to pace (benchmarks/model_validation.py --rehearsal-wait: the table)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from cluster_helpers import IN_CI, ROOT
from testbed import Testbed, Unavailable

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from model_validation import rehearsal_job, run_config, write_synthetic  # noqa: E402

TOLERANCE_PCT = 25


@pytest.fixture(scope="module")
def bed():
    """Hosts of its own: the bandwidth limit must not reach the session's test bed."""
    try:
        tb = Testbed(3, prefix="hpcclv", subnet="10.221.0").start()
    except Unavailable as e:
        if IN_CI:      # as the session's test bed (conftest.py): CI must run these
            pytest.fail(f"CI=true and {e}", pytrace=False)
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


WAIT_TOLERANCE_PCT = 35


def test_the_sync_rehearsal_wait_is_the_gets_bytes_on_the_fitted_link(bed, shared):
    """Sync rehearsal exposes the whole fetch: 32 draws of 12 KB records, half of them remote at 2
    hosts (~200 KB, ~33 ms at 50 Mbit/s). Predicted from the wire fitted on the allreduce and the
    1-rank run's copies, inserts and handoff alone (no per-owner term fitted from the same run:
    that would replay the measurement), the wait must be the measured one."""
    from dataclasses import replace

    from hpccl.analysis.model import calibrate, iteration_time, measured_point
    data = write_synthetic(str(shared))
    one = run_config(bed, 1, "torch", "rehearsal", str(shared), rehearsal_job(data, sync=True), "-sync")
    two = run_config(bed, 2, "torch", "rehearsal", str(shared), rehearsal_job(data, sync=True), "-sync")
    m = replace(calibrate([one, two]), fetch_s_per_owner=0.0)
    assert not m.async_rehearsal and m.sample_bytes == 3 * 32 * 32 * 4
    predicted = iteration_time(m, 2, 1, None)
    measured = measured_point(two)["rehearsal_wait_s"]
    error = 100 * (predicted["rehearsal_exposed"] - measured) / measured
    assert abs(error) < WAIT_TOLERANCE_PCT, (
        f"sync rehearsal wait at 2 hosts: predicted {predicted['rehearsal_exposed'] * 1e3:.1f} ms (fetch "
        f"{predicted['t_fetch'] * 1e3:.1f} ms), measured {measured * 1e3:.1f} ms ({error:+.1f} %); calibration {m}")
