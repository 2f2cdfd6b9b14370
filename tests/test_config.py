"""Job files: valid ones load, and every kind of mistake gets a clear one-paragraph error."""

import pytest
import yaml

from hpccl.config import job_from_dict, load_job
from hpccl.core.errors import ConfigError

from helpers import ROOT, hpccl_cmd, run_cmd

BASE = {"name": "x", "data": {"builtin": "digits"}}


def load(raw, overrides=()):
    return job_from_dict(raw, source="job.yaml", overrides=overrides)


def test_shipped_jobs_load():
    import glob
    files = glob.glob(f"{ROOT}/jobs/*.yaml")
    assert files
    for path in files:
        cfg = load_job(path)
        assert cfg.name


def test_defaults_and_shorthand():
    cfg = load({**BASE, "learner": "scratch", "model": {"kind": "mlp", "hidden": [32]}})
    assert cfg.learner.kind == "scratch"
    assert cfg.model.options == {"hidden": [32]}
    assert cfg.train.batch_size == 32 and cfg.runtime.backend == "horovod"


def test_each_kind_gets_the_backend_it_honours():
    assert load({**BASE, "runtime": {"backend": "mpi"}}).runtime.backend == "mpi"   # a gradient backend
    assert load({"name": "x", "kind": "online_rnn"}).runtime.backend == "mpi"       # its collectives
    alma = load({**BASE, "scenario": {"kind": "megabatch"}, "learner": "single"})
    assert alma.runtime.backend == "mpi"


def test_overrides_apply_and_are_typed():
    cfg = load(BASE, ["train.lr=0.5", "train.epochs=3", "model.hidden=[8, 8]", "learner=scratch"])
    assert cfg.train.lr == 0.5 and cfg.train.epochs == 3
    assert cfg.model.options["hidden"] == [8, 8]
    assert cfg.learner.kind == "scratch"


@pytest.mark.parametrize("raw, overrides, fragments", [
    ({**BASE, "trian": {}}, [], ["job.yaml", "unknown key 'trian'", "Did you mean 'train'"]),
    ({**BASE, "train": {"lr": "fast"}}, [], ["key 'train.lr'", "expected a number", "'fast'"]),
    ({**BASE, "train": {"epochs": 1.5}}, [], ["key 'train.epochs'", "an integer", "1.5"]),
    ({**BASE, "train": {"batch_size": 0}}, [], ["train.batch_size", "an integer >= 1", "found 0"]),
    ({**BASE, "runtime": {"backend": "nccl"}}, [], ["runtime.backend", "'horovod'", "'torch'", "'mpi'", "'nccl'"]),
    ({"name": "x", "kind": "online_rnn", "runtime": {"backend": "torch"}}, [],
     ["key 'runtime.backend'", "expected 'mpi' for 'online_rnn' jobs", "found 'torch'"]),
    ({**BASE, "scenario": {"kind": "megabatch"}, "learner": "single"}, ["runtime.backend=horovod"],
     ["key 'runtime.backend'", "'scenario: megabatch'", "found 'horovod'"]),
    ({**BASE, "rehearsal": {"async": "maybe"}}, [], ["key 'rehearsal.async'", "true/false", "'maybe'"]),
    (BASE, ["checkpoint.async=maybe"], ["key 'checkpoint.async'", "true/false"]),
    ({**BASE, "model": {"kind": "resnet19"}}, [], ["model.kind", "resnet18", "Did you mean 'resnet18'"]),
    ({**BASE, "model": {"kind": "mlp", "hiden": [1]}}, [], ["model.hiden", "Did you mean 'hidden'"]),
    ({"data": {"builtin": "digits"}}, [], ["missing required key 'name'"]),
    ({"name": "x", "data": {}}, [], ["section 'data'", "exactly one of 'path'", "neither"]),
    ({"name": "x", "data": {"builtin": "mnist"}}, [], ["data.builtin", "'digits'"]),
    (BASE, ["train.lrr=1"], ["--set train.lrr=1", "unknown key 'train.lrr'", "Did you mean 'lr'"]),
    (BASE, ["train"], ["expected KEY.PATH=VALUE"]),
    ([1, 2], [], ["expected a mapping of sections"]),
])
def test_errors_name_file_key_expected_and_found(raw, overrides, fragments):
    with pytest.raises(ConfigError) as e:
        load(raw, overrides)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(str(bad))


def test_cli_reports_broken_config_without_traceback(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**BASE, "train": {"momentum": "high"}}))
    for command in ("validate", "run"):
        r = run_cmd(hpccl_cmd(command, str(job)) + (["-n", "2"] if command == "run" else []))
        assert r.returncode == 2, r.stderr
        assert "train.momentum" in r.stderr and str(job) in r.stderr
        assert "Traceback" not in r.stderr


def test_absent_sections_get_checked_defaults():
    cfg = load(BASE)
    assert cfg.rehearsal.buffer_ratio == 0.1 and cfg.rehearsal.slots_per_class is None
    assert cfg.rehearsal.async_updates is True


@pytest.mark.parametrize("section, fragments", [
    ({"slots_per_class": 4, "buffer_ratio": 0.1}, ["sets both 'slots_per_class' and 'buffer_ratio'"]),
    ({"buffer_ratio": 1.5}, ["rehearsal.buffer_ratio", "(0, 1]"]),
    ({"start_task": 2}, ["rehearsal.start_task", "an integer in [0, 1]"]),
    ({"asinc": True}, ["unknown key 'rehearsal.asinc'", "Did you mean 'async'"]),
    ({"async": "yes"}, ["rehearsal.async", "true/false"]),
    ({"candidates": 64}, ["rehearsal.candidates", "at most train.batch_size (32)"]),
])
def test_rehearsal_section_errors(section, fragments):
    with pytest.raises(ConfigError) as e:
        load({**BASE, "learner": "rehearsal", "rehearsal": section})
    for fragment in fragments:
        assert fragment in str(e.value)


def test_async_key_roundtrips_through_set_and_dump():
    cfg = load({**BASE, "rehearsal": {"async": False}}, ["rehearsal.async=true"])
    assert cfg.rehearsal.async_updates is True
    assert cfg.to_dict()["rehearsal"]["async"] is True


def test_bare_off_in_yaml_means_off(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: x\ndata: {builtin: digits}\nlog: {progress: off}\n")
    assert load_job(str(job)).log.progress == "off"


def test_exponent_floats_are_numbers_in_job_files_and_overrides(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-3 as a string; users write it as a number."""
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ndata: {builtin: digits}\ntrain: {lr: 1e-3, weight_decay: 5E-4}\n")
    cfg = load_job(str(path))
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 0.0005
    cfg = load_job(str(path), ["train.lr=2.5e-2", "train.momentum=+9e-1"])
    assert cfg.train.lr == 0.025 and cfg.train.momentum == 0.9
    assert load(BASE, ["name=1e3run"]).name == "1e3run"      # not a number: stays a string
    with pytest.raises(ConfigError, match="train.epochs"):
        load(BASE, ["train.epochs=1e3"])                      # a float where an integer is due


def test_rehearsal_progress_interval_must_be_positive():
    with pytest.raises(ConfigError, match=r"rehearsal.progress_ms.*\(0, 1000\]"):
        load(BASE, ["rehearsal.progress_ms=0"])


@pytest.mark.parametrize("args, expect", [
    (["--busy-seconds", "0"], "--busy-seconds: expected a number of seconds in (0, 604800]"),
    (["--timeout", "-1"], "--timeout: expected a number of seconds in (0, 604800]"),
    (["-n", "0"], "-n/--np: expected a number of ranks in [1, 65536]"),
])
def test_check_flags_are_checked(args, expect):
    r = run_cmd(hpccl_cmd("check", f"{ROOT}/jobs/quickstart.yaml", *args), timeout=60)
    assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr


def test_check_set_needs_a_job():
    r = run_cmd(hpccl_cmd("check", "--set", "rehearsal.ranks_per_node=2"), timeout=60)
    assert r.returncode == 2 and "give the JOB file" in r.stderr


def test_overrides_leave_the_callers_dict_alone():
    raw = {"name": "x", "data": {"builtin": "digits"}, "train": {"lr": 0.1}}
    load(raw, ["data.builtin=digits", "train.lr=0.5", "train.epochs=2"])
    assert raw == {"name": "x", "data": {"builtin": "digits"}, "train": {"lr": 0.1}}

