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
                                          (True, "True"), (0, "0"), (10**12, "1000000000000")])
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
    # 10**12 classes passed as an integer and asked numpy for 7 TiB (arange(num_classes)).
    assert shown in err and "expected an integer in [1, 10000000]" in err


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


# --- the sweep of wave 31 (#28): the data of the other job kinds, read before any rank ----------

def _four_d_dataset(tmp_path):
    from hpccl.data.h5format import write_dataset
    rng = np.random.default_rng(0)
    return write_dataset(tmp_path / "images.h5", rng.random((8, 1, 4, 4)).astype(np.float32), np.arange(8) % 2,
                         rng.random((4, 1, 4, 4)).astype(np.float32), np.arange(4) % 2, 2, "images")


@pytest.mark.parametrize("job, sets, fragment", [
    ("erm_breast_cancer.yaml", ["data.builtin=null", "data.path=@DATA@"],
     "/train/x has shape (8, 1, 4, 4); an ERM job needs vectors [N, D]"),
    ("rnn_digits.yaml", ["rnn.task=file", "rnn.path=@DATA@"],
     "expected datasets 'x' [N, T, D] and 'y' [N], found ['test', 'train']"),
], ids=["erm", "online_rnn"])
def test_a_data_file_the_job_kind_cannot_read_ends_before_launch(tmp_path, capsys, job, sets, fragment):
    # Both kinds read their file only on the ranks: the job launched, then ended with exit 1.
    data, out = _four_d_dataset(tmp_path), tmp_path / "run"
    args = [x for s in sets for x in ("--set", s.replace("@DATA@", str(data)))]
    code = main(["run", os.path.join(ROOT, "jobs", job), "-n", "2", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and str(data) in err and "Traceback" not in err, err
    assert not out.exists()
    code, err = validate(capsys, os.path.join(ROOT, "jobs", job), *args)
    assert code == 2 and fragment in err


def test_an_erm_file_with_more_label_values_than_its_loss_takes_ends_before_launch(tmp_path, capsys):
    src = tmp_path / "three.svm"
    src.write_text("1 1:1\n2 1:2\n3 2:1\n1 2:2\n")
    assert main(["data", "convert", "libsvm", "--src", str(src), "--out", str(tmp_path / "three.h5")]) == 0
    sets = ["--set", "data.builtin=null", "--set", f"data.path={tmp_path / 'three.h5'}"]
    code = main(["run", os.path.join(ROOT, "jobs", "erm_breast_cancer.yaml"), "-n", "2",
                 "--out", str(tmp_path / "run"), *sets])
    err = capsys.readouterr().err
    assert code == 2 and "3 label values" in err and "erm.loss: squared" in err, err
    code, err = validate(capsys, os.path.join(ROOT, "jobs", "erm_breast_cancer.yaml"), *sets,
                         "--set", "erm.loss=squared")
    assert code == 0, err                         # regression takes any labels


@pytest.mark.parametrize("text, fragment", [
    ("1 1:1\n2 1:2\n3 2:1\n", "3 label values"),
    ("1 1:1\n-1 1:0.5 2:abc\n", "line 2: the value of index 2 'abc' is not a number"),
], ids=["labels", "line"])
def test_a_libsvm_text_file_an_erm_job_names_is_read_before_launch(tmp_path, capsys, text, fragment):
    # An ERM job also takes a LIBSVM text file as data.path; it was scanned only on the ranks.
    src = tmp_path / "direct.svm"
    src.write_text(text)
    sets = ["--set", "data.builtin=null", "--set", f"data.path={src}"]
    out = tmp_path / "run"
    code = main(["run", os.path.join(ROOT, "jobs", "erm_breast_cancer.yaml"), "-n", "2", "--out", str(out), *sets])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and str(src) in err and "Traceback" not in err, err
    assert not out.exists()
    code, err = validate(capsys, os.path.join(ROOT, "jobs", "erm_breast_cancer.yaml"), *sets)
    assert code == 2 and fragment in err


@pytest.mark.parametrize("line, fragment", [
    ("1 1:nan", "line 1: the value of index 1 'nan' is not a finite number"),
    ("1 1:inf", "line 1: the value of index 1 'inf' is not a finite number"),
    ("1 1:0.5 2:abc", "line 1: the value of index 2 'abc' is not a number"),
    ("nan 1:1", "line 1: the label 'nan' is not a finite number"),
    ("1 0:1", "line 1: the index 0 is outside [1, 2147483647]"),
    ("1 2:1 2:3", "line 1: the index 2 follows 2: indices must be strictly ascending"),
    ("1 3:1 2:3", "line 1: the index 2 follows 3"),
    ("1 1:1 qid:2", "line 1: 'qid:2' comes after a feature"),
])
def test_a_libsvm_line_that_is_not_finite_numbers_is_named(tmp_path, capsys, line, fragment):
    # NaN and inf were written into the HDF5 file and reached the solvers; the others raised
    # scikit-learn's ValueError (tests/fuzz_corpus keeps those as exit-2 cases too).
    src = tmp_path / "a.svm"
    src.write_text(line + "\n-1 1:1\n")
    code = main(["data", "convert", "libsvm", "--src", str(src), "--out", str(tmp_path / "a.h5")])
    err = capsys.readouterr().err
    assert code == 2 and f"LIBSVM file {src}, {fragment}" in err and "Traceback" not in err, err
    assert not (tmp_path / "a.h5").exists()
    src.write_text("1 1:1 3:2\n-1 qid:2 1:1\n")      # a gap and a query id: both still read
    assert main(["data", "convert", "libsvm", "--src", str(src), "--out", str(tmp_path / "a.h5")]) == 0


def test_a_libsvm_file_cut_short_or_missing_is_named_for_what_it_is(tmp_path, capsys):
    import bz2
    rng = np.random.default_rng(0)
    text = "".join(f"{1 if i % 2 else -1} " + " ".join(f"{j}:{v:.6f}" for j, v in enumerate(rng.random(20), 1)) + "\n"
                   for i in range(3000))
    whole = bz2.compress(text.encode())
    cut = tmp_path / "cut.bz2"
    cut.write_bytes(whole[:len(whole) // 2])
    code = main(["data", "convert", "libsvm", "--src", str(cut), "--out", str(tmp_path / "a.h5")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot read LIBSVM file {cut}:" in err and "a truncated or damaged compressed file?" in err, err
    # A file that is not there is not called damaged; a binary file's first token is shown short.
    code = main(["data", "convert", "libsvm", "--src", str(tmp_path / "nosuch"), "--out", str(tmp_path / "a.h5")])
    err = capsys.readouterr().err
    assert code == 2 and "No such file or directory." in err and "truncated" not in err, err
    (tmp_path / "bin.svm").write_bytes(b"\x7fELF" + b"\x80" * 5000 + b" 1:1\n")
    code = main(["data", "convert", "libsvm", "--src", str(tmp_path / "bin.svm"), "--out", str(tmp_path / "a.h5")])
    err = capsys.readouterr().err
    assert code == 2 and "line 1: the label" in err and "...' is not a number" in err and len(err) < 600, err
