"""Corrupt state is named, not raised (#28): a checkpoint, a run or rank log, or a sweep
manifest that fails to read ends `hpccl run --resume` / `hpccl analyze` with one paragraph
naming the file and what is wrong with it, exit code 2, no traceback, and the run directory
exactly as it was (no file added, moved or changed).

One real 2-rank rehearsal run with a checkpoint (written at task 0's end) is made per module,
stopped by a failure injected in task 1 so that it is resumable; every case damages one file
of a copy of it."""

import hashlib
import json
import os
import re
import shutil
import sys
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
                    rehearsal={"candidates": 8, "representatives": 8},
                    checkpoint={"every": "task", "async": False})
    out = base / "run"
    # rank 1 fails in task 1: a run left 'running' with task 0's checkpoint, as one that
    # was killed; a complete run is refused a resume before its files are looked at
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=240,
                env={"HPCCL_INJECT_FAILURE": "rank=1,task=1"})
    assert r.returncode == 1 and "injected" in r.stdout + r.stderr, r.stdout + r.stderr
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


# -- a torch file whose zip is whole but whose pickle is not: parsed (not run) in the front-end ----
def _rewrite_zip(path, pickle_bytes=None, drop=None):
    """``path`` as a zip again (CRCs correct) with its data.pkl replaced or an entry dropped."""
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            if drop and name.endswith(drop):
                continue
            z.writestr(name, pickle_bytes if pickle_bytes is not None and name.endswith("data.pkl") else data)
    return entries


def _pickle_of(path):
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


@pytest.mark.parametrize("name, damage, said", [
    ("rank00001.pt", "garbage", "not a pickle stream"),
    ("model.pt", "garbage", "not a pickle stream"),
    ("model.pt", "cut", "not a pickle stream"),
    ("model.pt", "a list", "top-level object is not a dict"),
    ("model.pt", "unknown class", "OrderedDixt"),
    ("model.pt", "storage dropped", "data/0"),
    ("rank00000.pt", "no 'fit'", "'fit'"),
])
def test_torch_pickle_damaged_inside_an_intact_zip(copy, capsys, name, damage, said):
    """CRCs agree (the zip was rewritten around the damage), so only reading the pickle finds
    it; before, the ranks launched and died with exit 1 and an MPI abort."""
    import pickle
    path = copy / "checkpoint" / name
    data = _pickle_of(path)
    if damage == "garbage":
        _rewrite_zip(path, b"\x80\x05garbage")
    elif damage == "cut":
        _rewrite_zip(path, data[:len(data) // 2])
    elif damage == "a list":
        _rewrite_zip(path, pickle.dumps([1, 2], protocol=2))
    elif damage == "unknown class":
        assert b"OrderedDict" in data
        _rewrite_zip(path, data.replace(b"OrderedDict", b"OrderedDixt"))
    elif damage == "storage dropped":
        _rewrite_zip(path, drop="/data/0")
    else:
        import torch
        local = torch.load(path, weights_only=False)
        del local["fit"]
        torch.save(local, path)
    err = _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, path)
    assert said in err


def test_pickle_check_passes_every_torch_save(tmp_path):
    """No false alarm: what torch.save writes for the state hpccl keeps (tensors of every
    dtype, views sharing a storage, optimizer state, numpy and torch RNG states, containers)
    at every pickle protocol passes the check."""
    import collections

    import torch

    from hpccl.core.checkpoint_check import check_torch_file
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    t = torch.randn(6, 6)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
             "tensors": [t, t[1:3], t.T, t.half(), t.bfloat16(), t > 0, t.long(), t.double(), t.to(torch.int8),
                         torch.randn(3, dtype=torch.cfloat), torch.empty(0), torch.tensor(1.0)],
             "rng": np.random.default_rng(0).bit_generator.state, "torch_rng": torch.get_rng_state(),
             "numpy": np.arange(5), "other": [None, {1, 2}, frozenset([3]), b"x" * 300, 2 ** 70, 1.5j, "é",
                                              collections.OrderedDict(a=1), torch.Size([2]), torch.float16]}
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pt"
        torch.save(state, path, pickle_protocol=protocol)
        check_torch_file(str(path), "state")


# -- the logs a resume reopens: checked in the front-end too -----------------------------------------
def _empty_hdf5(path):
    h5py.File(path, "w").close()


def _edit_log_attrs(path, edit):
    """``edit(attrs)`` on a log's root attributes. The run's writer was killed, so its logs are
    marked open for SWMR writing (h5py refuses 'r+'): rewritten whole, as a resume does."""
    from hpccl.core.logs import H5Log
    log = H5Log.reopen(str(path))
    edit(log.attrs)
    log.flush(rewrite=True)
    log._file.close()


@pytest.mark.parametrize("name, how", [(name, how) for name in ("log.h5", "ranks/rank00001.h5")
                                       for how in ("empty HDF5", "no kind", "random", "text")]
                         + [("log.h5", "missing")])     # a rank log missing: that rank starts a new one
def test_resume_with_a_damaged_log(copy, capsys, name, how):
    """Before, H5Log.reopen met these in the ranks: exit 1 and an MPI abort."""
    path = copy / name
    if how == "empty HDF5":
        _empty_hdf5(path)
    elif how == "no kind":
        _edit_log_attrs(path, lambda a: a.pop("kind"))
    elif how == "missing":
        path.unlink()
    else:
        _garble(path, how)
    err = _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, path)
    said = {"empty HDF5": "attribute 'kind' is missing", "no kind": "attribute 'kind' is missing",
            "missing": "missing", "random": "not a readable HDF5 log", "text": "not a readable HDF5 log"}
    assert said[how] in err


def test_resume_of_fewer_ranks_does_not_read_a_retired_rank_log(copy, capsys, monkeypatch):
    """Resumed on 1 rank, rank 1's log is only moved aside (retire_rank_files), never reopened:
    its damage does not stop the resume. Only the check is run here (no launch)."""
    from hpccl.core.logs import check_reopen
    _garble(copy / "ranks" / "rank00001.h5", "random")
    check_reopen(str(copy), 1)
    with pytest.raises(CorruptFileError, match="rank00001.h5"):
        check_reopen(str(copy), 2)


def test_direct_launch_resume_with_a_damaged_rank_log(copy):
    """srun/mpiexec launching the ranks directly: rank 0 checks the logs and every rank exits 2."""
    path = copy / "ranks" / "rank00000.h5"
    _empty_hdf5(path)
    before = _tree(copy)
    r = run_cmd(mpirun_cmd(2, ["run", "--resume", str(copy)]), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(path) in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert "MPI_ABORT" not in r.stderr + r.stdout
    assert _tree(copy) == before


# -- every kind's analysis on a log that is HDF5 but not an hpccl log --------------------------------
@pytest.mark.parametrize("kind", ["continual", "megabatch", "erm", "online_rnn"])
@pytest.mark.parametrize("name, damage, said", [
    ("ranks/rank00001.h5", "empty", "not an hpccl rank log"),
    ("ranks/rank00000.h5", "no rank", "attribute 'rank' is missing"),
    ("log.h5", "empty", "not an hpccl run log"),
])
def test_analyze_a_log_that_is_not_a_log(small_runs, tmp_path, capsys, kind, name, damage, said):
    """Before: KeyError 'rank' in every kind's summary (hpccl analyze and open_run); an empty
    log.h5 was called 'schema version -1'. hpccl status shows the run as damaged."""
    from hpccl.analysis import open_run
    run = tmp_path / "run"
    shutil.copytree(small_runs[kind], run)
    path = run / name
    if damage == "empty":
        _empty_hdf5(path)
    else:
        with h5py.File(path, "r+") as f:
            del f.attrs["rank"]
    err = _refused(["analyze", str(run)], capsys, run, path)
    assert said in err
    _refused(["analyze", "--format", "json", str(run)], capsys, run, path)
    with pytest.raises(CorruptFileError, match=str(path)):
        open_run(run)
    if name == "log.h5":
        assert main(["status", str(run)]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert "damaged" in line and "not an hpccl run log" in line, line


@pytest.mark.parametrize("damage", ["no l1", "no stages"])
def test_analyze_erm_without_a_number_its_text_shows(small_runs, tmp_path, capsys, damage):
    """An ERM run killed before its first stage has no stages table: its text summary says '-'
    where it formatted None (a TypeError before)."""
    run = tmp_path / "run"
    shutil.copytree(small_runs["erm"], run)
    with h5py.File(run / "log.h5", "r+") as f:
        if damage == "no l1":
            del f.attrs["l1"]
        else:
            del f["stages"]
    assert main(["analyze", str(run)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert ("l1 -," if damage == "no l1" else "final: P -,") in out, out


# -- other files hpccl reads back ---------------------------------------------------------------------
@pytest.mark.parametrize("damage, said", [
    (lambda a: a.pop("world_size"), "'world_size' is missing"),
    (lambda a: a.update(world_size="two"), "'world_size' is 'two'"),
    (lambda a: a.pop("config_yaml"), "'config_yaml' is missing"),
    (lambda a: a.update(config_yaml="{: ["), "'config_yaml' is not YAML"),
    (lambda a: a.update(config_yaml="name: x"), "learner"),
])
def test_model_from_a_damaged_run_log(copy, capsys, damage, said):
    """hpccl model RUN calibrates from the run's log attributes (KeyError, YAML's ParserError
    or TypeError before)."""
    path = copy / "log.h5"
    _edit_log_attrs(path, damage)
    err = _refused(["model", str(copy), "--gpus", "1,2"], capsys, copy, path)
    assert said in err


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01", b"\xc3("])
def test_model_baseline_file_not_text(tmp_path, capsys, content):
    path = tmp_path / "baseline.yaml"
    path.write_bytes(content)
    err = _refused(["model", "--baseline-file", str(path), "--site", "polaris", "--gpus", "1,2"],
                   capsys, tmp_path, path)
    assert "not UTF-8" in err


@pytest.mark.parametrize("submission, job_ids, said", [
    ("[1]", b"12\n", "submission.json is not an object"),
    ('{"job_id": "1", "scheduler": "slurm"}', b"\xff\xfe\n", "job_ids.txt unreadable"),
])
def test_status_with_a_damaged_submission_record(tmp_path, capsys, submission, job_ids, said):
    """hpccl status shows many runs: a damaged record of a submitted run (no log yet) is its
    note, not a traceback (TypeError, UnicodeDecodeError before)."""
    run = tmp_path / "queued"
    run.mkdir()
    (run / "submission.json").write_text(submission)
    (run / "job_ids.txt").write_bytes(job_ids)
    before = _tree(run)
    assert main(["status", str(run)]) == 0
    assert said in capsys.readouterr().out
    assert _tree(run) == before


# -- a buffer file damaged inside its samples: each sample carries a hash ----------------------------
def _flip_a_sample_bit(path, row=0):
    with h5py.File(path, "r") as f:
        offset = f["x"].id.get_offset() + row * f["x"][0].nbytes     # contiguous: raw bytes on disk
    with open(path, "r+b") as fh:
        fh.seek(offset + 5)
        byte = fh.read(1)[0]
        fh.seek(offset + 5)
        fh.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("how", ["a bit flipped", "relabelled"])
def test_buffer_sample_damaged_inside(copy, capsys, how):
    """Headers and shapes intact, one sample's bytes (or its label, within the class range)
    changed: found by the samples' hashes in the front-end (a small buffer). Before, the ranks
    resumed training on the damaged sample."""
    path = copy / "checkpoint" / "buffer_rank00001.h5"
    if how == "a bit flipped":
        _flip_a_sample_bit(path, row=1)
    else:
        with h5py.File(path, "r+") as f:
            y = f["y"][...]
            y[1] = (y[1] + 1) % f.attrs["num_classes"]
            f["y"][...] = y
    err = _refused(["run", "--resume", str(copy), "-n", "2"], capsys, copy, path)
    assert "do not match the hash" in err and "row 1" in err


def test_ranks_name_a_buffer_damaged_inside(copy):
    """Above VERIFY_SAMPLES_BYTES only the ranks look at the samples, as they read them: the
    shard's load, and a resume on another number of ranks (read_inventory, read_taken), name
    the file instead of raising h5py's error or training on it."""
    from hpccl.continual.rehearsal import redistribute as rd
    from hpccl.continual.rehearsal.shard import ShardLayout
    path = copy / "checkpoint" / "buffer_rank00001.h5"
    _flip_a_sample_bit(path, row=2)
    with h5py.File(path, "r") as f:
        layout = ShardLayout(int(f.attrs["num_classes"]), int(f.attrs["slots_per_class"]),
                             tuple(int(s) for s in f.attrs["sample_shape"]))
    # A Shard lives in an MPI window: loaded in a process of its own, since MPI initialised
    # in pytest's process would leak into every later test's `hpccl run -n N` (conftest).
    load = (
        "import sys, numpy as np\n"
        "from hpccl.continual.rehearsal.shard import Shard, ShardLayout\n"
        "from hpccl.core.errors import CorruptFileError\n"
        "from hpccl.core.runtime import mpi\n"
        "comm = mpi().COMM_SELF\n"
        f"layout = ShardLayout({layout.num_classes}, {layout.slots}, {layout.sample_shape!r})\n"
        "shard = Shard(comm, comm, layout, np.random.default_rng(0))\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        shard.load(path)\n"
        "        print('loaded', path)\n"
        "    except CorruptFileError as e:\n"
        "        print('refused', e)\n"
        "shard.free()\n")
    whole = copy / "checkpoint" / "buffer_rank00000.h5"
    r = run_cmd([sys.executable, "-c", load, str(path), str(whole)], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    refused, loaded = r.stdout.strip().splitlines()
    assert re.match(f"refused .*{re.escape(str(path))}.*row 2", refused), r.stdout
    assert loaded == f"loaded {whole}", r.stdout                       # a whole one loads
    with pytest.raises(CorruptFileError, match=f"{path}.*row 2"):
        rd.read_taken([str(path)], {0: np.arange(4)})
    assert len(rd.read_taken([str(path)], {0: np.arange(3, 5)})[1]) == 2     # rows not damaged
    _garble(path, "random")
    with pytest.raises(CorruptFileError, match=str(path)):
        rd.read_inventory([str(path)], layout.num_classes, layout.sample_shape)
