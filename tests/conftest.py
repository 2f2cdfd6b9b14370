"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def digits_h5(tmp_path_factory):
    """The digits dataset in hpccl's format, converted once per test session."""
    from hpccl.data.convert import convert_digits
    path = tmp_path_factory.mktemp("data") / "digits.h5"
    convert_digits(str(path))
    return str(path)
