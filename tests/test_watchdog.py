"""The communication watchdog (core/watchdog.py): only time spent waiting on other ranks
counts, one wait past the limit ends the job naming rank, host and what it waited for, and a
hanging abort does not keep the process alive.

The watchdog runs on a clock the tests move by hand (its ``clock`` argument): how long a
wait lasted is then exact, whatever the load of the machine; only the watchdog's own thread
runs in real time, and the tests wait for it to have looked."""

import threading
import time

from hpccl.core.watchdog import EXIT_HANG, Watchdog


class Ended:
    def __init__(self):
        self.codes, self.event = [], threading.Event()

    def __call__(self, code):
        self.codes.append(code)
        self.event.set()


class Clock:
    """Time that passes only when a test says; counts the watchdog thread's readings."""

    def __init__(self):
        self.now, self.reads = 1000.0, 0

    def __call__(self):
        if threading.current_thread().name == "hpccl-watchdog":
            self.reads += 1
        return self.now

    def advance(self, seconds):
        self.now += seconds


def let_it_look(clock, fired: threading.Event):
    """Until the watchdog has read the clock three times since the last advance (so one whole
    check saw the current time), or it fired. 30 s: a hang guard only."""
    target, deadline = clock.reads + 3, time.monotonic() + 30
    while clock.reads < target and not fired.is_set():
        assert time.monotonic() < deadline, "the watchdog thread never looked at the clock"
        time.sleep(0.005)


def test_a_wait_past_the_limit_aborts_naming_rank_host_and_wait(capsys):
    abort, clock = Ended(), Clock()
    dog = Watchdog(0.3, rank=5, hostname="node7", abort=abort, exit_process=Ended(), clock=clock)
    dog.where = "task 2, epoch 3"
    with dog.waiting("the gradient allreduce"):
        clock.advance(0.29)
        let_it_look(clock, abort.event)
        assert not abort.event.is_set()          # not yet at the limit
        clock.advance(0.02)
        assert abort.event.wait(30)
    assert abort.codes == [EXIT_HANG]
    err = capsys.readouterr().err
    assert "rank 5 (node7)" in err and "the gradient allreduce (task 2, epoch 3)" in err
    assert "runtime.hang_timeout (0.3 s)" in err
    dog.stop()


def test_local_work_and_short_waits_never_fire():
    abort, clock = Ended(), Clock()
    dog = Watchdog(0.3, rank=0, hostname="h", abort=abort, exit_process=abort, clock=clock)
    clock.advance(10)                    # a long local phase: loading a task, writing a file
    for _ in range(8):                   # many waits, each shorter than the limit, 2 s in all
        with dog.waiting("a rehearsal draw"):
            clock.advance(0.25)
            let_it_look(clock, abort.event)
        clock.advance(1)                 # training between draws
    assert not abort.event.is_set(), dog.fired
    dog.stop()


def test_nested_waits_count_from_the_outermost():
    abort, clock = Ended(), Clock()
    dog = Watchdog(0.4, rank=0, hostname="h", abort=abort, exit_process=Ended(), clock=clock)
    with dog.waiting("a checkpoint commit"):
        for _ in range(6):               # each shorter than the limit, 0.6 s in all
            with dog.waiting("a barrier"):
                clock.advance(0.1)
        assert abort.event.wait(30)
    assert "a checkpoint commit" in dog.fired
    dog.stop()


def test_the_process_exits_even_if_the_abort_hangs(monkeypatch):
    import hpccl.core.watchdog as wd
    monkeypatch.setattr(wd, "ABORT_GRACE_S", 0.2)
    exited = Ended()
    hang = threading.Event()
    dog = Watchdog(0.2, rank=1, hostname="h", abort=lambda code: hang.wait(10), exit_process=exited)
    with dog.waiting("the epoch's metrics allreduce"):
        assert exited.event.wait(30)         # MPI_Abort never returned; the grace timer ended it
    assert exited.codes == [EXIT_HANG]
    hang.set()
    dog.stop()
