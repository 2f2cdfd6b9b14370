"""mpi4py, initialised the way hpccl needs it, and the thread level it provides.

Apart from ``hpccl.core.runtime`` (the World) so that the layers below it (gradient backends,
rehearsal windows) can ask for MPI without importing the World.
"""

from __future__ import annotations

import os

from hpccl.core.errors import ConfigError


def mpi():
    """mpi4py's MPI module, initialised with MPI_THREAD_MULTIPLE.

    The rehearsal buffer's background thread issues RMA calls while the main thread runs
    collectives, which needs THREAD_MULTIPLE. The import initialises MPI, so it is deferred
    until a command really needs MPI (``hpccl validate`` does not). ``MPI4PY_RC_THREAD_LEVEL``
    in the environment asks for another level (tests use it to stand in for an MPI that
    provides less); what the library provides is checked by :func:`require_thread_multiple`.
    """
    import mpi4py
    if "MPI4PY_RC_THREAD_LEVEL" not in os.environ:
        mpi4py.rc.thread_level = "multiple"
    from mpi4py import MPI
    return MPI


def thread_level() -> str:
    """The thread support the MPI library provides (not what was asked for)."""
    MPI = mpi()
    return {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled",
            MPI.THREAD_SERIALIZED: "serialized", MPI.THREAD_MULTIPLE: "multiple"}[MPI.Query_thread()]


def require_thread_multiple(what: str, alternative: str = "") -> None:
    """Raise a ConfigError unless MPI provides MPI_THREAD_MULTIPLE, which ``what`` needs
    because a second thread calls MPI while the main thread does."""
    level = thread_level()
    if level == "multiple":
        return
    from mpi4py import MPI
    library = " ".join(MPI.Get_library_version().split()[:3])
    raise ConfigError(
        f"{what} calls MPI from a second thread, which needs MPI_THREAD_MULTIPLE, but this MPI "
        f"library ({library}) provides only MPI_THREAD_{level.upper()}. HINT: on Cray MPICH "
        "set MPICH_MAX_THREAD_SAFETY=multiple in the job's environment (the site file's "
        "'env:'); with another MPI, load a build with thread-multiple support"
        + (f"; {alternative}" if alternative else "") + ". 'hpccl check' reports the level.")
