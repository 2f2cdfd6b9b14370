"""Fixtures for the scheduler layer: isolated site directories, a real localhost Slurm
cluster (session-scoped), and an uninterrupted reference run for the requeue tests.

Tests that need Slurm are skipped with the reason when it cannot be had here (not root and
not installed, or it does not start); with CI=true they fail instead, because CI must run them.
"""

from __future__ import annotations

import os
import sys

import pytest

# tests/sched is not a package (and 'sched' would shadow the standard library's module):
# its helper modules are imported by name from this directory.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import mpirun_cmd, run_cmd  # noqa: E402
from sched_helpers import IN_CI, write_tiny_job  # noqa: E402


def unavailable(reason: str):
    """Skip outside CI; fail in CI (CI=true), where these tests must run."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def isolated_sites(tmp_path, monkeypatch):
    """Only the shipped sites plus a per-test override directory (never ~/.config/hpccl)."""
    user_dir = tmp_path / "site-overrides"
    user_dir.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("HPCCL_SITE_DIR", str(user_dir))
    return user_dir


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node Slurm cluster; yields the LocalSlurm (``.env`` has SLURM_CONF)."""
    from slurm_cluster import LocalSlurm, Unavailable, ensure_installed
    try:
        ensure_installed()
    except Unavailable as e:
        unavailable(str(e))
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Unavailable as e:
        cluster.stop()
        unavailable(f"the localhost Slurm cluster did not start: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def long_job(tmp_path_factory):
    """A job that trains for a few seconds (5 tasks x 30 epochs), long enough to be signalled
    after its first epochs."""
    return write_tiny_job(tmp_path_factory.mktemp("long-job") / "long.yaml", epochs=30)


@pytest.fixture(scope="session")
def reference_run(long_job, tmp_path_factory):
    """``long_job`` run without interruption on 2 local ranks (what a resumed run must match)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    r = run_cmd(mpirun_cmd(2, ["run", long_job, "--out", str(out)]), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return str(out)
