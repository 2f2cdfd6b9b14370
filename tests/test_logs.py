import os
import random
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np

from helpers import hpccl_cmd, run_cmd
from hpccl.core.logs import SCHEMA_VERSION, H5Log, read_h5


def test_roundtrip_tables_arrays_attrs(tmp_path):
    path = str(tmp_path / "log.h5")
    log = H5Log(path, "run", {"name": "x", "hostnames": ["a", "b"]})
    log.append("epochs", loss=1.5, task=0, note="first")
    log.append("epochs", loss=0.5, task=0, note="second")
    log.put("eval/top1", np.eye(2))
    log.set_attrs("buffer", bytes=10)
    log.flush()
    data = read_h5(path)
    assert data["attrs"]["schema_version"] == SCHEMA_VERSION
    assert data["attrs"]["status"] == "running"
    assert list(data["epochs/loss"]) == [1.5, 0.5]
    assert list(data["epochs/note"]) == ["first", "second"]
    assert np.array_equal(data["eval/top1"], np.eye(2))
    assert data["group_attrs"]["buffer"]["bytes"] == 10
    log.put("eval/top1", np.full((3, 3), 0.5))       # replaced whole, with another shape
    log.close()
    data = read_h5(path)
    assert data["attrs"]["status"] == "complete"
    assert data["eval/top1"].shape == (3, 3) and sorted(k for k in data if k.startswith("eval")) == ["eval/top1"]


def test_flush_appends_in_place_and_readers_see_every_flushed_row(tmp_path):
    path = str(tmp_path / "log.h5")
    log = H5Log(path, "rank")
    inode = None
    for i in range(3):
        log.append("epochs", loss=float(i))
        log.extend("timers", total=np.full(100, 0.01), task=np.full(100, i))
        log.set_attrs(tasks_completed=i)
        log.flush()
        # The first flush creates the columns (a rewrite); later ones append to the same file
        # and journal the changed attribute.
        inode = inode or os.stat(path).st_ino
        assert os.stat(path).st_ino == inode
        data = read_h5(path)                          # while the writer still has it open
        assert len(data["epochs/loss"]) == i + 1 and len(data["timers/total"]) == 100 * (i + 1)
        assert data["attrs"]["status"] == "running" and data["attrs"]["tasks_completed"] == i
    with h5py.File(path, "r", swmr=True) as f:        # raw: the attribute is still the first one
        assert f.attrs["tasks_completed"] == 0 and len(f["_attrs/value"]) == 2
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.h5"]
    with h5py.File(path, "r") as f:                   # closed cleanly: any reader opens it
        assert f.attrs["status"].decode() == "complete"   # fixed-length UTF-8: bytes in h5py
        assert f.attrs["tasks_completed"] == 2 and len(f["_attrs/value"]) == 0   # journal folded


def test_an_integer_column_that_gets_a_float_is_widened(tmp_path):
    path = str(tmp_path / "log.h5")
    log = H5Log(path, "run")
    log.append("stream", loss=1)
    log.flush()
    log.append("stream", loss=float("nan"))
    log.close()
    loss = read_h5(path)["stream/loss"]
    assert loss.dtype == np.float64 and loss[0] == 1 and np.isnan(loss[1])


def test_reopen_keeps_the_rows_asked_for_and_continues(tmp_path):
    path = str(tmp_path / "log.h5")
    log = H5Log(path, "run", {"name": "x"})
    for i in range(5):
        log.append("epochs", loss=float(i), task=i)
    log.put("eval/top1", np.eye(2))
    log.flush()           # not closed: like a run that was killed
    log2 = H5Log.reopen(path, keep_rows={"epochs/loss": 3, "epochs/task": 3})
    assert log2.lengths() == {"epochs/loss": 3, "epochs/task": 3}
    assert log2.attrs["name"] == "x"
    log2.append("epochs", loss=9.0, task=9)
    log2.close()
    data = read_h5(path)
    assert list(data["epochs/loss"]) == [0.0, 1.0, 2.0, 9.0] and list(data["epochs/task"]) == [0, 1, 2, 9]
    assert np.array_equal(data["eval/top1"], np.eye(2)) and data["attrs"]["status"] == "complete"
    assert not os.path.exists(path + ".reopen")


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from hpccl.core.logs import H5Log
    log = H5Log(sys.argv[1], "rank", {"rank": 0})
    log.flush()
    open(sys.argv[1] + ".ready", "w").close()
    i = 0
    while True:
        log.append("epochs", task=i, loss=float(i), note="epoch %d" % i + "." * (i % 40))
        log.extend("timers", total=np.full(50, 0.01), task=np.full(50, i))
        if i % 7 == 0:         # a flush that replaces an array rewrites the log
            log.put("eval/top1", np.full((1 + i % 4, 1 + i % 4), i / 10))
        log.set_attrs(tasks_completed=i)
        log.flush()
        i += 1
""")


def _start_writer(path, env=None):
    return subprocess.Popen([sys.executable, "-c", WRITER, path], env={**os.environ, **(env or {})})


def _assert_readable_and_consistent(path):
    data = read_h5(path)
    assert data["attrs"]["status"] == "running"       # killed: never marked complete
    def column(name):          # absent when the kill came before the first flush made it
        return list(data.get(name, []))
    n = len(column("epochs/task"))
    assert len(column("epochs/loss")) == n and len(column("epochs/note")) == n
    assert column("epochs/task") == list(range(n))
    assert column("epochs/note") == [f"epoch {i}" + "." * (i % 40) for i in range(n)]   # widened past 32 bytes
    assert len(column("timers/total")) == len(column("timers/task"))
    if n:
        # The flush that added row n-1 also journalled tasks_completed=n-1, after the rows: a
        # kill between the two leaves n-2.
        assert data["attrs"]["tasks_completed"] in (n - 1, n - 2)
        last_put = (n - 1) // 7 * 7          # the last flush that replaced the array
        assert data["eval/top1"].shape == (1 + last_put % 4,) * 2
        assert np.all(data["eval/top1"] == last_put / 10)
    return data


def test_sigkill_during_a_column_write_leaves_a_readable_log_without_the_torn_row(tmp_path):
    path = str(tmp_path / "rank.h5")
    # Each flush writes 5 columns (epochs/task, loss, note, timers/total, timers/task), the
    # second one by appending, then journals tasks_completed in 3 more: the 8th write is the
    # third column of the second flush.
    proc = _start_writer(path, {"HPCCL_INJECT_KILL_IN_LOG_WRITE": "8"})
    assert proc.wait(timeout=60) == -9
    assert not os.path.exists(path + ".new")           # the kill was in an append, not a rewrite
    data = _assert_readable_and_consistent(path)
    assert len(data["epochs/task"]) == 1 and data["attrs"]["tasks_completed"] == 0   # torn: dropped
    log = H5Log.reopen(path)                           # a resume continues the log
    log.append("epochs", task=1, loss=1.0, note="again")
    log.close("complete")
    assert list(read_h5(path)["epochs/task"]) == [0, 1]


def test_sigkill_during_a_rewrite_leaves_the_previous_log(tmp_path):
    path = str(tmp_path / "rank.h5")
    # Flush 8 (i = 7) replaces the array, so it rewrites: 5 column writes after the 5 of the
    # first flush and 8 for each of the six appending flushes in between (53), its third.
    proc = _start_writer(path, {"HPCCL_INJECT_KILL_IN_LOG_WRITE": str(5 + 6 * 8 + 3)})
    assert proc.wait(timeout=60) == -9
    assert os.path.exists(path + ".new")               # the unfinished rewrite, never renamed
    data = _assert_readable_and_consistent(path)
    assert len(data["epochs/task"]) == 7 and data["attrs"]["tasks_completed"] == 6
    H5Log.reopen(path).close("complete")               # a resume writes over the leftover
    assert not os.path.exists(path + ".new")


def test_sigkill_at_random_moments_always_leaves_a_readable_log(tmp_path):
    rng = random.Random(0)
    for trial in range(12):
        path = str(tmp_path / f"rank{trial}.h5")
        proc = _start_writer(path)
        deadline = time.time() + 60
        while not os.path.exists(path + ".ready"):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        _assert_readable_and_consistent(path)


def test_a_damaged_log_of_a_killed_writer_fails_analyze_in_seconds_instead_of_hanging(tmp_path):
    # A killed writer leaves its file open-for-SWMR-writing, so readers must open it in SWMR
    # mode, where HDF5 retries a failed metadata checksum for half an hour by default. A
    # damaged object header must end `hpccl analyze` with a clear error instead.
    path = str(tmp_path / "log.h5")
    proc = _start_writer(path, {"HPCCL_INJECT_KILL_IN_LOG_WRITE": "20"})
    assert proc.wait(timeout=60) == -9
    with h5py.File(path, "r", swmr=True) as f:
        header = h5py.h5o.get_info(f["epochs/loss"].id).addr
    with open(path, "r+b") as fh:         # flip 8 bytes inside the column's object header
        fh.seek(header + 20)
        damaged = bytes(b ^ 0xFF for b in fh.read(8))
        fh.seek(header + 20)
        fh.write(damaged)
    # HDF5's own retries would outlast this timeout by half an hour
    r = run_cmd(hpccl_cmd("analyze", str(tmp_path)), timeout=120)
    assert r.returncode != 0
    assert f"{path}: not a readable HDF5 log" in r.stderr and "checksum" in r.stderr
