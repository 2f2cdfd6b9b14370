"""Versions of everything a run depends on: printed by ``hpccl info``, stored in every log."""

from __future__ import annotations

import platform
import sys


def mpi_library() -> dict:
    try:
        from hpccl.core.mpi import mpi, thread_level
        MPI = mpi()
        vendor, version = MPI.get_vendor()
        return {"mpi_vendor": vendor, "mpi_vendor_version": ".".join(map(str, version)),
                "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
                "mpi_thread_level": thread_level()}
    except Exception as e:  # noqa: BLE001 - info must report, not fail
        return {"mpi_vendor": f"unavailable ({e})"}


def horovod_info() -> dict:
    try:
        import horovod
        import horovod.torch as hvd
        return {"horovod": horovod.__version__, "horovod_mpi_built": hvd.mpi_built(),
                "horovod_gloo_built": hvd.gloo_built(), "horovod_nccl_built": bool(hvd.nccl_built())}
    except Exception as e:  # noqa: BLE001
        return {"horovod": f"unavailable ({type(e).__name__}: {e})"}


def versions(with_mpi: bool = True) -> dict:
    import h5py
    import numpy
    import torch

    import hpccl
    out = {"hpccl": hpccl.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "numpy": numpy.__version__, "h5py": h5py.__version__,
           "hdf5": h5py.version.hdf5_version}
    try:
        import mpi4py
        out["mpi4py"] = mpi4py.__version__
    except ImportError:
        out["mpi4py"] = "unavailable"
    if with_mpi:
        out.update(mpi_library())
    out.update(horovod_info())
    out["cuda_available"] = torch.cuda.is_available()
    out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out
