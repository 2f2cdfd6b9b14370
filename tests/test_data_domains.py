"""Sizes and attributes checked against the data they meet (#28): a batch larger than all of a
scenario's training data, and dataset attributes of the wrong type, are refused before any
rank starts, naming the file and key (exit 2); values inside the domain still pass."""

import os
import shutil

import h5py
import numpy as np
import pytest

from hpccl.cli import main
from hpccl.data.datasets import materialize_builtin

from helpers import ROOT

QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")


def validate(capsys, *args):
    code = main(["validate", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_a_batch_larger_than_all_training_data_is_refused_and_the_largest_allowed_passes(capsys):
    with h5py.File(materialize_builtin("digits"), "r") as f:
        n_train = len(f["train/y"])            # quickstart trains on every class of digits
    code, err = validate(capsys, QUICKSTART, "--set", "train.batch_size=1000000000")
    assert code == 2 and "key 'train.batch_size': expected at most the training samples" in err, err
    assert f"together ({n_train} in" in err
    code, err = validate(capsys, QUICKSTART, "--set", f"train.batch_size={n_train + 1}",
                         "--set", f"rehearsal.candidates=1")
    assert code == 2, err
    code, err = validate(capsys, QUICKSTART, "--set", f"train.batch_size={n_train}")
    assert code == 0, err


def test_a_run_with_such_a_batch_ends_before_any_rank_starts(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", QUICKSTART, "--set", "train.batch_size=1000000000", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and not out.exists(), err


@pytest.mark.parametrize("value, shown", [(10.5, "10.5"), ("10", "'10'"), (np.array([10, 10]), "array"),
                                          (True, "True"), (0, "0")])
def test_a_dataset_attribute_of_the_wrong_type_is_named(tmp_path, capsys, value, shown):
    data = tmp_path / "digits.h5"
    shutil.copy(materialize_builtin("digits"), data)
    with h5py.File(data, "a") as f:
        f.attrs["num_classes"] = value
    job = tmp_path / "job.yaml"
    job.write_text(open(QUICKSTART).read().replace("builtin: digits", f"path: {data}"))
    assert f"path: {data}" in job.read_text()
    code, err = validate(capsys, str(job))
    assert code == 2 and f"dataset file {str(data)!r}: root attribute 'num_classes' is" in err, err
    assert shown in err and "expected an integer >= 1" in err


def test_a_cuda_job_on_a_machine_without_one_ends_before_launch(tmp_path, capsys, monkeypatch):
    """torch.cuda.is_available is forced False: this stands in for any machine without a GPU
    (the test machine has none; a GPU machine would run the job instead)."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    code = main(["run", QUICKSTART, "--set", "runtime.device=cuda", "-n", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "key 'runtime.device'" in err and "sees no GPU here" in err, err
    assert not out.exists()           # no run directory holding only its lock
    # hpccl validate may run on a login node: a note, not a refusal.
    code, err = validate(capsys, QUICKSTART, "--set", "runtime.device=cuda")
    assert code == 0 and "hpccl: note:" in err and "sees no GPU here" in err, err
