"""The rehearsal thread's failures: an error in its idle progress call or in its work must
fail the pending and later work at once, reach the training loop as the rank's error, and end
the job, never leave the loop waiting on a fetch that nobody runs. And the two modes of the
buffer, asynchronous and synchronous, draw exactly the same representatives."""

import json
import os
import sys
import threading
import time
from types import SimpleNamespace

import h5py
import pytest

from helpers import ROOT, run_cmd, write_job
from hpccl.continual.rehearsal.buffer import RehearsalBuffer, RehearsalThread
from hpccl.core.launch import mpirun_prefix

WORKER = os.path.join(os.path.dirname(__file__), "thread_worker.py")
FAULTY_RUN = os.path.join(os.path.dirname(__file__), "faulty_progress_run.py")
WAIT_S = 60        # a hang guard only: on a healthy machine every wait below ends in ms


class Boom(RuntimeError):
    pass


def failing_idle(after: int):
    calls = [0]

    def idle():
        calls[0] += 1
        if calls[0] > after:
            raise Boom("progress failed")
    return idle


def wait_for(condition, what):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {WAIT_S} s"
        time.sleep(0.005)


def test_an_idle_error_fails_the_next_work_and_is_raised_to_the_caller():
    thread = RehearsalThread(failing_idle(after=3), interval=1e-3)
    wait_for(lambda: thread.error is not None, "the idle call to fail")
    future = thread.submit(lambda: "never run")
    # Failed on submit, not queued behind a dead thread: result() must not wait.
    assert future.done()
    with pytest.raises(Boom, match="progress failed"):
        future.result(timeout=0)
    with pytest.raises(Boom):
        thread.raise_if_failed()
    thread.shutdown(wait=True)          # returns: the thread is gone, nothing to join on


def test_work_pending_when_the_thread_fails_fails_with_it():
    ran, release = [], threading.Event()

    def first():
        release.wait(WAIT_S)
        raise Boom("fetch failed")

    thread = RehearsalThread(None)
    pending = [thread.submit(first)] + [thread.submit(ran.append, i) for i in range(3)]
    release.set()
    for future in pending:
        with pytest.raises(Boom, match="fetch failed"):
            future.result(timeout=WAIT_S)
    assert ran == []                     # work queued behind the failure never ran
    with pytest.raises(Boom):
        thread.submit(ran.append, 9).result(timeout=0)
    assert ran == []


def test_a_healthy_thread_runs_work_in_order_between_idle_calls():
    idle_calls, done = [0], []

    def idle():
        idle_calls[0] += 1
    thread = RehearsalThread(idle, interval=1e-3)
    futures = [thread.submit(done.append, i) for i in range(50)]
    for f in futures:
        f.result(timeout=WAIT_S)
    wait_for(lambda: idle_calls[0] > 3, "idle calls between work")
    assert done == list(range(50)) and thread.error is None
    thread.shutdown(wait=True)
    assert not thread._thread.is_alive()


class RecordingShard:
    """Records the windows' free(): a collective, which a failing rank must skip (its peers are
    in another collective, or gone, and MPI_Abort follows)."""
    freed = False

    def free(self):
        self.freed = True


def buffer_around(thread, pending=None):
    """A RehearsalBuffer's life-cycle part alone, around a real thread: close() touches only
    the thread, the pending fetch and the shard's free() (the rest needs MPI ranks:
    thread_worker.py)."""
    buffer = RehearsalBuffer.__new__(RehearsalBuffer)
    group = object()
    buffer._pool, buffer._next, buffer.shard, buffer._group = thread, pending, RecordingShard(), group
    buffer.world = SimpleNamespace(node_comm=group)
    return buffer


def test_close_on_the_error_path_neither_waits_for_the_thread_nor_frees_the_windows():
    """The rank is failing while its thread is in a fetch that will never end (the owner it
    reads from is gone): close(ok=False) must return, so abort_on_error can end the job."""
    stuck, entered = threading.Event(), threading.Event()

    def fetch_from_a_dead_peer():
        entered.set()
        stuck.wait()
    thread = RehearsalThread(None)
    buffer = buffer_around(thread, thread.submit(fetch_from_a_dead_peer))
    try:
        assert entered.wait(WAIT_S)
        closing = threading.Thread(target=buffer.close, kwargs={"ok": False}, daemon=True)
        closing.start()
        closing.join(WAIT_S)
        assert not closing.is_alive(), f"close(ok=False) still waiting after {WAIT_S} s"
        assert not buffer.shard.freed
    finally:
        stuck.set()


def test_close_after_the_thread_failed_raises_its_error_and_frees_nothing():
    """A thread that failed after the last draw (the task's last idle call): the normal close
    must raise its error, not end the run as if the rank were healthy."""
    thread = RehearsalThread(failing_idle(after=3), interval=1e-3)
    wait_for(lambda: thread.error is not None, "the idle call to fail")
    buffer = buffer_around(thread)
    with pytest.raises(Boom, match="progress failed"):
        buffer.close(ok=True)
    assert not buffer.shard.freed and buffer._pool is None
    assert not thread._thread.is_alive()


def test_hpccl_run_ends_with_the_rank_error_when_a_progress_call_raises(tmp_path):
    """The command's own error path, not a stand-in loop: rank 1's progress() raises in a real
    2-rank job (hpccl.cli.main on each rank, as srun starts them). The job must end at once,
    with rank 1's error on stderr, a non-zero exit and rank 1's log marked failed; the hang
    watchdog is set far past the test's timeout, so only the error path itself can end it."""
    from hpccl.core.launch import mpirun_prefix
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2}, learner={"kind": "rehearsal"},
                    train={"epochs": 3, "batch_size": 16, "lr": 0.025},
                    rehearsal={"candidates": 4, "representatives": 4, "start_task": 0,
                               "ranks_per_node": 1, "transport": "messages"},
                    runtime={"backend": "torch", "hang_timeout": "30min"})
    out = tmp_path / "run"
    r = run_cmd(mpirun_prefix(2) + [sys.executable, FAULTY_RUN, "run", job, "--out", str(out)],
                timeout=180, env={"OMPI_MCA_btl": "tcp,self"}, cwd=ROOT)
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "rank 1 failed" in text and "injected fault in the rehearsal thread: progress() on rank 1" in text, text
    assert "in representatives" in text, text          # raised by the next draw
    with h5py.File(out / "ranks" / "rank00001.h5", "r") as f:
        assert f.attrs["status"] in (b"failed", "failed")


def run_worker(np_, scenario, mode, tmp_path):
    out = tmp_path / f"{scenario}-{mode}.json"
    r = run_cmd(mpirun_prefix(np_) + [sys.executable, WORKER, scenario, mode, str(out)],
                timeout=240, env={"OMPI_MCA_btl": "tcp,self"})
    return r, (json.loads(out.read_text()) if out.exists() else None)


# Synchronous mode inserts in the training loop itself: there the thread only idles.
@pytest.mark.parametrize("scenario, mode", [("idle-fails", "async"), ("idle-fails", "sync"),
                                            ("work-fails", "async")])
def test_a_failing_rehearsal_thread_ends_the_job_with_its_error(tmp_path, scenario, mode):
    """Rank 1's thread fails a few mini-batches in. Before the fix: asynchronous, rank 1's
    next draw waited for ever on a fetch nobody ran; synchronous, nothing noticed and the job
    finished, with nobody answering other nodes' reads of rank 1's shard."""
    r, result = run_worker(2, scenario, mode, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert result is None, "the job finished its loop although rank 1's thread had failed"
    assert "rank 1 failed" in out and "injected fault in the rehearsal thread" in out, out
    # Raised by the next draw, not only when the task ends: the loop must not train on for a
    # whole task with nobody answering this rank's shard.
    assert "in representatives" in out, out


def test_asynchronous_and_synchronous_buffers_draw_the_same_representatives(tmp_path):
    """One rank, so no other rank's timing enters: the overlap must change when the work is
    done, never what is drawn."""
    _, sync = run_worker(1, "clean", "sync", tmp_path)
    _, asyn = run_worker(1, "clean", "async", tmp_path)
    assert sync is not None and asyn is not None
    drawn = sync["drawn"][0]
    assert sum(len(d) for d in drawn) >= 3 * (len(drawn) - 2)    # drew r = 3 nearly every time
    assert asyn["drawn"] == sync["drawn"]


def test_two_ranks_with_healthy_threads_finish(tmp_path):
    """The control for the failure cases: the same loop, nothing injected, ends well."""
    r, result = run_worker(2, "clean", "async", tmp_path)
    assert r.returncode == 0 and result["finished"], r.stdout + r.stderr
    # Rank 0 drew samples that rank 1 inserted: reads of the other node were answered.
    assert any(v >= 100000 for d in result["drawn"][0] for v in d)
