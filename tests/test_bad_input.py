"""Regression corpus for bad input and faults: one case per class of mistake, each asserting
the exit code, a one-paragraph message that names the file and the offending key, row or
value (never a traceback), and for faults how fast the job ends.

Classes: dataset contents (non-finite values, labels out of range, empty splits, classes
without training samples), job values that only the data can refute (num_tasks,
scenario.classes, a model that cannot take the data), --set values outside a key's domain,
training that diverges, and two runs into one directory. Other classes live beside the code
they exercise: the schema walk (test_schema_domains.py), signals and a launcher killed
(test_resume.py, tests/rehearsal/test_mpi_stacks.py), uneven pseudo-node layouts
(test_run_mpi.py), paths that cannot be written (test_bad_input_paths.py)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, hpccl_cmd, mpirun_cmd, run_cmd, write_job
from hpccl.data.h5format import write_dataset
from hpccl.core.logs import read_h5


def vectors(tmp_path, name, edit=None, n=80, classes=4):
    """A small 8-feature dataset, changed by ``edit(arrays)`` before it is written."""
    rng = np.random.default_rng(0)
    arrays = {"train/x": rng.random((n, 8)).astype(np.float32), "train/y": np.arange(n) % classes,
              "test/x": rng.random((n // 4, 8)).astype(np.float32), "test/y": np.arange(n // 4) % classes}
    if edit:
        edit(arrays)
    return write_dataset(tmp_path / f"{name}.h5", arrays["train/x"], arrays["train/y"],
                         arrays["test/x"], arrays["test/y"], classes, name)


def one_paragraph(r, *fragments):
    err = r.stderr
    assert "Traceback" not in err and "Traceback" not in r.stdout, err
    lines = [ln for ln in err.splitlines() if ln.startswith("hpccl: error")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def nan_pixel(a):
    a["train/x"][17, 3] = np.nan


def inf_test_value(a):
    a["test/x"][2, 0] = np.inf


def label_too_big(a):
    a["train/y"][5] = 9


def negative_test_label(a):
    a["test/y"][3] = -1


def empty_train(a):
    a["train/x"], a["train/y"] = a["train/x"][:0], a["train/y"][:0]


def class_only_in_test(a):
    a["train/y"][a["train/y"] == 2] = 1


DATASET_CASES = [
    (nan_pixel, ["/train/x[17]", "non-finite", "nan"]),
    (inf_test_value, ["/test/x[2]", "non-finite", "inf"]),
    (label_too_big, ["/train/y[5] = 9", "outside 0..3"]),
    (negative_test_label, ["/test/y[3] = -1", "outside 0..3"]),
    (empty_train, ["/train/x holds no samples"]),
    (class_only_in_test, ["[2]", "no samples in /train/y"]),
]


@pytest.mark.parametrize("edit, fragments", DATASET_CASES, ids=[c[0].__name__ for c in DATASET_CASES])
def test_dataset_contents_are_refused_by_validate(tmp_path, edit, fragments):
    data = vectors(tmp_path, edit.__name__, edit)
    job = write_job(tmp_path / "job.yaml", data={"path": data}, scenario={"num_tasks": 2})
    r = run_cmd(hpccl_cmd("validate", job), timeout=60)
    assert r.returncode == 2
    one_paragraph(r, data, *fragments)


MLP = {"kind": "mlp", "hidden": [16]}


@pytest.mark.parametrize("overrides, model, fragments", [
    (["scenario.num_tasks=5"], MLP, ["key 'scenario.num_tasks'", "at most", "(4", "found 5"]),
    (["scenario.classes=[0, 1, 7]"], MLP, ["key 'scenario.classes'", "0..3", "[7]"]),
    ([], {"kind": "cnn"}, ["section 'model'", "model 'cnn' needs image samples", "(8,)"]),
    (["model.hidden=[-4]"], MLP, ["section 'model'", "'hidden'", "positive integer", "-4"]),
    (["seed=-1"], MLP, ["key 'seed'", "an integer in [0,", "found -1"]),
    (["runtime.threads_per_rank=0"], MLP, ["key 'runtime.threads_per_rank'", "found 0"]),
    (["train.lr=.nan"], MLP, ["key 'train.lr'", "a finite number", "nan"]),
])
def test_job_values_the_data_or_schema_refute(tmp_path, overrides, model, fragments):
    data = vectors(tmp_path, "ok")
    job = write_job(tmp_path / "job.yaml", data={"path": data}, scenario={"num_tasks": 2}, model=model)
    sets = [x for o in overrides for x in ("--set", o)]
    r = run_cmd(hpccl_cmd("validate", job, *sets), timeout=60)
    assert r.returncode == 2
    one_paragraph(r, *fragments)


def test_run_refuses_bad_data_before_any_rank_starts(tmp_path):
    data = vectors(tmp_path, "nan", nan_pixel)
    job = write_job(tmp_path / "job.yaml", data={"path": data}, scenario={"num_tasks": 2})
    out = tmp_path / "run"
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=120)
    assert r.returncode == 2 and not out.exists()      # a rank that started makes the run directory
    assert "launching" not in r.stdout
    one_paragraph(r, data, "/train/x[17]")


def test_a_direct_mpi_launch_checks_on_rank_0_and_all_ranks_exit(tmp_path):
    """srun / mpiexec started the ranks themselves: rank 0 reads the data once, tells the
    others, and the job ends with one message."""
    data = vectors(tmp_path, "labels", label_too_big)
    job = write_job(tmp_path / "job.yaml", data={"path": data}, scenario={"num_tasks": 2})
    out = tmp_path / "run"
    r = run_cmd(mpirun_cmd(2, ["run", job, "--out", str(out)]), timeout=120)
    assert r.returncode == 2
    one_paragraph(r, data, "/train/y[5] = 9")


def test_diverging_training_stops_all_ranks_with_status_and_place(tmp_path):
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2},
                    train={"epochs": 3, "batch_size": 16, "lr": 1e30})
    out = tmp_path / "run"
    # A rank left waiting on the one that stopped would end only at runtime.hang_timeout
    # (5 min by default), past this timeout: stopping all ranks is what ends the job in time.
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=180)
    assert r.returncode == 3, r.stdout + r.stderr
    line = one_paragraph(r, "non-finite loss", "task 0, epoch 1", "iteration", "on rank")
    log = read_h5(str(out / "log.h5"))
    assert log["attrs"]["status"] == "failed: non-finite loss"
    assert log["attrs"]["failure"] in line
    assert len(log["epochs/loss"]) == 1 and not np.isfinite(log["epochs/loss"]).all()


def test_a_second_run_into_a_live_run_directory_is_refused_naming_the_holder(tmp_path):
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2},
                    train={"epochs": 200, "batch_size": 16, "lr": 0.025})
    out = tmp_path / "run"
    first = subprocess.Popen(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 90
        while not (out / "log.h5").exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.5)
        for cmd in (hpccl_cmd("run", job, "--out", str(out)),                       # one rank
                    hpccl_cmd("run", job, "-n", "2", "--out", str(out))):          # launcher
            # refused, not queued behind the first run's lock: that would outlast the timeout
            r = run_cmd(cmd, timeout=120)
            assert r.returncode == 2
            one_paragraph(r, str(out), "in use by another hpccl run", "pid", "since")
        assert first.poll() is None          # the first run is untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        subprocess.run(["pkill", "-9", "-f", str(out)], check=False)


@pytest.mark.parametrize("out, fragment", [("file", "found an existing file"),
                                           ("file/sub", "is a file, not a directory"),
                                           ("/proc/run", "does not accept new directories")])
def test_run_refuses_an_out_it_cannot_write_before_starting(tmp_path, out, fragment):
    (tmp_path / "file").write_text("not a directory")
    target = out if out.startswith("/") else str(tmp_path / out)
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2})
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", target), timeout=60)
    assert r.returncode == 2 and "launching" not in r.stdout
    one_paragraph(r, "--out", target, fragment)
    assert sorted(os.listdir(tmp_path)) == ["file", "job.yaml"]     # nothing left behind


@pytest.mark.parametrize("job, sets, message", [
    # ALMA's early stopping would keep the 'best' diverged model and report chance accuracy
    ("alma_digits.yaml", ["train.lr=1e30", "scenario.num_megabatches=2"],
     "training diverged: non-finite loss or weights"),
    ("rnn_spiral.yaml", ["rnn.lr=1e30", "rnn.num_sequences=60"],
     "training diverged: non-finite gradients at update"),
], ids=["anytime", "online_rnn"])
def test_diverging_training_of_other_kinds_fails_the_job(tmp_path, job, sets, message):
    out = tmp_path / "run"
    r = run_cmd(hpccl_cmd("run", os.path.join(ROOT, "jobs", job), "-n", "2", "--out", str(out),
                          *[x for s in sets for x in ("--set", s)]),
                timeout=180)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert message in r.stderr
    assert read_h5(str(out / "log.h5"))["attrs"]["status"] == "failed"


# --- the sweep of wave 31 (#28): new members of known classes, refused in process -------------

def _cli(capsys, *args):
    from hpccl.cli import main
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.mark.parametrize("name", ["../escaped", "a/b", "", ".", "..", "-rf", "x" * 201])
def test_a_name_that_is_not_one_directory_component_is_refused(tmp_path, capsys, name):
    # The name makes LOG_DIR/NAME-TIME: '../escaped' left log.dir, 'a/b' nested, '' and '.'
    # named the log directory itself, '-rf' reached command lines as an option.
    job = write_job(tmp_path / "job.yaml")
    for cmd in (["validate", job], ["run", job, "-n", "2", "--out", str(tmp_path / "r")],
                ["submit", job, "--site", "local", "--gpus", "1", "--dry-run"]):
        code, err = _cli(capsys, *cmd, "--set", f"name={name}")
        assert code == 2 and f"{job}: key 'name': expected a name usable as one directory component" in err, err
        assert f"found {name!r}" in err
    assert sorted(os.listdir(tmp_path)) == ["job.yaml"]


@pytest.mark.parametrize("name", ["a b", "café", "x" * 200])
def test_a_name_that_is_one_directory_component_passes(tmp_path, capsys, name):
    code, err = _cli(capsys, "validate", write_job(tmp_path / "job.yaml"), "--set", f"name={name}")
    assert code == 0, err


def test_resume_of_a_complete_run_that_kept_a_checkpoint_is_refused_and_changes_nothing(tmp_path):
    # checkpoint.every: task keeps the last task's checkpoint after the run completes; --resume
    # took it, retrained the last task and wrote it into the finished log (exit 0).
    import hashlib
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2}, checkpoint={"every": "task"},
                    train={"epochs": 1, "batch_size": 16, "lr": 0.025})
    run = tmp_path / "run"
    r = run_cmd(hpccl_cmd("run", job, "--out", str(run)), timeout=120)
    assert r.returncode == 0, r.stderr
    assert (run / "checkpoint" / "state.json").is_file()          # the case: complete, checkpoint kept

    def tree():
        return {os.path.relpath(os.path.join(d, f), run): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
                for d, _, fs in os.walk(run) for f in fs}
    before = tree()
    r = run_cmd(hpccl_cmd("run", "--resume", str(run), "-n", "2"), timeout=120)
    assert r.returncode == 2 and "launching" not in r.stdout
    one_paragraph(r, str(run), "its run is complete", "--out NEW_DIR")
    assert tree() == before


def test_a_queue_whose_time_limit_is_zero_is_refused_naming_the_file_and_key(tmp_path, capsys):
    # It was accepted, and every submit then said no queue admits the job, naming no file.
    site = tmp_path / "mine.yaml"
    site.write_text('extends: slurm-local\nqueues: [{name: q, max_nodes: 2, max_walltime: "0:00:00"}]\n')
    code, err = _cli(capsys, "submit", write_job(tmp_path / "job.yaml"), "--site", str(site), "--gpus", "1",
                     "--dry-run", "--out", str(tmp_path / "o"))
    assert code == 2 and f"{site}" in err and "key 'queues[0].max_walltime': expected a time limit above zero" in err, err
    site.write_text('extends: slurm-local\nqueues: [{name: q, max_nodes: 2, max_walltime: "0:00:01"}]\n')
    from hpccl.sched.sites import load_site
    assert load_site(str(site)).queues[0].max_walltime == "0:00:01"


def test_a_job_file_of_megabytes_is_refused_at_once(tmp_path, capsys):
    # A 50 MB file (a data file given as the job) held validate for minutes in PyYAML.
    from hpccl.core.schema import MAX_YAML_BYTES
    job = tmp_path / "job.yaml"
    job.write_text("name: " + "a" * MAX_YAML_BYTES + "\n")
    code, err = _cli(capsys, "validate", str(job))
    assert code == 2 and f"{job}: the text is longer than 1 MiB" in err, err
    site = tmp_path / "site.yaml"
    site.write_text("extends: local\ndescription: " + "a" * MAX_YAML_BYTES + "\n")
    code, err = _cli(capsys, "submit", write_job(tmp_path / "small.yaml"), "--site", str(site), "--gpus", "1",
                     "--dry-run", "--out", str(tmp_path / "o"))
    assert code == 2 and f"{site}: the text is longer than 1 MiB" in err, err


@pytest.mark.parametrize("extra, what", [(["--gpus", "1"], "a directory to write the job script and the run into"),
                                         (["--scaling", "weak", "--gpus", "1,2"], "a sweep directory to write")],
                         ids=["one run", "sweep"])
def test_submit_refuses_an_out_that_is_a_file_naming_the_flag(tmp_path, capsys, extra, what):
    # os.makedirs raised FileExistsError (a traceback) for a single run.
    target = tmp_path / "f"
    target.write_text("mine")
    code, err = _cli(capsys, "submit", write_job(tmp_path / "job.yaml"), "--site", "local", *extra,
                     "--dry-run", "--out", str(target))
    assert code == 2 and f"--out {str(target)!r}: expected {what}" in err and "found an existing file" in err, err
    assert target.read_text() == "mine"


@pytest.mark.parametrize("key, value", [("data.path", "~/sweep31-missing.h5"), ("log.dir", "~/sweep31-runs")])
def test_a_path_key_starting_with_a_tilde_is_the_home_directory(tmp_path, capsys, monkeypatch, key, value):
    # Unexpanded, log.dir: ~/runs made a directory named '~' in the working directory, and
    # data.path: ~/x.h5 was reported missing with the '~' still in it.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    job = write_job(tmp_path / "job.yaml")
    expanded = str(tmp_path / "home" / value[2:])
    if key == "data.path":
        code, err = _cli(capsys, "validate", job, "--set", "data.builtin=null", "--set", f"{key}={value}")
        assert code == 2 and f"dataset file {expanded!r} does not exist" in err, err
    else:
        from hpccl.config import load_job
        assert load_job(job, [f"{key}={value}"]).log.dir == expanded
        code = _cli(capsys, "submit", job, "--site", "local", "--gpus", "1", "--dry-run", "--set", f"{key}={value}")[0]
        assert code == 0 and os.path.isdir(expanded) and not os.path.exists(tmp_path / "~")


@pytest.mark.parametrize("content, fragment", [(b"garbage\n", "is not a zip archive"),
                                               (b"", "is not a zip archive"),
                                               ("zip-without-pickle", "is a zip archive without torch.save's data.pkl")])
def test_a_pretrained_file_that_is_no_torch_archive_is_refused_before_launch(tmp_path, capsys, content, fragment):
    # The ranks failed on it after launch (exit 1, "Weights only load failed ...").
    import torch
    import zipfile
    weights = tmp_path / "vit.pt"
    if content == "zip-without-pickle":
        with zipfile.ZipFile(weights, "w") as z:
            z.writestr("vit/other.txt", "x")
    else:
        weights.write_bytes(content)
    job = os.path.join(ROOT, "jobs", "lorac_digits.yaml")
    code, err = _cli(capsys, "run", job, "-n", "2", "--out", str(tmp_path / "run"),
                     "--set", f"model.pretrained={weights}")
    assert code == 2 and f"{job}: key 'model.pretrained': expected a state-dict file written by torch.save" in err, err
    assert f"found that {str(weights)!r} {fragment}" in err and not (tmp_path / "run").exists()
    torch.save({"w": torch.zeros(2)}, weights)                    # an archive passes this check
    assert _cli(capsys, "validate", job, "--set", f"model.pretrained={weights}")[0] == 0


def test_sigterm_during_data_convert_leaves_no_half_written_file(tmp_path):
    # The default action killed it mid-write and left OUT.tmpPID (130 MB here) beside --out.
    out = tmp_path / "s.h5"
    p = subprocess.Popen(hpccl_cmd("data", "convert", "synthetic", "--num-classes", "50", "--shape", "3,64,64",
                                   "--train-per-class", "2000", "--out", str(out)),
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not any(n.startswith("s.h5.tmp") for n in os.listdir(tmp_path)):
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []


def test_status_watch_longer_than_a_week_is_refused(capsys):
    # time.sleep(1e300) raised OverflowError after the first table.
    with pytest.raises(SystemExit) as e:
        _cli(capsys, "status", "--watch", "1e300")
    assert e.value.code == 2
    assert "argument --watch: expected a number of seconds in (0, 604800], found '1e300'" in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [(["--seeds", "a,b"], "argument --seeds: expected a comma-separated list"),
                                            (["--seeds", "1,1"], "each once"),
                                            (["--ranks", "0"], "argument --ranks/-n: expected a number of ranks in [1,")])
def test_the_study_script_refuses_bad_arguments_before_any_run(tmp_path, args, fragment):
    # --seeds a,b raised ValueError; --ranks 0 started every variant's run to have it refused.
    r = run_cmd([sys.executable, os.path.join(ROOT, "scripts", "alma_study.py"),
                 os.path.join(ROOT, "jobs", "studies", "alma_digits.yaml"), "--out", str(tmp_path / "o"), *args],
                timeout=60)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_a_raw_control_byte_in_a_yaml_file_is_one_line_naming_where(tmp_path, capsys):
    # PyYAML's reader stops at it before any key is known; its message was two lines, the
    # second a character count from the start of the file.
    job = tmp_path / "job.yaml"
    job.write_bytes(b"seed: 0\nname: a\x00b\n")
    code, err = _cli(capsys, "validate", str(job))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{job}: not valid YAML: the control character '\\x00' on line 2, column 8" in err, err
    site = tmp_path / "site.yaml"
    site.write_bytes(b"extends: local\ndescription: x\x07\n")
    code, err = _cli(capsys, "submit", write_job(tmp_path / "small.yaml"), "--site", str(site), "--gpus", "1",
                     "--dry-run", "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1 and "the control character '\\x07' on line 2, column 15" in err, err
