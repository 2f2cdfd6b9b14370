"""Messages that named nothing or suggested what is then refused (#28): each now names the file
and key, and its HINT is something that works."""

import os
import shutil

import h5py

from hpccl.cli import main

from helpers import ROOT, write_job

QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")


def run_cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_extends_of_an_unknown_site_names_the_file_and_key(tmp_path, capsys, monkeypatch):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "mine.yaml").write_text("extends: nosuchsite\n")
    monkeypatch.setenv("HPCCL_SITE_DIR", str(sites))
    code, err = run_cli(capsys, "submit", QUICKSTART, "--site", "mine", "--gpus", "1", "--dry-run",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and f"{sites / 'mine.yaml'}: key 'extends': unknown site 'nosuchsite'" in err, err


def test_checkpoint_every_zero_is_told_the_words_it_takes_not_true(capsys):
    code, err = run_cli(capsys, "validate", QUICKSTART, "--set", "checkpoint.every=0")
    assert code == 2 and "key 'checkpoint.every': expected a number of epochs >= 1, a time such as" in err
    assert "true/false" not in err and "'task' or 'off'" in err, err
    # What it names is taken:
    for value in ("1", "30min", "task", "off"):
        assert run_cli(capsys, "validate", QUICKSTART, "--set", f"checkpoint.every={value}")[0] == 0


def test_resume_of_a_complete_run_says_so_and_hints_at_what_works(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(write_job(tmp_path / "job.yaml"), run / "config.yaml")
    with h5py.File(run / "log.h5", "w") as f:
        f.attrs["status"] = "complete"
    code, err = run_cli(capsys, "run", "--resume", str(run))
    assert code == 2 and "its run is complete" in err and "--out NEW_DIR" in err, err
    assert "attempts/" not in err                 # the old hint: a rerun into it, which is refused
    assert run_cli(capsys, "validate", str(run / "config.yaml"))[0] == 0
    assert sorted(os.listdir(run)) == ["config.yaml", "log.h5"]


def test_resume_of_a_path_that_is_no_directory_says_so(tmp_path, capsys):
    # It was told "it has no checkpoint" and hinted to start a run into a path that is a file.
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    for path, what in ((tmp_path / "nosuch", "it does not exist"), (afile, "it is a file")):
        code, err = run_cli(capsys, "run", "--resume", str(path), "-n", "2")
        assert code == 2 and f"cannot resume {str(path)!r}: {what}; --resume takes the run directory" in err, err
        assert "checkpoint" not in err.split("takes")[0] and not (tmp_path / "nosuch").exists()
