"""``scenario: megabatch`` jobs end to end: real MPI ranks, real HDF5 logs, hpccl analyze."""

import json
import os

import numpy as np
import pytest

from hpccl.alma.stream import MegaBatchStream, Schedule
from hpccl.config import job_from_dict
from hpccl.core.errors import ConfigError
from hpccl.core.logs import read_h5

from helpers import hpccl_cmd, mpirun_cmd, run_cmd, write_job

SCENARIO = {"kind": "megabatch", "num_megabatches": 6, "wait": 2, "replay": 0.5, "val_share": 0.1, "patience": 2}
TRAIN = {"epochs": 4, "batch_size": 16, "lr": 0.05, "momentum": 0.9}


def alma_job(tmp_path, name, **sections):
    sections = {"scenario": SCENARIO, "train": TRAIN, "learner": {"kind": "single"},
                "model": {"kind": "mlp", "hidden": [32]}, "runtime": {}, **sections}
    return write_job(tmp_path / f"{name}.yaml", **sections)


def run_ok(cmd, timeout=300):
    r = run_cmd(cmd, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_two_rank_run_logs_the_anytime_curve_and_analyze_reads_it(tmp_path):
    job = alma_job(tmp_path, "single")
    out = tmp_path / "single"
    r = run_ok(mpirun_cmd(2, ["run", job, "--out", str(out)]))
    assert "CER" in r.stdout
    log = read_h5(str(out / "log.h5"))
    a = log["attrs"]
    assert a["status"] == "complete" and a["scenario"] == "megabatch" and a["world_size"] == 2
    # One row per arrival; updates exactly where the schedule says (wait 2 of 6: arrivals 1, 3, 5).
    expected = Schedule(MegaBatchStream(int(a["num_train"]), 6, 0), wait=2, replay=0.5).update_arrivals()
    assert expected == [1, 3, 5]
    assert list(log["arrivals/arrival"]) == list(range(6))
    assert list(np.flatnonzero(log["arrivals/updated"])) == expected
    errors = log["arrivals/error"]
    np.testing.assert_allclose(log["arrivals/cer"], np.cumsum(errors))
    assert a["cer"] == pytest.approx(errors.sum()) and a["final_error"] == errors[-1]
    assert errors[0] > 0.6 and errors[-1] < 0.3             # untrained at first, learnt at the end
    assert errors[2] == errors[1] and errors[4] == errors[3]  # waiting keeps the model
    flops = log["arrivals/train_flops"]
    assert flops[0] == 0 and np.all(np.diff(flops) >= 0) and flops[-1] == a["train_flops"] > 0
    # Replay 0.5: each update trains on its new mega-batches plus half of every earlier one.
    n = int(a["num_train"])
    sizes = [len(mb) for mb in np.array_split(np.arange(n), 6)]
    assert list(log["updates/replay_samples"]) == [0, round(0.5 * sizes[0]) + round(0.5 * sizes[1]),
                                                   sum(round(0.5 * s) for s in sizes[:4])]
    new = [sizes[0] + sizes[1], sizes[2] + sizes[3], sizes[4] + sizes[5]]
    assert list(log["updates/train_samples"] + log["updates/val_samples"]) == [
        k + r for k, r in zip(new, log["updates/replay_samples"])]

    text = run_ok(hpccl_cmd("analyze", str(out), "--plot", str(tmp_path / "plots"))).stdout
    assert "CER" in text and "final error" in text and "(* = update)" in text
    assert (tmp_path / "plots" / "alma_error.png").stat().st_size > 0
    summary = json.loads(run_ok(hpccl_cmd("analyze", str(out), "--format", "json")).stdout)
    assert summary["cer"] == pytest.approx(float(errors.sum())) and summary["updates"] == 3


def test_ensemble_on_rank_groups_equals_the_same_ensemble_on_one_rank(tmp_path):
    """Two members on two groups of one rank each: every member is trained by the same
    (group-)rank 0 with the same seeds, so the error curve equals the one-rank run."""
    learner = {"kind": "fixed_ensemble", "size": 2, "train": "all"}
    one = tmp_path / "one"
    run_ok(hpccl_cmd("run", alma_job(tmp_path, "one", learner=learner), "--out", str(one)))
    two = tmp_path / "two"
    run_ok(mpirun_cmd(2, ["run", alma_job(tmp_path, "two", learner={**learner, "groups": 2}), "--out", str(two)]))
    a, b = read_h5(str(one / "log.h5")), read_h5(str(two / "log.h5"))
    assert b["attrs"]["groups"] == 2
    np.testing.assert_array_equal(a["arrivals/error"], b["arrivals/error"])
    np.testing.assert_array_equal(a["arrivals/parameters"], b["arrivals/parameters"])
    np.testing.assert_allclose(a["arrivals/train_flops"], b["arrivals/train_flops"])
    # each group trained only its own member: the two ranks' FLOPs split the one-rank total
    ranks = [read_h5(str(p)) for p in sorted((two / "ranks").iterdir())]
    assert [r["attrs"]["group"] for r in ranks] == [0, 1]
    flops = [r["attrs"]["train_flops"] for r in ranks]
    total = a["attrs"]["train_flops"]
    assert min(flops) > 0 and max(flops) < total
    assert sum(flops) == pytest.approx(total, rel=1e-12)


def test_growing_learners_grow_and_compare(tmp_path):
    runs = {}
    for name, sections in {
        "ens": {"learner": {"kind": "growing_ensemble", "init": "copy"}},
        "moe": {"learner": {"kind": "growing_moe", "split_every": 1},
                "model": {"kind": "moe", "hidden": 16, "num_layers": 1}},
    }.items():
        runs[name] = tmp_path / name
        run_ok(mpirun_cmd(2, ["run", alma_job(tmp_path, name, **sections), "--out", str(runs[name])]))
    ens = read_h5(str(runs["ens"] / "log.h5"))
    p = ens["arrivals/parameters"]
    assert p[-1] == 3 * p[0]                  # three updates, three members of one size
    moe = read_h5(str(runs["moe"] / "log.h5"))
    assert np.all(np.diff(moe["arrivals/parameters"]) >= 0) and moe["arrivals/parameters"][-1] > \
        moe["arrivals/parameters"][0]
    assert all(json.loads(s) == [0] or len(json.loads(s)) == 1 for s in moe["updates/split"])
    text = run_ok(hpccl_cmd("analyze", str(runs["ens"]), str(runs["moe"]), "--compare")).stdout
    assert "growing_ensemble" in text and "growing_moe" in text and "train FLOPs" in text
    csv = run_ok(hpccl_cmd("analyze", str(runs["ens"]), str(runs["moe"]), "--format", "csv")).stdout
    assert len(csv.strip().splitlines()) == 3


@pytest.mark.parametrize("change, message", [
    ({"learner": {"kind": "incremental"}}, "ALMA learners"),
    ({"learner": {"kind": "growing_moe"}}, "needs 'model: {kind: moe}'"),
    ({"learner": {"kind": "single", "init": "copy"}}, "unknown key 'learner.init'"),
    ({"learner": {"kind": "fixed_ensemble", "size": 0}}, "learner.size"),
    ({"scenario": {**SCENARIO, "wait": 7}}, "scenario.wait"),
    ({"scenario": {**SCENARIO, "replay": 1.5}}, "scenario.replay"),
    ({"scenario": {"kind": "class_incremental"}, "learner": {"kind": "growing_ensemble"}}, "megabatch"),
])
def test_bad_megabatch_jobs_are_refused(change, message):
    raw = {"name": "t", "data": {"builtin": "digits"}, "scenario": SCENARIO, "learner": {"kind": "single"}}
    raw.update(change)
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace("(", r"\(").replace(")", r"\)")):
        job_from_dict(raw, source="job.yaml")


def test_wait_all_is_offline_and_groups_must_divide_ranks(tmp_path):
    cfg = job_from_dict({"name": "t", "data": {"builtin": "digits"}, "learner": "single",
                         "scenario": {**SCENARIO, "wait": "all"}})
    assert cfg.scenario.wait == 6
    job = alma_job(tmp_path, "bad", learner={"kind": "growing_ensemble", "groups": 2})
    r = run_cmd(mpirun_cmd(3, ["run", job, "--out", str(tmp_path / "bad")]), timeout=120)
    assert r.returncode != 0 and "divides the 3 ranks evenly" in r.stdout + r.stderr


def test_shipped_studies_are_valid_jobs():
    """Every variant of every shipped study file is a valid job (what scripts/alma_study.py runs)."""
    import glob

    from hpccl.alma.study import load_study
    from hpccl.config import load_job
    from helpers import ROOT
    files = glob.glob(os.path.join(ROOT, "jobs", "studies", "*.yaml"))
    assert files
    for path in files:
        study = load_study(path)
        assert study.variants and study.seeds
        for v in study.variants:
            cfg = load_job(study.job, ["seed=0"] + v.set_items())
            assert cfg.scenario.kind == "megabatch", (path, v.name)


def test_bad_study_file_is_refused(tmp_path):
    from hpccl.alma.study import load_study
    bad = tmp_path / "s.yaml"
    bad.write_text("job: missing.yaml\nstudies: {}\n")
    with pytest.raises(ConfigError, match="key 'job': expected an existing job file"):
        load_study(str(bad))
    bad.write_text("job: missing.yaml\n")
    with pytest.raises(ConfigError, match="needs 'job'"):
        load_study(str(bad))
