"""``hpccl`` itself (hpccl.cli.main, the command's whole error path: the session's close, the
learner's and the buffer's ``close(ok=False)``, abort_on_error), on every rank under mpirun,
with rank 1's idle progress call made to raise a few calls in, as an MPI error in
``progress()`` would. Started by test_rehearsal_thread.py.

Usage: faulty_progress_run.py HPCCL_ARGS..."""

import sys

from hpccl.cli import main
from hpccl.continual.rehearsal.windows import ShardWindows
from hpccl.core.mpi import mpi

FAULT = "injected fault in the rehearsal thread"

rank = mpi().COMM_WORLD.Get_rank()
if rank == 1:
    progress, calls = ShardWindows.progress, [0]

    def failing_progress(self):
        calls[0] += 1
        if calls[0] > 20:
            raise RuntimeError(f"{FAULT}: progress() on rank {rank}")
        return progress(self)
    # Before the buffer exists: its thread binds the method when it starts.
    ShardWindows.progress = failing_progress

sys.exit(main(sys.argv[1:]))
