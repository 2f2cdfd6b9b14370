"""ERM as an hpccl job: ``hpccl run`` on 2 MPI ranks, the log, ``hpccl analyze``, the LIBSVM
converter, config errors, plots."""
from __future__ import annotations

import bz2
import json
import os

import h5py
import numpy as np
import pytest
import yaml

from hpccl.config import job_from_dict
from hpccl.core.errors import ConfigError
from hpccl.core.logs import read_h5
from helpers import hpccl_cmd, run_cmd

LIBSVM_TRAIN = """\
+1 1:0.5 3:1.25
-1 2:1 4:-0.5
+1 1:1 2:0.25 5:2
-1 3:0.75
+1 4:1.5 5:-1
-1 1:-0.5 2:0.5
+1 2:2 # a comment
-1 1:0.1 5:0.25
"""
LIBSVM_TEST = "+1 1:0.3 6:1\n-1 2:0.2\n"


def _job(tmp_path, data, **erm):
    spec = {"name": "ermt", "kind": "erm", "seed": 0, "data": data,
            "erm": {"solver": "dasvrda", "l1": 1e-4, "l2": 1e-3, "epochs": 300,
                    "target_subopt": 1e-8, "reference_cache": False, **erm},
            "log": {"dir": str(tmp_path), "progress": "lines"}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("erm_run")
    job = _job(tmp, {"builtin": "breast_cancer"})
    out = str(tmp / "run")
    proc = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", out), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_run_two_ranks_log_and_target(bc_run):
    out, proc = bc_run
    assert "stage    1: P " in proc.stdout and "erm dasvrda:" in proc.stdout
    assert "stop: target" in proc.stdout
    for f in ("config.yaml", "log.h5", "ranks/rank00000.h5", "ranks/rank00001.h5"):
        assert os.path.isfile(os.path.join(out, f)), f
    log = read_h5(os.path.join(out, "log.h5"))
    a = log["attrs"]
    assert a["job_kind"] == "erm" and a["status"] == "complete" and a["kind"] == "run"
    assert int(a["schema_version"]) == 1 and "erm:" in a["config_yaml"] and json.loads(a["versions"])
    assert int(a["world_size"]) == 2 and json.loads(a["shard_sizes"]) == [285, 284]
    assert int(a["n"]) == 569 and int(a["dim"]) == 30 and a["solver"] == "dasvrda"
    cols = ("stage", "objective", "subopt", "passes", "time_s", "elapsed_s", "allreduces",
            "allreduce_bytes")
    st = {c: log[f"stages/{c}"] for c in cols}
    k = len(st["stage"])
    assert k == int(a["stages_completed"]) + 1 and k > 3
    assert all(len(v) == k for v in st.values())
    assert np.all(np.diff(st["passes"]) > 0) and np.all(np.diff(st["allreduces"]) > 0)
    assert np.all(np.diff(st["allreduce_bytes"]) > 0) and np.all(np.diff(st["time_s"]) >= 0)
    np.testing.assert_allclose(st["subopt"], st["objective"] - a["f_star"])
    # the reached suboptimality is below the target, and P* is a certified lower bound
    assert 0 <= a["final_subopt"] <= 1e-8 and st["subopt"][-1] <= 1e-8
    assert a["stop_reason"] == "target" and a["reference_gap_bound"] <= 1e-10
    assert st["subopt"].min() >= -1e-12
    assert log["solution/x"].shape == (30,) and a["train_accuracy"] > 0.95
    r1 = read_h5(os.path.join(out, "ranks", "rank00001.h5"))["attrs"]
    assert int(r1["rows"]) == 284 and int(r1["offset"]) == 285


def _cli(capsys, *args):
    """The hpccl command in-process (no interpreter start-up): (exit code, stdout, stderr)."""
    from hpccl.cli import main
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_analyze_text_and_json(bc_run, tmp_path, capsys):
    out, _ = bc_run
    code, stdout, err = _cli(capsys, "analyze", out, "--format", "json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["job_kind"] == "erm" and s["solver"] == "dasvrda" and s["world_size"] == 2
    r = s["reached"]
    assert r["0.0001"]["passes"] <= r["1e-06"]["passes"] <= r["1e-08"]["passes"] == pytest.approx(s["passes"])
    assert s["final_subopt"] <= 1e-8
    code, text, err = _cli(capsys, "analyze", out, out)
    assert code == 0, err
    assert "solver dasvrda" in text and "to P-P* <= 1e-08:" in text and "final: P" in text
    # two runs: a comparison table with a row per run
    assert "passes 1e-08" in text and text.count(os.path.basename(out) + "  ") >= 2
    from hpccl.analysis.report import summarize
    from hpccl.erm.report import plot_erm
    paths = plot_erm([summarize(out)], str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["erm_subopt_vs_passes.png", "erm_subopt_vs_time.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)


def test_libsvm_convert_round_trip_and_shards(tmp_path, capsys):
    from sklearn.datasets import load_svmlight_file
    from hpccl.config import DataConfig
    from hpccl.erm.data import load_shard

    src = tmp_path / "tiny.bz2"
    src.write_bytes(bz2.compress(LIBSVM_TRAIN.encode()))
    (tmp_path / "tiny.t").write_text(LIBSVM_TEST)
    out = tmp_path / "tiny.h5"
    code, stdout, err = _cli(capsys, "data", "convert", "libsvm", "--src", str(src), "--test",
                             str(tmp_path / "tiny.t"), "--out", str(out))
    assert code == 0, err
    assert "6 features" in stdout and "sparse CSR" in stdout
    X_ref, y_ref = load_svmlight_file(str(src), n_features=6, zero_based=False)
    with h5py.File(out, "r") as f:
        assert f.attrs["num_features"] == 6 and f.attrs["num_classes"] == 2
        g = f["train/x"]
        assert g.attrs["encoding-type"] == "csr_matrix" and list(g.attrs["shape"]) == [8, 6]
        import scipy.sparse as sp
        X = sp.csr_matrix((g["data"][...], g["indices"][...], g["indptr"][...]), shape=(8, 6))
        np.testing.assert_array_equal(X.toarray(), X_ref.toarray())
        np.testing.assert_array_equal(f["train/y"][...], (y_ref > 0).astype(np.int64))
        assert f["test/y"][...].tolist() == [1, 0] and list(f["test/x"].attrs["shape"]) == [2, 6]
    # ERM shards of the converted file and of the LIBSVM file itself agree, unequal sizes (3, 3, 2)
    # (the text file alone has 5 features; the converted one 6, the largest index of train+test)
    erm = job_from_dict({"name": "x", "kind": "erm", "data": {"path": str(out)}}).erm
    for path, d in ((out, 6), (src, 5)):
        rows, labels = [], []
        for rank in range(3):
            sh = load_shard(DataConfig(path=str(path)), erm, rank, 3)
            assert sh.n == 8 and sh.dim == d and sh.offset == [0, 3, 6][rank]
            rows.append(sh.X.toarray())
            labels.append(sh.y)
        np.testing.assert_array_equal(np.vstack(rows), X_ref.toarray()[:, :d])
        np.testing.assert_array_equal(np.concatenate(labels), y_ref)


def test_run_converted_sparse_file_matches_reference(tmp_path):
    """hpccl run on the CSR HDF5 file (2 ranks): P* equals the one computed in-process on the
    LIBSVM text, and the solve reaches the target."""
    from hpccl.erm import Problem, reference_optimum
    from hpccl.data.libsvm import read_libsvm

    rng = np.random.default_rng(0)
    lines = []
    for i in range(300):
        idx = np.sort(rng.choice(20, size=5, replace=False)) + 1
        w = np.sin(idx)
        label = 1 if w.sum() + 0.3 * rng.standard_normal() > 0 else 0
        lines.append(f"{label} " + " ".join(f"{j}:{rng.uniform(0.1, 1):.3f}" for j in idx))
    src = tmp_path / "syn.txt"
    src.write_text("\n".join(lines) + "\n")
    h5 = tmp_path / "syn.h5"
    from hpccl.data.convert import convert_libsvm
    convert_libsvm(str(src), str(h5))
    job = _job(tmp_path, {"path": str(h5)}, solver="katyusha", l2=1e-2, step_scale=2.0)
    out = str(tmp_path / "run")
    proc = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", out), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a = read_h5(os.path.join(out, "log.h5"))["attrs"]
    X, y, n, _ = read_libsvm(str(src))
    ref = reference_optimum(Problem(X, y, loss="logistic", l1=1e-4, l2=1e-2))
    assert a["data_format"] == "hdf5-csr" and int(a["n"]) == 300
    assert a["f_star"] == pytest.approx(ref.f_star, rel=1e-11, abs=1e-13)
    assert a["final_subopt"] <= 1e-8 and a["solver"] == "katyusha"


@pytest.mark.parametrize("key,value,expected", [
    ("solver", "dasvrdaa", "key 'erm.solver': expected one of 'dasvrda'"),
    ("l1", -1e-4, "key 'erm.l1': expected a number >= 0, found -0.0001"),
    ("l2", -1.0, "key 'erm.l2'"),
    ("epochs", 0, "key 'erm.epochs'"),
    ("options", {"restrat": "gradient"}, "unknown key 'erm.options.restrat' for solver 'dasvrda'"),
])
def test_config_errors_name_the_key(key, value, expected):
    with pytest.raises(ConfigError) as e:
        job_from_dict({"name": "x", "kind": "erm", "data": {"builtin": "breast_cancer"},
                       "erm": {key: value}}, source="job.yaml")
    assert expected in str(e.value) and str(e.value).startswith("job.yaml:")
    if key == "solver":
        assert "Did you mean 'dasvrda'?" in str(e.value)


def test_config_error_from_cli(tmp_path, capsys):
    job = _job(tmp_path, {"builtin": "breast_cancer"})
    code, _, err = _cli(capsys, "validate", job, "--set", "erm.solver=adam")
    assert code == 2 and "key 'erm.solver'" in err and "Traceback" not in err
    code, _, err = _cli(capsys, "run", job, "--set", "erm.l1=-1")   # fails before any rank starts
    assert code == 2 and "key 'erm.l1'" in err
    with pytest.raises(ConfigError, match="erm.target_subopt"):
        job_from_dict({"name": "x", "kind": "erm", "data": {"builtin": "breast_cancer"},
                       "erm": {"reference": False}})
