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


def _process_getenv(name: str) -> str | None:
    """The C library's view of this process's environment, which is what a subprocess started
    with env=None inherits; ``os.environ`` is a copy taken at start-up and misses what a
    library (an MPI initialised in this process) sets later with setenv()."""
    import ctypes
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    value = libc.getenv(name.encode())
    return None if value is None else value.decode(errors="replace")


@pytest.fixture(autouse=True)
def _no_mpi_in_the_test_process():
    """Fail the test that initialises MPI inside pytest's own process. Open MPI's singleton
    init exports OMPI_MCA_ess=singleton and PMIX_* through setenv(); every `hpccl run -n N`
    a later test starts would inherit them (so would its mpirun's ranks), and that once made
    the later multi-rank tests of a whole CI run silently run on one rank."""
    yield
    leaked = _process_getenv("OMPI_MCA_ess")
    if leaked == "singleton":
        pytest.fail("this test initialised MPI in pytest's own process (OMPI_MCA_ess=singleton "
                    "is now in its environment, and every later subprocess would inherit it): "
                    "run the MPI part in a subprocess", pytrace=False)
