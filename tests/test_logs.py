import h5py
import numpy as np

from hpccl.logs import SCHEMA_VERSION, H5Log, read_h5


def test_roundtrip_tables_arrays_attrs(tmp_path):
    path = str(tmp_path / "log.h5")
    log = H5Log(path, "run", {"name": "x", "hostnames": ["a", "b"]})
    log.append("epochs", loss=1.5, task=0)
    log.append("epochs", loss=0.5, task=0)
    log.put("eval/top1", np.eye(2))
    log.set_attrs("buffer", bytes=10)
    log.flush()
    data = read_h5(path)
    assert data["attrs"]["schema_version"] == SCHEMA_VERSION
    assert data["attrs"]["status"] == "running"
    assert list(data["epochs/loss"]) == [1.5, 0.5]
    assert np.array_equal(data["eval/top1"], np.eye(2))
    assert data["group_attrs"]["buffer"]["bytes"] == 10
    log.close()
    assert read_h5(path)["attrs"]["status"] == "complete"


def test_flush_replaces_atomically_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "log.h5")
    log = H5Log(path, "run")
    for i in range(3):
        log.append("epochs", loss=float(i))
        log.flush()
        with h5py.File(path, "r") as f:  # readable after every flush, with every record so far
            assert len(f["epochs/loss"]) == i + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.h5"]
