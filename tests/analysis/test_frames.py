"""hpccl.analysis.open_run / open_sweep / concat: the logs of real runs of every kind as
DataFrames. Every frame is checked against the HDF5 datasets read here with plain h5py, and
the derived ones (accuracy matrix, forgetting, timer breakdown, buffer, scaling table) against
what ``hpccl analyze --format json`` prints; a run opened while it writes, a killed run, a
failed run, several runs concatenated, and the error paragraphs."""

import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from hpccl.analysis import concat, open_run, open_sweep
from hpccl.cli import main
from hpccl.core.errors import HpcclError

from helpers import ROOT, SMALL_RUNS, hpccl_cmd, interrupted_run, run_cmd, write_job

QUICK = "jobs/quickstart.yaml"


def analyze_json(path, capsys):
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = main(["analyze", str(path), "--format", "json"])
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def h5_tables(path) -> dict:
    """{table: {column: values}} of a log, read with h5py alone (SWMR: the writer may have died)."""
    tables = {}
    with h5py.File(path, "r", swmr=True) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.attrs.get("hpccl") in (b"row", "row"):
                group, column = name.rsplit("/", 1)
                values = obj[...]
                if h5py.check_string_dtype(obj.dtype):
                    values = np.array([v.decode() for v in values], dtype=object)
                tables.setdefault(group, {})[column] = values
        f.visititems(visit)
    return tables


def h5_array(path, name):
    with h5py.File(path, "r", swmr=True) as f:
        return f[name][...]


def rank_paths(run_dir):
    return sorted(os.path.join(run_dir, "ranks", n) for n in os.listdir(os.path.join(run_dir, "ranks"))
                  if n.endswith(".h5"))


def assert_frame_is_table(frame, table):
    assert sorted(frame.columns) == sorted(table), (list(frame.columns), sorted(table))
    for column, values in table.items():
        got = frame[column].to_numpy()
        if values.dtype == object:
            assert list(got) == list(values), column
        else:
            np.testing.assert_array_equal(got, values, err_msg=column)


def assert_tables_match_h5(run, run_dir):
    """Every table of log.h5 and of the rank logs, as frames, holds the HDF5 datasets."""
    tables = h5_tables(os.path.join(run_dir, "log.h5"))
    assert run.tables == sorted(tables)
    for name, table in tables.items():
        assert_frame_is_table(run.table(name), table)
    per_rank = {}
    for p in rank_paths(run_dir):
        rank = int(os.path.basename(p)[4:9])
        for name, table in h5_tables(p).items():
            per_rank.setdefault(name, {})[rank] = table
    assert run.rank_tables == sorted(per_rank)
    for name, ranks in per_rank.items():
        frame = run.rank_table(name)
        assert sorted(set(frame["rank"])) == sorted(ranks)
        for rank, table in ranks.items():
            assert_frame_is_table(frame[frame["rank"] == rank].drop(columns=["rank"]).drop(
                columns=["iteration"] if name == "timers" else []), table)


@pytest.mark.parametrize("kind", list(SMALL_RUNS))
def test_every_kind_opens_with_its_logs_as_frames(small_runs, kind, capsys):
    run_dir = small_runs[kind]
    run = open_run(run_dir)
    summary = analyze_json(run_dir, capsys)
    assert (run.kind, run.status, run.log_status) == (summary["job_kind"], "complete", "complete")
    assert run.path == run_dir and run.world_size == summary["world_size"] == SMALL_RUNS[kind][2]
    with open(os.path.join(run_dir, "config.yaml")) as f:
        assert run.config == yaml.safe_load(f)
    assert_tables_match_h5(run, run_dir)
    assert run.failures.empty and list(run.failures.columns) == ["rank", "status", "failure"]
    assert sorted(run.ranks["rank"]) == list(range(run.world_size))
    assert set(run.ranks["status"]) == {"complete"}
    # the summary the API holds is the one hpccl analyze prints
    assert json.loads(json.dumps(summary)) == json.loads(_as_json(run.summary))


def _as_json(summary):
    from hpccl.analysis.report import _jsonable
    return json.dumps(_jsonable(summary))


def nan_list(frame):
    return [[None if np.isnan(v) else v for v in row] for row in frame.to_numpy().tolist()]


def assert_continual_frames_match_analyze(run, summary):
    assert nan_list(run.accuracy) == summary["accuracy_matrix"]
    assert nan_list(run.top5) == summary["top5_matrix"]
    assert run.accuracy.index.name == "after_task" and run.accuracy.columns.name == "task"
    assert run.forgetting["forgetting"].tolist() == pytest.approx(summary["forgetting_per_task"])
    assert run.forgetting["average_accuracy"].tolist() == pytest.approx(summary["average_accuracy"])
    tb = run.timer_breakdown
    for row in summary["timers"]["per_rank"]:
        mine = tb[tb["rank"] == row["rank"]].iloc[0]
        assert (mine["hostname"], mine["iterations"]) == (row["hostname"], row["iterations"])
        assert mine["total_s"] == pytest.approx(row["total_s"])
        for phase, seconds in row["seconds"].items():
            assert mine[f"{phase}_s"] == pytest.approx(seconds)
            assert mine[f"{phase}_fraction"] == pytest.approx(row["fractions"][phase])
    assert sorted(tb["rank"]) == sorted(r["rank"] for r in summary["timers"]["per_rank"])


def test_continual_frames_are_the_numbers_analyze_prints(small_runs, capsys):
    run_dir = small_runs["continual"]
    run, summary = open_run(run_dir), analyze_json(run_dir, capsys)
    assert_continual_frames_match_analyze(run, summary)
    top1 = h5_array(os.path.join(run_dir, "log.h5"), "eval/top1")
    np.testing.assert_array_equal(run.accuracy.to_numpy(), top1)      # all tasks evaluated
    for p in rank_paths(run_dir):            # the breakdown sums the rank's raw timer columns
        rank = int(os.path.basename(p)[4:9])
        timers = h5_tables(p)["timers"]
        mine = run.timer_breakdown.set_index("rank").loc[rank]
        assert mine["iterations"] == len(timers["total"])
        assert mine["total_s"] == pytest.approx(timers["total"].sum())
        assert mine["forward_backward_s"] == pytest.approx(timers["forward_backward"].sum())
        assert mine["other_fraction"] == pytest.approx(timers["other"].sum() / timers["total"].sum())
        buffer = h5_tables(p)["tasks"]
        mine = run.buffer[run.buffer["rank"] == rank]
        assert mine["task"].tolist() == buffer["index"].tolist()
        assert mine["buffer_stored"].tolist() == buffer["buffer_stored"].tolist()
    last = {b["rank"]: b for b in summary["buffer"]}
    for _, row in run.buffer.groupby("rank").tail(1).iterrows():
        assert row["buffer_stored"] == last[row["rank"]]["buffer_stored"]
        assert row["buffer_bytes_allocated"] == last[row["rank"]]["buffer_bytes_allocated"]
    # kinds without these frames give empty ones, not errors
    for kind in ("megabatch", "erm", "online_rnn"):
        other = open_run(small_runs[kind])
        assert other.accuracy.empty and other.forgetting.empty and other.epochs.empty and other.buffer.empty


def test_several_runs_concatenated_with_a_run_column(small_runs, tmp_path):
    a, b = small_runs["continual"], small_runs["megabatch"]
    epochs = concat([a, open_run(a)], "epochs")
    one = open_run(a).epochs
    assert epochs["run"].tolist() == [a] * len(one) * 2
    pd.testing.assert_frame_equal(epochs.iloc[len(one):].drop(columns="run").reset_index(drop=True), one)
    arrivals = concat({"cont": a, "alma": b}, "arrivals")      # a log.h5 table by name
    assert set(arrivals["run"]) == {"alma"}
    np.testing.assert_array_equal(arrivals["error"], h5_tables(os.path.join(b, "log.h5"))["arrivals"]["error"])
    acc = concat({"x": a}, "accuracy")                          # the matrix in long form
    top1 = h5_array(os.path.join(a, "log.h5"), "eval/top1")
    assert len(acc) == top1.size
    for _, row in acc.iterrows():
        expected = top1[row["after_task"], row["task"]]
        assert row["run"] == "x" and (row["accuracy"] == expected or np.isnan(expected) and np.isnan(row["accuracy"]))
    tb = concat({"x": a, "y": a}, "timer_breakdown")
    assert tb.groupby("run").size().to_dict() == {"x": 2, "y": 2}
    with pytest.raises(HpcclError) as e:
        concat([a], "no_such_frame")
    assert "no_such_frame" in str(e.value) and "epochs" in str(e.value) and "tasks" in str(e.value)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A continual run opened again and again while it trains: (run dir, its exit code and
    output, (status, epochs rows, timer rows) of every read)."""
    out = tmp_path_factory.mktemp("live") / "run"
    proc = subprocess.Popen(hpccl_cmd("run", QUICK, "-n", "2", "--out", str(out), "--set", f"train.epochs={LIVE_EPOCHS}",
                                      "--set", f"scenario.num_tasks={LIVE_TASKS}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    seen = []
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if os.path.exists(out / "log.h5"):
            run = open_run(out)
            seen.append((run.status, len(run.epochs), len(run.timers)))
        time.sleep(0.02)
    log, _ = proc.communicate(timeout=60)
    return str(out), proc.returncode, log, seen


LIVE_EPOCHS, LIVE_TASKS = 8, 2


def test_a_run_read_while_it_writes_grows_and_its_writer_finishes(live_run):
    out, returncode, log, seen = live_run
    assert returncode == 0, log
    running = [s for s in seen if s[0] == "running"]
    assert {s[0] for s in seen} <= {"running", "complete"}, seen
    assert len({rows for _, rows, _ in running}) >= 2, seen      # read at two moments of the run at least
    assert [s[1] for s in seen] == sorted(s[1] for s in seen)     # rows only ever come
    assert [s[2] for s in seen] == sorted(s[2] for s in seen)
    final = open_run(out)
    assert (final.status, len(final.epochs)) == ("complete", LIVE_EPOCHS * LIVE_TASKS)
    assert_tables_match_h5(final, out)


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory):
    """A run whose rank 0 was SIGKILLed in task 1 (nothing recorded its end), and one whose
    rank 1 raised there (its rank log says failed)."""
    base = tmp_path_factory.mktemp("stopped")
    sets = ["train.epochs=1", "scenario.num_tasks=2"]
    procs = {}
    for name, inject in (("killed", "rank=0,task=1,how=sigkill"), ("failed", "rank=1,task=1")):
        procs[name] = subprocess.Popen(hpccl_cmd("run", QUICK, "-n", "2", "--out", str(base / name),
                                                 *[a for s in sets for a in ("--set", s)]),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                       env=dict(os.environ, HPCCL_INJECT_FAILURE=inject))
    for name, p in procs.items():
        out, _ = p.communicate(timeout=240)
        assert p.returncode != 0, f"{name}: {out}"
    return {name: str(base / name) for name in procs}


def test_a_killed_run_opens_and_says_killed(stopped_runs, capsys):
    run_dir = stopped_runs["killed"]
    run, summary = open_run(run_dir), analyze_json(run_dir, capsys)
    assert (run.status, run.log_status, summary["status"]) == ("killed", "running", "running")
    assert run.failures.empty
    assert_tables_match_h5(run, run_dir)
    # task 1 was trained but not evaluated: the matrix holds task 0 only, as analyze says
    assert summary["tasks_completed"] == 1 and run.accuracy.shape == (1, 1)
    assert set(run.epochs["task"]) == {0, 1}
    assert_continual_frames_match_analyze(run, summary)


def test_a_failed_run_names_the_rank_that_failed(stopped_runs, capsys):
    run_dir = stopped_runs["failed"]
    run, summary = open_run(run_dir), analyze_json(run_dir, capsys)
    assert (run.status, run.log_status) == ("failed", summary["status"])
    failures = run.failures
    assert failures["rank"].tolist() == [1] and failures["status"].tolist() == ["failed"]
    with h5py.File(os.path.join(run_dir, "ranks", "rank00001.h5"), "r") as f:
        assert f.attrs["status"] in ("failed", b"failed")
    assert_continual_frames_match_analyze(run, summary)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A 2-rank run preempted (SIGUSR1: checkpoint, then stop) in task 1 and resumed on 1 rank."""
    base = tmp_path_factory.mktemp("resumed")
    job = write_job(base / "job.yaml", scenario={"num_tasks": 3}, model={"kind": "mlp", "hidden": [32]},
                    train={"epochs": 2, "batch_size": 16, "lr": 0.025})
    code, out = interrupted_run(job, base / "run", 2, "task 1 epoch 1:")
    assert open_run(base / "run").status == "preempted", out
    r = run_cmd(hpccl_cmd("run", "--resume", str(base / "run"), "-n", "1"))
    assert r.returncode == 0, r.stdout + r.stderr
    return str(base / "run")


def test_checkpoints_resumes_and_rescales_of_a_resumed_run(resumed_run, capsys):
    run, summary = open_run(resumed_run), analyze_json(resumed_run, capsys)
    assert (run.status, run.world_size) == ("complete", 1)
    assert_tables_match_h5(run, resumed_run)
    assert "signal" in run.checkpoints["reason"].tolist()
    assert run.resumes["world_size"].tolist() == [1]
    assert (run.rescales["from_ranks"].tolist(), run.rescales["to_ranks"].tolist()) == ([2], [1])
    assert run.rescales["task"].tolist() == run.resumes["task"].tolist()
    assert run.ranks["rank"].tolist() == [0]            # rank 1's log was retired with its rank
    assert_continual_frames_match_analyze(run, summary)


def test_a_scaling_sweep_is_its_table_and_its_runs(small_runs, live_run, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["submit", QUICK, "--site", "slurm-local", "--scaling", "strong", "--gpus", "1,2",
                     "--dry-run", "--out", str(sweep_dir)]) == 0
    finally:
        os.chdir(cwd)
    # The points' runs are copies of runs made above (the arithmetic, not the training, is what
    # is checked here); at first the 2-GPU point has not run.
    shutil.copytree(small_runs["continual"], sweep_dir / "g0001", dirs_exist_ok=True)
    sweep = open_sweep(sweep_dir)
    assert sweep.points["status"].tolist() == ["complete", "not run"] and sorted(sweep.runs) == [1]
    shutil.copytree(live_run[0], sweep_dir / "g0002", dirs_exist_ok=True)
    sweep = open_sweep(sweep_dir)
    printed = analyze_json(sweep_dir, capsys)
    assert (sweep.mode, sweep.site) == (printed["mode"], printed["site"]) == ("strong", "slurm-local")
    points = sweep.points
    assert points["gpus"].tolist() == [1, 2] and sorted(sweep.runs) == [1, 2]
    for _, row in points.iterrows():
        want = next(p for p in printed["points"] if p["gpus"] == row["gpus"])
        for key in ("epoch_s", "samples_per_s", "speedup", "efficiency", "final_average_accuracy",
                    "batch_per_gpu", "global_batch", "lr_multiplier"):
            assert row[key] == pytest.approx(want[key]), key
        assert row["status"] == want["status"] == "complete"
    # epoch time: the median logged epoch; strong scaling against the 1-GPU point
    t1, t2 = (float(np.median(h5_tables(os.path.join(d, "log.h5"))["epochs"]["time_s"]))
              for d in (small_runs["continual"], live_run[0]))
    assert points["epoch_s"].tolist() == pytest.approx([t1, t2])
    assert points["speedup"].tolist() == pytest.approx([1.0, t1 / t2])
    assert points["efficiency"].tolist() == pytest.approx([1.0, t1 / (2 * t2)])


def test_errors_are_one_paragraph_naming_the_file(small_runs, tmp_path):
    with pytest.raises(HpcclError) as e:
        open_run(tmp_path)
    assert str(tmp_path) in str(e.value) and "no log.h5" in str(e.value)
    damaged = tmp_path / "damaged"
    shutil.copytree(small_runs["continual"], damaged)
    with open(damaged / "log.h5", "r+b") as f:
        f.truncate(600)
    with pytest.raises(HpcclError) as e:
        open_run(damaged)
    assert str(damaged / "log.h5") in str(e.value) and "not a readable HDF5 log" in str(e.value)
    future = tmp_path / "future"
    shutil.copytree(small_runs["continual"], future)
    with h5py.File(future / "log.h5", "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(HpcclError) as e:
        open_run(future)
    assert str(future / "log.h5") in str(e.value) and "schema version 99" in str(e.value)
    with pytest.raises(HpcclError) as e:
        open_sweep(tmp_path)
    assert "manifest" in str(e.value) and str(tmp_path) in str(e.value)


def test_error_messages_are_one_paragraph(tmp_path):
    with pytest.raises(HpcclError) as e:
        open_run(tmp_path / "nowhere")
    assert "\n" not in str(e.value) and "HINT" in str(e.value)


def test_import_is_light():
    code = ("import sys, hpccl.analysis; "
            "print(sorted(m for m in ('torch', 'pandas', 'mpi4py', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout
