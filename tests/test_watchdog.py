"""The communication watchdog (core/watchdog.py): only time spent waiting on other ranks
counts, one wait past the limit ends the job naming rank, host and what it waited for, and a
hanging abort does not keep the process alive."""

import threading
import time

from hpccl.core.watchdog import EXIT_HANG, Watchdog


class Ended:
    def __init__(self):
        self.codes, self.event = [], threading.Event()

    def __call__(self, code):
        self.codes.append(code)
        self.event.set()


def test_a_wait_past_the_limit_aborts_naming_rank_host_and_wait(capsys):
    abort = Ended()
    dog = Watchdog(0.3, rank=5, hostname="node7", abort=abort, exit_process=Ended())
    dog.where = "task 2, epoch 3"
    with dog.waiting("the gradient allreduce"):
        assert abort.event.wait(5)
    assert abort.codes == [EXIT_HANG]
    err = capsys.readouterr().err
    assert "rank 5 (node7)" in err and "the gradient allreduce (task 2, epoch 3)" in err
    assert "runtime.hang_timeout (0.3 s)" in err
    dog.stop()


def test_local_work_and_short_waits_never_fire():
    abort = Ended()
    dog = Watchdog(0.3, rank=0, hostname="h", abort=abort, exit_process=abort)
    time.sleep(0.8)                      # a long local phase: loading a task, writing a file
    for _ in range(8):                   # many waits, each shorter than the limit
        with dog.waiting("a rehearsal draw"):
            time.sleep(0.1)
    assert not abort.event.is_set()
    dog.stop()


def test_nested_waits_count_from_the_outermost():
    abort = Ended()
    dog = Watchdog(0.4, rank=0, hostname="h", abort=abort, exit_process=Ended())
    with dog.waiting("a checkpoint commit"):
        for _ in range(6):
            with dog.waiting("a barrier"):
                time.sleep(0.1)
    assert abort.event.is_set() and "a checkpoint commit" in dog.fired
    dog.stop()


def test_the_process_exits_even_if_the_abort_hangs(monkeypatch):
    import hpccl.core.watchdog as wd
    monkeypatch.setattr(wd, "ABORT_GRACE_S", 0.2)
    exited = Ended()
    hang = threading.Event()
    dog = Watchdog(0.2, rank=1, hostname="h", abort=lambda code: hang.wait(10), exit_process=exited)
    with dog.waiting("the epoch's metrics allreduce"):
        assert exited.event.wait(5)          # MPI_Abort never returned; the grace timer ended it
    assert exited.codes == [EXIT_HANG]
    hang.set()
    dog.stop()
