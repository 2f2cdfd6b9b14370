"""hpccl analyze and hpccl model: reading logs (complete, in progress, truncated), merging
ranks, the efficiency arithmetic, every output format, and the plots."""

import json
import os

import numpy as np
import pytest

from hpccl.analysis import model
from hpccl.sched import scaling
from hpccl.analysis.report import format_report, summarize
from hpccl.core.errors import HpcclError
from hpccl.core.logs import H5Log

from helpers import hpccl_cmd, run_cmd

NAN = float("nan")


def fake_run(run_dir, *, learner="incremental", world=2, tasks_done=3, num_tasks=3, status="complete",
             epoch_time=1.0, samples=1000, train_time=3.0, rank_totals=(1.0, 1.5)):
    """A run directory written with the real log writer (no training needed)."""
    os.makedirs(os.path.join(run_dir, "ranks"), exist_ok=True)
    acc = np.full((num_tasks, num_tasks), NAN)
    for i in range(tasks_done):
        acc[i, :i + 1] = 0.9 - 0.1 * (i - np.arange(i + 1))
    log = H5Log(os.path.join(run_dir, "log.h5"), "run", {
        "name": "fake", "learner": learner, "world_size": world, "backend": "torch",
        "tasks_completed": tasks_done, "train_time_s": train_time,
        "config_yaml": "learner: {kind: %s}\ntrain: {batch_size: 16}\n" % learner})
    for t in range(tasks_done):
        log.append("epochs", task=t, epoch=0, loss=1.0, train_accuracy=0.5, lr=0.1, samples=samples,
                   time_s=epoch_time, iterations=10)
        log.append("tasks", index=t, train_time_s=train_time / tasks_done, samples=samples,
                   iterations=10, average_accuracy=0.8, classes="0 1")
    log.put("eval/top1", acc)
    log.put("eval/top5", np.where(np.isnan(acc), NAN, 1.0))
    log.close(status) if status != "running" else log.flush()
    for rank, total in zip(range(world), rank_totals):
        rl = H5Log(os.path.join(run_dir, "ranks", f"rank{rank:05d}.h5"), "rank",
                   {"rank": rank, "hostname": "h", "local_rank": rank})
        n = 10
        parts = {"data_load": 0.1, "rehearsal_wait": 0.0, "forward_backward": 0.5,
                 "allreduce_step": 0.3, "other": 0.1}
        for k, share in parts.items():
            rl.put(f"timers/{k}", np.full(n, total * share / n))
        rl.put("timers/total", np.full(n, total / n))
        rl.put("timers/task", np.zeros(n, dtype=int))
        rl.close()
    return str(run_dir)


def test_summary_merges_ranks_and_shows_the_straggler(tmp_path):
    s = summarize(fake_run(tmp_path / "a", rank_totals=(1.0, 2.0)))
    t = s["timers"]
    assert [r["total_s"] for r in t["per_rank"]] == pytest.approx([1.0, 2.0])
    assert t["slowest_rank"] == 1
    assert t["mean_fractions"]["forward_backward"] == pytest.approx(0.5)
    assert s["final_average_accuracy"] == pytest.approx(np.mean([0.7, 0.8, 0.9]))
    assert s["samples_per_s"] == pytest.approx(3000 / 3.0)


def test_a_run_in_progress_is_read_up_to_its_last_flush(tmp_path):
    s = summarize(fake_run(tmp_path / "a", tasks_done=2, num_tasks=5, status="running"))
    assert s["status"] == "running" and "incomplete" in s["note"]
    assert np.array(s["accuracy_matrix"]).shape == (2, 2)
    text = format_report([s])
    assert "incomplete" in text


def test_a_truncated_log_is_a_clear_error(tmp_path):
    run = fake_run(tmp_path / "a")
    path = os.path.join(run, "log.h5")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(HpcclError, match="not a readable HDF5 log"):
        summarize(run)


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "md"])
def test_every_output_format(tmp_path, fmt):
    a = fake_run(tmp_path / "a", train_time=2.0)
    b = fake_run(tmp_path / "b", learner="scratch", train_time=6.0)
    r = run_cmd(hpccl_cmd("analyze", a, b, "--compare", "--format", fmt))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    if fmt == "json":
        data = json.loads(out)
        assert [d["learner"] for d in data] == ["incremental", "scratch"]
    elif fmt == "csv":
        lines = out.strip().splitlines()
        assert lines[0].startswith("run,learner,ranks") and len(lines) == 3
        assert lines[2].split(",")[8] == "3.00"          # 6 s / 2 s: x fastest
    elif fmt == "md":
        assert out.startswith("| run | learner") and "|---|" in out
    else:
        assert "x fastest" in out and "scratch" in out


@pytest.mark.parametrize("fmt", ["text", "md", "csv"])
def test_compare_ranks_only_complete_runs_and_names_the_others(tmp_path, fmt):
    """A failed, a preempted and a killed run (SIGKILL leaves status 'running') are faster here
    than the complete ones, yet 'x fastest' is relative to the fastest complete run and the
    others are listed apart, each with its status and why it was left out."""
    a = fake_run(tmp_path / "a", train_time=2.0)
    b = fake_run(tmp_path / "b", learner="scratch", train_time=6.0)
    failed = fake_run(tmp_path / "failed", train_time=0.5, status="failed")
    pre = fake_run(tmp_path / "pre", train_time=0.7, tasks_done=2, status="preempted")
    killed = fake_run(tmp_path / "killed", train_time=0.1, tasks_done=1, status="running")
    r = run_cmd(hpccl_cmd("analyze", "--compare", failed, a, pre, b, killed, "--format", fmt))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    if fmt == "csv":
        rows = [line.split(",") for line in out.strip().splitlines()]
        assert [row[0] for row in rows[1:]] == ["a", "b", "failed", "pre", "killed"]
        assert [row[8] for row in rows[1:3]] == ["1.00", "3.00"]          # x fastest: complete only
        assert [row[-1] for row in rows[3:]] == ["failed", "preempted", "running"]
        assert all(set(row[3:-1]) == {"-"} for row in rows[3:])         # no metrics to misread
        return
    table, _, rest = out.partition("3 run(s) not compared (only complete runs are ranked):")
    assert rest, out
    for name in ("failed", "pre", "killed"):
        assert f"| {name} |" not in table and f"\n{name} " not in table
    assert ("| 3.00 |" if fmt == "md" else " 3.00 ") in table             # b: 6 s / 2 s
    assert f"not compared: {failed}: status 'failed', it stopped on an error; 3 task(s)" in rest
    assert f"{pre}: status 'preempted'" in rest and f"hpccl run --resume {pre}" in rest
    assert f"{killed}: status 'running'" in rest and "SIGKILL" in rest


def test_compare_with_no_complete_run_says_so(tmp_path):
    from hpccl.continual.report import format_compare
    reports = [summarize(fake_run(tmp_path / "k", status="running", tasks_done=1))]
    text = format_compare(reports)
    assert text.startswith("no run to compare: none of the 1 run(s) is complete.")
    assert "status 'running'" in text


def test_plots_are_written(tmp_path):
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", learner="scratch")
    out = tmp_path / "figs"
    r = run_cmd(hpccl_cmd("analyze", a, b, "--plot", str(out)))
    assert r.returncode == 0, r.stderr
    for name in ("accuracy_per_task.png", "accuracy_vs_time.png", "time_breakdown.png"):
        path = out / name
        assert path.exists() and path.stat().st_size > 5000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_strong_and_weak_efficiency_arithmetic():
    strong = scaling.strong_scaling([1, 2, 4, 8], [8.0, 4.0, 2.5, 2.0])
    assert strong["speedup"] == pytest.approx([1, 2, 3.2, 4])
    assert strong["efficiency"] == pytest.approx([1, 1, 0.8, 0.5])
    weak = scaling.weak_scaling([1, 2, 4], [100.0, 190.0, 300.0])
    assert weak["efficiency"] == pytest.approx([1, 0.95, 0.75])
    node = scaling.weak_scaling([4, 8, 16], [400.0, 760.0, 1200.0], base_gpus=4)
    assert node["efficiency"] == pytest.approx([1, 0.95, 0.75])


def test_sweep_directory_is_analysed_with_plot(tmp_path):
    sweep = tmp_path / "sweep"
    points = []
    for g, t in ((1, 4.0), (2, 2.2), (4, 1.4)):
        fake_run(sweep / f"g{g:04d}", world=g, epoch_time=t, rank_totals=(1.0,) * g)
        points.append({"gpus": g, "nodes": 1, "ranks_per_node": g, "batch_per_gpu": 64 // g,
                       "global_batch": 64, "lr_multiplier": 1.0, "lr": 0.1, "queue": None,
                       "walltime": "00:10:00", "run_dir": f"g{g:04d}", "job_id": None})
    (sweep / "manifest.json").write_text(json.dumps({"schema_version": 1, "kind": "scaling_sweep",
                                                     "mode": "strong", "site": "local", "points": points}))
    r = run_cmd(hpccl_cmd("analyze", str(sweep), "--format", "json"))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    eff = [p["efficiency"] for p in data["points"]]
    assert eff == pytest.approx([1.0, 4.0 / (2 * 2.2), 4.0 / (4 * 1.4)])
    r = run_cmd(hpccl_cmd("analyze", str(sweep), "--plot", str(tmp_path / "figs")))
    assert r.returncode == 0 and "speedup" in r.stdout
    assert (tmp_path / "figs" / "scaling_sweep.png").stat().st_size > 5000


def test_model_arithmetic_on_known_inputs():
    m = model.Measured(data_s_per_sample=0.0, compute_s_per_sample=1e-3, step_s=0.0,
                       gradient_bytes=100_000_000, sample_bytes=12288, batch=10, representatives=2,
                       candidates=4, fetch_s_per_rep=1e-4, insert_s_per_candidate=1e-5,
                       async_rehearsal=True, samples_per_epoch=1000, ranks=1, device="cuda:0")
    net = model.Network(intra_latency_s=1e-5, intra_bandwidth=1e11, inter_latency_s=2e-5, inter_bandwidth=1e10)
    one, four, eight = model.predict(m, [1, 4, 8], gpus_per_node=4, net=net)
    assert one["t_allreduce"] == 0 and one["iteration_s"] == pytest.approx(12e-3)
    assert four["t_allreduce"] == pytest.approx(2 * 3 / 4 * 1e8 / 1e11 + 6 * 1e-5)
    assert eight["t_allreduce"] == pytest.approx(2 * 7 / 8 * 1e8 / 1e10 + 14 * 2e-5)
    # overlapped: fetch (2 x 0.1 ms) + insert hides behind compute, nothing exposed
    assert four["rehearsal_exposed"] == 0 and eight["rehearsal_exposed"] == 0
    sync = model.predict(model.Measured(**{**m.__dict__, "async_rehearsal": False}), [1], 4, net)[0]
    assert sync["rehearsal_exposed"] == pytest.approx(2e-4 + 4e-5)
    assert eight["efficiency"] == pytest.approx(eight["samples_per_s"] / (8 * one["samples_per_s"]))
