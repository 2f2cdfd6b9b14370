"""Fixtures for the tests across real hosts: one test bed of 3 hosts for the whole session
(tests/cluster/testbed.py), a directory every host shares, and the launch commands of each MPI
stack across the hosts.

The test bed needs root and Linux namespaces: outside CI a machine without them skips these
tests with the reason; with CI=true they fail, because CI must run them.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sched"))     # slurm_cluster.py

from cluster_helpers import IN_CI, ROOT, SITES  # noqa: E402,F401
from testbed import Testbed, Unavailable  # noqa: E402


@pytest.fixture(scope="session")
def testbed():
    try:
        Testbed.check_available()
        tb = Testbed(hosts=3).start()
    except Unavailable as e:
        if IN_CI:
            pytest.fail(f"CI=true and {e}", pytrace=False)
        pytest.skip(str(e))
    try:
        yield tb
    finally:
        tb.stop()


@pytest.fixture(scope="session")
def shared_root():
    """A directory on the file system every host shares (each host's /tmp is its own)."""
    root = Path("/var/tmp") / f"hpccl-cluster-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def shared(shared_root, request):
    d = shared_root / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    d.mkdir()
    return d



@pytest.fixture(scope="session")
def cluster_slurm(testbed, shared_root):
    """Slurm across the test bed: one slurmd per host, slurmctld and munged on node1 (the
    login node, where clients run); its state on the shared file system."""
    from slurm_cluster import LocalSlurm, Unavailable as NoSlurm, ensure_installed
    try:
        ensure_installed()
    except NoSlurm as e:
        if IN_CI:
            pytest.fail(f"CI=true and {e}", pytrace=False)
        pytest.skip(str(e))
    root = shared_root / "slurm"
    root.mkdir()
    slurm = LocalSlurm(root, cpus=2, nodes=[(h, testbed.address(h)) for h in testbed.names],
                       on=lambda host: testbed.on(host, cwd=ROOT))
    try:
        slurm.start()
    except NoSlurm as e:
        slurm.stop()
        pytest.fail(f"Slurm across the test bed did not start: {e}", pytrace=False)
    yield slurm
    slurm.stop()
