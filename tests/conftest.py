"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def digits_h5(tmp_path_factory):
    """The digits dataset in hpccl's format, converted once per test session."""
    from hpccl.data.convert import convert_digits
    path = tmp_path_factory.mktemp("data") / "digits.h5"
    convert_digits(str(path))
    return str(path)


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory):
    """A small complete run of every job kind (helpers.SMALL_RUNS), made once per session:
    {kind: run directory}. Tests read them and must not change them."""
    from helpers import SMALL_RUNS, hpccl_runs
    return hpccl_runs({kind: (job, sets, ranks, tmp_path_factory.mktemp(kind) / "run")
                       for kind, (job, sets, ranks) in SMALL_RUNS.items()})
