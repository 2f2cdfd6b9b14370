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
    global _world_size_checked
    if not _world_size_checked:
        _world_size_checked = True
        check_world_size(MPI)
    return MPI


_world_size_checked = False


def check_world_size(MPI, env=os.environ) -> None:
    """Refuse a world smaller than the launch: a launcher of another MPI than mpi4py's (say
    MPICH's mpiexec, or srun without the PMI the library speaks) starts N processes that each
    initialise as a one-rank world, and N copies of the job would write the same files."""
    from hpccl.core.launch import launched_size_var, under_mpi_launch
    size, var = MPI.COMM_WORLD.Get_size(), launched_size_var(env)
    if not under_mpi_launch(env) or var is None or int(env[var]) == size:
        return
    library = " ".join(MPI.Get_library_version().split()[:3]).rstrip(",")
    raise ConfigError(
        f"the launcher started {env[var]} ranks (environment variable {var}={env[var]}) but MPI "
        f"here sees a world of {size}: the launcher belongs to another MPI than the library "
        f"mpi4py uses ({library}), so each process would run the whole job alone, all of them "
        "into the same files; nothing was run. "
        "HINT: start ranks with the mpirun/mpiexec of mpi4py's MPI ('hpccl info' names the "
        "library), or under Slurm give srun the --mpi plugin that library speaks (srun --mpi=list).")


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


_MPI_SONAME = re.compile(r"lib(?:mpi|mpich|mpi_cray|mpi_intel|mpi_ibm)(?:_\w+)?\.so(?:\.\d+)*$")
_CXX_BINDINGS = {"libmpi_cxx.so.40", "libmpicxx.so.12"}


def needed_libraries(path: str) -> list[str]:
    """The shared libraries an ELF64 little-endian file names (DT_NEEDED), read from its
    section headers and dynamic section only (a Horovod extension is ~65 MB; every rank reads
    this at start). [] when it is not such a file."""
    import struct
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return []
            shoff, = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", head, 0x3A)
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
            dynamic = next((sh for sh in sections if sh[1] == 6), None)     # SHT_DYNAMIC
            if dynamic is None:
                return []
            f.seek(dynamic[4])
            entries = f.read(dynamic[5])
            strtab = sections[dynamic[6]]                                   # sh_link: .dynstr
            names = []
            for tag, value in struct.iter_unpack("<qQ", entries[:len(entries) // 16 * 16]):
                if tag == 0:            # DT_NULL
                    break
                if tag == 1:            # DT_NEEDED: an offset into .dynstr
                    f.seek(strtab[4] + value)
                    names.append(f.read(256).split(b"\0", 1)[0].decode(errors="replace"))
            return names
    except (OSError, struct.error, IndexError):
        return []


def linked_mpi_libraries(path: str) -> set[str]:
    """The MPI libraries (sonames) a compiled extension needs.

    An extension built against one MPI loaded into a process that runs another mixes two MPI
    libraries in one address space: it fails in ways that name neither (OpenMPI's
    "MPI_Comm_dup() called before MPI_INIT" under MPICH). The sonames differ between the
    families (libmpi.so.40: OpenMPI; libmpich.so.12: MPICH; libmpi_cray.so.12: Cray MPICH),
    so comparing them tells a mismatch before the extension is loaded."""
    return {n for n in needed_libraries(path) if _MPI_SONAME.match(n)} - _CXX_BINDINGS


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
