import os
import random
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np

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
    inode = os.stat(path).st_ino
    for i in range(3):
        log.append("epochs", loss=float(i))
        log.extend("timers", total=np.full(100, 0.01), task=np.full(100, i))
        log.flush()
        assert os.stat(path).st_ino == inode          # the same file, not a rewritten copy
        data = read_h5(path)                          # while the writer still has it open
        assert len(data["epochs/loss"]) == i + 1 and len(data["timers/total"]) == 100 * (i + 1)
        assert data["attrs"]["status"] == "running"
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.h5"]
    with h5py.File(path, "r") as f:                   # closed cleanly: any reader opens it
        assert f.attrs["status"].decode() == "complete"   # fixed-length UTF-8: bytes in h5py


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
    return data


def test_sigkill_during_a_column_write_leaves_a_readable_log_without_the_torn_row(tmp_path):
    path = str(tmp_path / "rank.h5")
    # Each flush writes 5 columns (epochs/task, loss, note, timers/total, timers/task): the
    # 13th write is the third column of the third flush.
    proc = _start_writer(path, {"HPCCL_INJECT_KILL_IN_LOG_WRITE": "13"})
    assert proc.wait(timeout=60) == -9
    data = _assert_readable_and_consistent(path)
    assert len(data["epochs/task"]) == 2               # the third row was torn: dropped
    log = H5Log.reopen(path)                           # a resume continues the log
    log.append("epochs", task=2, loss=2.0, note="again")
    log.close("complete")
    assert list(read_h5(path)["epochs/task"]) == [0, 1, 2]


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
