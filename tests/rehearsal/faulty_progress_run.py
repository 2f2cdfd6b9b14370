"""``hpccl`` itself (hpccl.cli.main, the command's whole error path: the session's close, the
learner's and the buffer's ``close(ok=False)``, abort_on_error), on every rank under mpirun,
with rank 1's idle progress call made to raise once rank 1 has drawn representatives, as an
MPI error in ``progress()`` would. Tied to the first draw, not to a count of calls, so that
the fault always comes with draws still ahead (a count of idle calls, which tick every
millisecond, once fell after task 0's last draw on a loaded machine). Started by
test_rehearsal_thread.py.

Usage: faulty_progress_run.py HPCCL_ARGS..."""

import sys

from hpccl.cli import main
from hpccl.continual.rehearsal.buffer import RehearsalBuffer
from hpccl.continual.rehearsal.windows import ShardWindows
from hpccl.core.mpi import mpi

FAULT = "injected fault in the rehearsal thread"

rank = mpi().COMM_WORLD.Get_rank()
if rank == 1:
    progress, representatives, drawn = ShardWindows.progress, RehearsalBuffer.representatives, [False]

    def failing_progress(self):
        if drawn[0]:
            raise RuntimeError(f"{FAULT}: progress() on rank {rank}")
        return progress(self)

    def noting_representatives(self, *args, **kwargs):
        drawn[0] = True
        return representatives(self, *args, **kwargs)
    # Before the buffer exists: its thread binds the method when it starts.
    ShardWindows.progress = failing_progress
    RehearsalBuffer.representatives = noting_representatives

sys.exit(main(sys.argv[1:]))
