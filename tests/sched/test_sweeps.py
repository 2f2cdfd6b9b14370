"""Scaling sweeps: batch and lr rules per point, refusals before anything is written, the
manifest, and submission of every point (fake sbatch on PATH)."""

import json
import os

import pytest

from hpccl.cli import main
from hpccl.sched.sweeps import batches, load_manifest, parse_gpus

from helpers import ROOT

QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")     # batch_size 16, lr 0.025, linear


def points_of(sweep_dir):
    return json.loads((sweep_dir / "manifest.json").read_text())["points"]


def test_weak_scaling_keeps_the_per_gpu_batch_and_records_the_lr(tmp_path, capsys):
    out = tmp_path / "weak"
    assert main(["submit", QUICKSTART, "--site", "perlmutter", "--scaling", "weak", "--gpus",
                 "1,2,4,8,16,32,64,128", "--set", "train.lr_scaling_cap=64", "--dry-run",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weak scaling sweep on site 'perlmutter'" in printed and "dry run, nothing submitted" in printed
    m = json.loads((out / "manifest.json").read_text())
    assert (m["kind"], m["mode"], m["site"], m["schema_version"]) == ("scaling_sweep", "weak", "perlmutter", 1)
    assert (m["lr_scaling"], m["lr_scaling_cap"], m["base_lr"], m["dry_run"]) == ("linear", 64, 0.025, True)
    pts = m["points"]
    assert [p["gpus"] for p in pts] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert [p["nodes"] for p in pts] == [1, 1, 1, 2, 4, 8, 16, 32]
    assert [p["ranks_per_node"] for p in pts] == [1, 2, 4, 4, 4, 4, 4, 4]
    assert all(p["batch_per_gpu"] == 16 for p in pts)
    assert [p["global_batch"] for p in pts] == [16 * g for g in [1, 2, 4, 8, 16, 32, 64, 128]]
    assert [p["lr_multiplier"] for p in pts] == [1, 2, 4, 8, 16, 32, 64, 64]    # capped at 64
    assert pts[-1]["lr"] == pytest.approx(0.025 * 64)
    assert [p["queue"] for p in pts] == ["debug"] * 6 + ["regular"] * 2
    assert all(p["job_id"] is None and p["run_dir"] == f"g{p['gpus']:04d}" for p in pts)
    for p in pts:   # every point has its own resolved job and script
        run = out / p["run_dir"]
        assert "batch_size: 16" in (run / "job.yaml").read_text()
        assert f"srun -n {p['gpus']} " in (run / "job.sh").read_text()


def test_strong_scaling_divides_one_global_batch(tmp_path):
    out = tmp_path / "strong"
    assert main(["submit", QUICKSTART, "--site", "slurm-local", "--scaling", "strong", "--gpus", "1,2",
                 "--dry-run", "--out", str(out)]) == 0
    pts = points_of(out)
    assert [(p["batch_per_gpu"], p["global_batch"]) for p in pts] == [(16, 16), (8, 16)]
    assert [p["lr_multiplier"] for p in pts] == [1, 2]
    assert "batch_size: 8" in (out / "g0002" / "job.yaml").read_text()
    out2 = tmp_path / "strong-global"
    assert main(["submit", QUICKSTART, "--site", "perlmutter", "--scaling", "strong", "--gpus",
                 "4,8,16", "--global-batch", "96", "--set", "learner=incremental", "--dry-run",
                 "--out", str(out2)]) == 0
    assert [p["batch_per_gpu"] for p in points_of(out2)] == [24, 12, 6]


def test_refused_points_refuse_the_sweep_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "strong"
    assert main(["submit", QUICKSTART, "--site", "perlmutter", "--scaling", "strong", "--gpus",
                 "1,2,4,8,32,3", "--dry-run", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    # the job's own rules still hold at every point: 16 / 4 = 4 is fewer than rehearsal.candidates
    assert "4 GPUs: " in err and "'rehearsal.candidates': expected at most train.batch_size (4)" in err
    assert "strong scaling sweep on site 'perlmutter' refused; nothing was written or submitted" in err
    assert "32 GPUs: the global batch 16 does not divide by 32" in err
    assert "3 GPUs: the global batch 16 does not divide by 3" in err
    assert not out.exists()
    assert main(["submit", QUICKSTART, "--site", "perlmutter", "--scaling", "strong", "--gpus", "1,2,4,8",
                 "--min-batch-per-gpu", "4", "--set", "learner=incremental", "--dry-run",
                 "--out", str(out)]) == 2
    assert "8 GPUs: 16 / 8 = 2 per GPU, below the minimum 4" in capsys.readouterr().err
    # site limits: slurm-local has one node of 2 "GPUs"
    assert main(["submit", QUICKSTART, "--site", "slurm-local", "--scaling", "weak", "--gpus", "1,2,4,3",
                 "--dry-run", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "4 GPUs: site 'slurm-local': no queue admits a job of 2 node(s)" in err
    assert "3 GPUs: --gpus 3: site 'slurm-local' has 2 GPUs per node" in err
    # a per-user queue limit counts the sweep's own points (Polaris debug-scaling: 1 job)
    assert main(["submit", QUICKSTART, "--site", "polaris", "--scaling", "weak", "--gpus", "16,32",
                 "--dry-run", "--out", str(out)]) == 2
    assert "32 GPUs: site 'polaris': no queue admits" in capsys.readouterr().err
    assert not out.exists()


def test_every_point_is_submitted_and_the_manifest_records_job_ids(tmp_path, monkeypatch, capsys):
    bin_dir, counter = tmp_path / "bin", tmp_path / "count"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f"#!/bin/bash\nn=$(( $(cat {counter} 2>/dev/null || echo 100) + 1 ))\necho $n > {counter}\n"
        "if [[ $n == 104 ]]; then echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2; exit 1; fi\n"
        "echo $n\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "sweep"
    assert main(["submit", QUICKSTART, "--site", "perlmutter", "--account", "m1_g", "--scaling", "weak",
                 "--gpus", "4,8", "--out", str(out)]) == 0
    assert [p["job_id"] for p in points_of(out)] == ["101", "102"]
    assert json.loads((out / "g0008" / "submission.json").read_text())["sweep"] == str(out)
    m = load_manifest(str(out))
    assert m["points"][0]["run_dir"] == str(out / "g0004") and m["dry_run"] is False
    # the third submission fails: the error says what was submitted; the manifest records it
    out2 = tmp_path / "sweep2"
    assert main(["submit", QUICKSTART, "--site", "perlmutter", "--account", "m1_g", "--scaling", "weak",
                 "--gpus", "4,8,16", "--out", str(out2)]) == 2
    err = capsys.readouterr().err
    assert "QOSMaxSubmitJobPerUserLimit" in err and "`sbatch --parsable" in err
    assert "Submitted before this point (8 GPUs): 4 GPUs: job 103; the rest were not submitted" in err
    assert [p["job_id"] for p in points_of(out2)] == ["103", None, None]


@pytest.mark.parametrize("text, error", [("1,2,x", "found 'x'"), ("0", ">= 1"), ("2,2", "appears twice")])
def test_gpu_list_errors(text, error):
    from hpccl.core.errors import ConfigError
    with pytest.raises(ConfigError, match=error):
        parse_gpus(text)


def test_batch_rules():
    assert batches("weak", 32, [1, 4], None, 1) == ({1: (32, 32), 4: (32, 128)}, [])
    sizes, refused = batches("strong", 32, [2, 4, 64], None, 1)
    assert sizes == {2: (32, 64), 4: (16, 64), 64: (1, 64)} and refused == []
