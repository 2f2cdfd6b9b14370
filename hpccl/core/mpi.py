"""mpi4py, initialised the way hpccl needs it, and the thread level it provides.

Apart from ``hpccl.core.runtime`` (the World) so that the layers below it (gradient backends,
rehearsal windows) can ask for MPI without importing the World.
"""

from __future__ import annotations

import os
import re

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


_MPI_SONAME = re.compile(rb"lib(?:mpi|mpich|mpi_cray|mpi_intel|mpi_ibm)(?:_\w+)?\.so(?:\.\d+)*")


def linked_mpi_libraries(path: str) -> set[str]:
    """The MPI shared libraries (sonames) a compiled extension names, from its bytes.

    An extension built against one MPI loaded into a process that runs another mixes two MPI
    libraries in one address space: it fails in ways that name neither (OpenMPI's
    "MPI_Comm_dup() called before MPI_INIT" under MPICH). The sonames differ between the
    families (libmpi.so.40: OpenMPI; libmpich.so.12: MPICH; libmpi_cray.so.12: Cray MPICH),
    so comparing them tells a mismatch before the extension is loaded."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return set()
    return {m.decode() for m in _MPI_SONAME.findall(data)} - {"libmpi_cxx.so.40", "libmpicxx.so.12"}


def extension_mpi_mismatch(package: str, pattern: str) -> str | None:
    """If the compiled module ``pattern`` (a glob in ``package``'s directory, e.g.
    'torch/mpi_lib*.so') was linked against another MPI than mpi4py's, say which of each;
    None when they agree or either cannot be told. Imports neither package."""
    import glob
    import importlib.util
    spec = importlib.util.find_spec(package)
    mpi4py_spec = importlib.util.find_spec("mpi4py")
    if spec is None or not spec.submodule_search_locations or mpi4py_spec is None:
        return None
    theirs = set()
    for loc in spec.submodule_search_locations:
        for path in glob.glob(os.path.join(loc, pattern)):
            theirs |= linked_mpi_libraries(path)
    ours = set()
    for loc in mpi4py_spec.submodule_search_locations or ():
        for path in glob.glob(os.path.join(loc, "MPI*.so")):
            ours |= linked_mpi_libraries(path)
    if theirs and ours and not theirs & ours:
        return f"the {package} on this path was built against {', '.join(sorted(theirs))} while " \
               f"this process runs {', '.join(sorted(ours))} (mpi4py's MPI)"
    return None


def horovod_mpi_mismatch() -> str | None:
    """A paragraph when the Horovod on the path was built for another MPI than this process
    runs (e.g. .venv-mpich sharing .venv's OpenMPI Horovod), else None."""
    found = extension_mpi_mismatch("horovod", os.path.join("torch", "mpi_lib*.so"))
    if found is None:
        return None
    return (f"runtime.backend is 'horovod', and {found}: loading it would put two MPI libraries "
            "in one process, which aborts. HINT: build Horovod against this MPI (HOROVOD_WITH_MPI=1 "
            "with this MPI's mpicc first on PATH) in this environment, or set 'runtime.backend: "
            "torch' (or mpi), which use this MPI only through mpi4py.")
