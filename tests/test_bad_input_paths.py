"""Bad output paths and time limits end with one paragraph on stderr, exit code 2 and no traceback,
before any work and without leaving anything behind: ``hpccl data convert --out``, ``hpccl
analyze --plot``, ``hpccl pretrain --out``, ``hpccl submit --walltime`` and a site's
``default_walltime`` (hpccl.core.paths checks paths by creating and removing a probe; tests run as root,
so "cannot be written" is a path below a regular file, or a directory of /proc)."""

import os

import numpy as np
import pytest

from hpccl.core.errors import HpcclError
from hpccl.core.paths import check_output_dir, check_output_file

from helpers import ROOT, hpccl_cmd, run_cmd

LORAC_JOB = os.path.join(ROOT, "jobs", "lorac_digits.yaml")
QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")


def snapshot(folder) -> list[str]:
    """Every path below ``folder``: what a failed command must leave unchanged."""
    return sorted(os.path.relpath(os.path.join(d, n), folder)
                  for d, dirs, files in os.walk(folder) for n in dirs + files)


def assert_refused(r, *named):
    """Exit code 2, one paragraph on stderr without a traceback, naming each of ``named``."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    err = r.stderr.strip()
    assert err.startswith("hpccl: error: ") and "\n" not in err, err
    for text in named:
        assert text in err, (text, err)
    return err


@pytest.fixture
def places(tmp_path):
    """A folder holding an existing directory and a regular file."""
    (tmp_path / "existing").mkdir()
    (tmp_path / "a_file.txt").write_text("not a directory\n")
    return tmp_path


def tiny_run(run_dir) -> str:
    """A complete one-rank run directory written with the real log writer (no training)."""
    from hpccl.core.logs import H5Log
    os.makedirs(run_dir)
    log = H5Log(os.path.join(run_dir, "log.h5"), "run", {
        "name": "tiny", "learner": "incremental", "world_size": 1, "backend": "torch",
        "tasks_completed": 1, "train_time_s": 1.0})
    log.put("eval/top1", np.array([[0.9]]))
    log.put("eval/top5", np.array([[1.0]]))
    log.close("complete")
    return str(run_dir)


# --- hpccl.core.paths ------------------------------------------------------------------------------------

def test_path_checks_accept_writable_paths_and_create_nothing(places):
    before = snapshot(places)
    assert check_output_file(places / "new.h5", "--out") == str(places / "new.h5")
    assert check_output_file(places / "a_file.txt", "--out")          # replacing a file is fine
    assert check_output_file(places / "new" / "deeper" / "x.h5", "--out")
    assert check_output_dir(places / "existing", "--plot")
    assert check_output_dir(places / "new" / "figs", "--plot")
    assert snapshot(places) == before


@pytest.mark.parametrize("check, rel, found", [
    (check_output_file, "existing", "found an existing directory"),
    (check_output_file, "a_file.txt/sub/x.h5", "'{root}/a_file.txt', on the way to it, is a file"),
    (check_output_dir, "a_file.txt", "found an existing file"),
    (check_output_dir, "a_file.txt/figs", "'{root}/a_file.txt', on the way to it, is a file"),
])
def test_path_checks_refuse_the_wrong_kind_and_paths_below_a_file(places, check, rel, found):
    before = snapshot(places)
    with pytest.raises(HpcclError) as e:
        check(places / rel, "--flag")
    msg = str(e.value)
    assert msg.startswith(f"--flag '{places / rel}': expected ") and found.format(root=places) in msg
    assert snapshot(places) == before


@pytest.mark.parametrize("check, path, found", [
    (check_output_file, "/proc/hpccl-x.h5", "'/proc' does not accept new files"),
    (check_output_dir, "/proc/hpccl-figs", "'/proc' does not accept new directories"),
    (check_output_dir, "/proc/hpccl-a/b", "'/proc' does not accept new directories"),
])
def test_path_checks_refuse_a_folder_that_takes_no_new_entries(check, path, found):
    with pytest.raises(HpcclError, match=found):
        check(path, "--flag")


def test_write_dataset_refuses_a_directory_and_leaves_no_temp_file(places):
    from hpccl.data.h5format import write_dataset
    x, y = np.zeros((2, 3), np.float32), np.array([0, 1])
    before = snapshot(places)
    with pytest.raises(HpcclError, match="found an existing directory"):
        write_dataset(places / "existing", x, y, x, y, num_classes=2, name="x")
    assert snapshot(places) == before


# --- hpccl data convert --out ---------------------------------------------------------------------------

@pytest.mark.parametrize("rel, found", [
    ("existing", "found an existing directory. HINT: name a file inside it"),
    ("a_file.txt/sub/x.h5", "on the way to it, is a file, not a directory"),
    ("/proc/hpccl-x.h5", "'/proc' does not accept new files"),
])
def test_convert_refuses_an_out_it_cannot_write(places, rel, found):
    out = str(places / rel)    # an absolute rel stays as it is
    before = snapshot(places)
    r = run_cmd(hpccl_cmd("data", "convert", "digits", "--out", out), timeout=120)
    assert_refused(r, f"--out '{out}'", "expected a path for the HDF5 file to write", found)
    assert snapshot(places) == before          # no temp file, no half-made folder


def test_convert_refuses_before_reading_the_source(places):
    """--out is checked before the converter looks at --src (which does not exist here)."""
    out = str(places / "existing")
    r = run_cmd(hpccl_cmd("data", "convert", "cifar", "--src", str(places / "nothing"), "--out", out),
                timeout=120)
    assert_refused(r, f"--out '{out}'", "found an existing directory")


# --- hpccl analyze --plot ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rel, found", [
    ("a_file.txt", "found an existing file"),
    ("a_file.txt/figs", "on the way to it, is a file, not a directory"),
    ("/proc/hpccl-figs", "'/proc' does not accept new directories"),
])
def test_analyze_refuses_a_plot_dir_it_cannot_write(places, rel, found):
    run = tiny_run(places / "run")
    plot = str(places / rel)
    before = snapshot(places)
    r = run_cmd(hpccl_cmd("analyze", run, "--plot", plot), timeout=120)
    assert_refused(r, f"--plot '{plot}'", "expected a directory to write PNG figures into", found)
    assert r.stdout == ""                       # refused before the report was printed
    assert snapshot(places) == before


def test_analyze_refuses_a_directory_where_a_figure_goes(places):
    run = tiny_run(places / "run")
    figs = places / "figs"
    (figs / "accuracy_vs_time.png").mkdir(parents=True)
    r = run_cmd(hpccl_cmd("analyze", run, "--plot", str(figs)), timeout=120)
    assert_refused(r, f"--plot '{figs}'", f"'{figs / 'accuracy_vs_time.png'}'", "found an existing directory")
    assert r.stdout == "" and os.listdir(figs) == ["accuracy_vs_time.png"]


# --- hpccl pretrain --out -----------------------------------------------------------------------------------

@pytest.mark.parametrize("np_", [None, 2])
def test_pretrain_refuses_a_directory_as_out_before_training(places, np_):
    out = str(places / "existing")
    args = ["pretrain", LORAC_JOB, "--out", out] + (["-n", str(np_)] if np_ else [])
    r = run_cmd(hpccl_cmd(*args), timeout=120)
    assert_refused(r, f"--out '{out}'", "expected a file path for the pre-trained weights",
                   "found an existing directory")
    assert "launching" not in r.stdout and "pretraining" not in r.stdout + r.stderr
    assert snapshot(places) == ["a_file.txt", "existing"]


def test_pretrain_names_the_job_key_and_the_summary_file(places):
    weights = places / "w.pt"
    (places / "w.pt.json").mkdir()              # where pretrain writes its summary
    r = run_cmd(hpccl_cmd("pretrain", LORAC_JOB, "--set", f"pretrain.out={weights}"), timeout=120)
    assert_refused(r, f"{LORAC_JOB}: key 'pretrain.out' '{weights}'", f"'{weights}.json'",
                   "found an existing directory")
    r = run_cmd(hpccl_cmd("pretrain", LORAC_JOB, "--set", f"model.pretrained={places / 'a_file.txt' / 'w.pt'}"),
                timeout=120)
    assert_refused(r, f"{LORAC_JOB}: key 'model.pretrained'", "on the way to it, is a file")


# --- hpccl submit: zero time limits -------------------------------------------------------------------------

@pytest.fixture
def site_env(tmp_path):
    """Only the shipped sites plus an override directory (never ~/.config/hpccl)."""
    sites = tmp_path / "sites"
    sites.mkdir()
    return sites, {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HPCCL_SITE_DIR": str(sites)}


@pytest.mark.parametrize("walltime", ["00:00:00", "0:00:00", "-01:00:00"])
def test_submit_refuses_a_zero_or_negative_walltime(tmp_path, site_env, walltime):
    _, env = site_env
    out = tmp_path / "run"
    r = run_cmd(hpccl_cmd("submit", QUICKSTART, "--site", "slurm-local", "--gpus", "1",
                          f"--walltime={walltime}", "--dry-run", "--out", str(out)), env=env, timeout=120)
    err = assert_refused(r, "--walltime", f"'{walltime}'")
    assert ("above zero" in err) == (walltime != "-01:00:00")   # a negative one is malformed
    assert not out.exists()


def test_submit_refuses_a_site_file_with_a_zero_default_walltime(tmp_path, site_env):
    sites, env = site_env
    site_file = sites / "zero.yaml"
    site_file.write_text('extends: slurm-local\ndefault_walltime: "00:00:00"\n')
    out = tmp_path / "run"
    r = run_cmd(hpccl_cmd("submit", QUICKSTART, "--site", "zero", "--gpus", "1", "--dry-run",
                          "--out", str(out)), env=env, timeout=120)
    assert_refused(r, str(site_file), "key 'default_walltime'", "above zero", "'00:00:00'")
    assert not out.exists()
