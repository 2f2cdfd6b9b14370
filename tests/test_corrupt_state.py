"""Corrupt state is named, not raised (#28): a checkpoint, a run or rank log, or a sweep
manifest that fails to read ends `hpccl run --resume` / `hpccl analyze` with one paragraph
naming the file and what is wrong with it, exit code 2, no traceback, and the run directory
exactly as it was (no file added, moved or changed).

One real 2-rank rehearsal run with a checkpoint (written at task 0's end) is made per module;
every case damages one file of a copy of it."""

import hashlib
import json
import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from hpccl.cli import main
from hpccl.core.errors import CorruptFileError

from helpers import hpccl_cmd, mpirun_cmd, run_cmd, write_job


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("corrupt")
    job = write_job(base / "job.yaml", learner={"kind": "rehearsal"}, scenario={"num_tasks": 2},
                    train={"epochs": 1, "batch_size": 16, "lr": 0.025},
                    rehearsal={"candidates": 8, "representatives": 8}, checkpoint={"every": "task"})
    out = base / "run"
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    ckpt = out / "checkpoint"
    assert {p.name for p in ckpt.iterdir()} >= {"state.json", "model.pt", "rank00000.pt", "rank00001.pt",
                                                "buffer_rank00000.h5", "buffer_rank00001.h5"}
    return out


@pytest.fixture
def copy(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst, symlinks=True)
    return dst


def _tree(root) -> dict:
    """Every path under ``root`` with the hash of its content (None for a directory)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.relpath(os.path.join(dirpath, f), root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _refused(argv, capsys, root, named):
    """``hpccl ARGV`` in this process: exit 2, one paragraph naming ``named``, no traceback,
    ``root`` unchanged."""
    before = _tree(root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("hpccl: error: ") and err.count("\n") == 1, err    # one paragraph
    assert str(named) in err, err
    assert "Traceback" not in err
    assert _tree(root) == before
    return err


def _garble(path, how):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        if how == "empty":
            pass
        elif how == "truncated":
            f.write(data[:len(data) // 2])
        elif how == "random":
            f.write(np.random.default_rng(0).bytes(max(len(data), 64)))
        elif how == "text":
            f.write(b"not a checkpoint\n")


def _set_state(copy, **changes):
    path = copy / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    state.update(changes)
    for key, value in changes.items():
        if value is _DROP:
            del state[key]
    path.write_text(json.dumps(state))


_DROP = object()


# -- state.json: checked in the front-end, before any rank is launched -------------------------
@pytest.mark.parametrize("content, why", [
    ("", "empty"), ("{}", "lacks the key"), ("not json", "not valid JSON"), ("[1, 2]", "found list"),
    ('{"task": 1, ', "not valid JSON"), (b"\xff\xfe\x00garbage", "not UTF-8"),
])
def test_state_json_unreadable(copy, capsys, content, why):
    path = copy / "checkpoint" / "state.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    err = _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, path)
    assert why in err


@pytest.mark.parametrize("changes, key", [
    ({"world_size": "2"}, "world_size"), ({"world_size": 0}, "world_size"), ({"world_size": _DROP}, "world_size"),
    ({"task": 1.5}, "task"), ({"task": -1}, "task"), ({"task": 7}, "task"), ({"train_time_s": None}, "train_time_s"),
    ({"top1": [[1.0]]}, "top1"), ({"top5": "x"}, "top5"), ({"epoch": True}, "epoch"),
    ({"log_rows": {"epochs/loss": "one"}}, "log_rows"), ({"reason": 3}, "reason"),
])
def test_state_json_wrong_key(copy, capsys, changes, key):
    _set_state(copy, **changes)
    err = _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, copy / "checkpoint" / "state.json")
    assert repr(key) in err


# -- model.pt, rankNNNNN.pt, buffer_rankNNNNN.h5: their structure, also in the front-end ----------
@pytest.mark.parametrize("name", ["model.pt", "rank00000.pt", "rank00001.pt"])
@pytest.mark.parametrize("how", ["empty", "truncated", "random", "missing"])
def test_torch_file_unreadable(copy, capsys, name, how):
    path = copy / "checkpoint" / name
    if how == "missing":
        path.unlink()
    else:
        _garble(path, how)
    _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, path)


@pytest.mark.parametrize("how", ["empty", "truncated", "random", "missing", "no y", "x of another shape",
                                 "label out of range", "rng_state not JSON"])
def test_buffer_file_unreadable(copy, capsys, how):
    path = copy / "checkpoint" / "buffer_rank00001.h5"
    if how == "missing":
        path.unlink()
    elif how in ("empty", "truncated", "random"):
        _garble(path, how)
    else:
        with h5py.File(path, "r+") as f:
            if how == "no y":
                del f["y"]
            elif how == "x of another shape":
                x = f["x"][...]
                del f["x"]
                f["x"] = x.reshape(len(x), -1)[:, :3]
            elif how == "label out of range":
                y = f["y"][...]
                y[0] = 10 ** 6
                f["y"][...] = y
            else:
                f.attrs["rng_state"] = "{not json"
    err = _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, path)
    said = {"no y": "lacks 'y'", "x of another shape": "dataset 'x' has shape",
            "label out of range": "labels outside", "rng_state not JSON": "'rng_state'"}
    assert said.get(how, "") in err      # what is wrong, not only which file


def test_config_yaml_missing_is_named(copy, capsys):
    (copy / "config.yaml").unlink()
    _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, "config.yaml")


def test_torch_load_names_a_file_damaged_inside(tmp_path):
    """A damaged pickle inside an intact zip passes the front-end's structural check; the
    ranks' load names the file (hpccl's error, not an UnpicklingError)."""
    from hpccl.core import checkpoint
    path = tmp_path / "rank00000.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rank00000/data.pkl", b"\x80\x05garbage")
    with pytest.raises(CorruptFileError, match=str(path)):
        checkpoint.torch_load(str(path), map_location="cpu")


# -- the cases as a user meets them: the launcher, and ranks launched directly -----------
def test_resume_with_empty_state_fails_before_launching_ranks(copy):
    (copy / "checkpoint" / "state.json").write_text("{}")
    before = _tree(copy)
    r = run_cmd(hpccl_cmd("run", "--resume", str(copy), "-n", "2"), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "state.json" in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert "launching" not in r.stdout and "MPI_ABORT" not in r.stderr + r.stdout
    r = run_cmd(mpirun_cmd(2, ["run", "--resume", str(copy)]), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "state.json" in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert "MPI_ABORT" not in r.stderr + r.stdout
    assert _tree(copy) == before


# -- logs read by `hpccl analyze` -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["log.h5", "ranks/rank00001.h5"])
@pytest.mark.parametrize("how", ["empty", "truncated", "random", "text"])
def test_log_unreadable(copy, capsys, name, how):
    path = copy / name
    _garble(path, how)
    _refused(["analyze", str(copy)], capsys, copy, path)


@pytest.mark.parametrize("size", [100, 2000])      # h5py raised KeyError when an object header was cut
def test_log_cut_inside_its_headers(copy, capsys, size):
    path = copy / "ranks" / "rank00001.h5"
    os.truncate(path, size)
    _refused(["analyze", str(copy)], capsys, copy, path)


# -- sweep manifests read by `hpccl analyze SWEEP_DIR` -----------------------------------------------
def _sweep(copy):
    """A sweep directory whose one point is the run: the manifest as ``hpccl sweep`` writes it."""
    from hpccl.sched.sweeps import MANIFEST_VERSION, point_dir_name, write_manifest
    sweep = copy.parent / "sweep"
    sweep.mkdir()
    os.replace(copy, sweep / point_dir_name(2))
    write_manifest(str(sweep), {
        "schema_version": MANIFEST_VERSION, "kind": "scaling_sweep", "mode": "weak", "site": "local",
        "scheduler": "slurm", "job": "job.yaml", "name": "t", "created": "2026-01-01T00:00:00",
        "dry_run": False, "lr_scaling": "linear", "lr_scaling_cap": None, "warmup_epochs": 0,
        "base_lr": 0.025, "points": [{"gpus": 2, "nodes": 1, "ranks_per_node": 2, "batch_per_gpu": 16,
                                      "global_batch": 32, "lr_multiplier": 2.0, "lr": 0.05, "queue": None,
                                      "walltime": "00:10:00", "run_dir": point_dir_name(2), "job_id": None}]})
    return sweep


def test_sweep_manifest_reads(copy, capsys):
    sweep = _sweep(copy)
    assert main(["analyze", str(sweep)]) == 0, capsys.readouterr().err
    assert "weak scaling sweep" in capsys.readouterr().out


@pytest.mark.parametrize("damage, field", [
    (lambda m: m.pop("points"), "points"), (lambda m: m.pop("mode"), "mode"),
    (lambda m: m.update(mode="sideways"), "mode"), (lambda m: m.update(points={"gpus": 2}), "points"),
    (lambda m: m["points"][0].pop("gpus"), "gpus"), (lambda m: m["points"][0].pop("run_dir"), "run_dir"),
    (lambda m: m["points"][0].pop("nodes"), "nodes"), (lambda m: m["points"][0].update(gpus="2"), "gpus"),
    (lambda m: m["points"][0].update(batch_per_gpu=None), "batch_per_gpu"),
    (lambda m: m["points"].append(3), "points[1]"),
])
def test_sweep_manifest_field(copy, capsys, damage, field):
    sweep = _sweep(copy)
    path = sweep / "manifest.json"
    manifest = json.loads(path.read_text())
    damage(manifest)
    path.write_text(json.dumps(manifest))
    err = _refused(["analyze", str(sweep)], capsys, sweep, path)
    assert field in err


@pytest.mark.parametrize("content", ["", "[]", "{", b"\xff\x00\x01"])
def test_sweep_manifest_unreadable(copy, capsys, content):
    sweep = _sweep(copy)
    path = sweep / "manifest.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    _refused(["analyze", str(sweep)], capsys, sweep, path)
