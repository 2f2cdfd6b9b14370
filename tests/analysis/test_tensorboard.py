"""TensorBoard: rank 0's live writer (log.tensorboard: true) and 'hpccl analyze --tensorboard'.

Real 2-rank runs (continual with rehearsal, and erm); the events are read back with
tensorboard's EventAccumulator and held to the HDF5 logs, read here with h5py-level
``read_h5`` and summed by this file, not by the code under test."""

import glob
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hpccl.cli import main
from hpccl.core.logs import H5Log, read_h5
from hpccl.core.tensorboard import LiveMirror

from helpers import ROOT, hpccl_cmd, run_cmd

CONTINUAL = ("jobs/quickstart.yaml", ["train.epochs=2", "scenario.num_tasks=2"])   # learner: rehearsal
# No reference optimum: quicker, and stages/subopt is NaN (not measured), which has no points.
ERM = ("jobs/erm_breast_cancer.yaml", ["erm.epochs=2", "erm.reference=false", "erm.target_subopt=null"])
PHASES = ("data_load", "rehearsal_wait", "forward_backward", "allreduce_step", "other", "total")


def _run(tmp_path_factory, name, job, sets, tensorboard):
    out = tmp_path_factory.mktemp(name) / name
    args = ["run", job, "-n", "2", "--out", str(out)]
    for s in sets + ([f"log.tensorboard={str(tensorboard).lower()}"] if tensorboard is not None else []):
        args += ["--set", s]
    r = run_cmd(hpccl_cmd(*args), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return str(out)


class _Runs(dict):
    """live: continual with the key; plain: the same job without it (default: off); erm: live.
    Each made when a test first asks for it (a test run with -k makes only what it needs)."""

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def __missing__(self, name):
        job, sets, key = {"live": (*CONTINUAL, True), "plain": (*CONTINUAL, None), "erm": (*ERM, True)}[name]
        self[name] = _run(self.factory, name, job, sets, key)
        return self[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _Runs(tmp_path_factory)


def events(logdir) -> dict:
    """{tag: [(step, value), ...]} of every event file in ``logdir``."""
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(x) -> float:
    return float(np.float32(x))


def expected_from_logs(run_dir) -> dict:
    """What the events must hold, from the HDF5 logs: every numeric column of the mirrored
    tables at its step, samples/s, the accuracy rows, rank 0's phase seconds summed per epoch."""
    log = read_h5(os.path.join(run_dir, "log.h5"))
    want = {}

    def table(name, step_column, skip=()):
        columns = {k.split("/", 1)[1]: v for k, v in log.items() if k.startswith(name + "/")}
        steps = columns[step_column] if step_column else np.arange(len(next(iter(columns.values()))))
        for c, values in columns.items():
            if c not in skip and c != step_column and values.dtype.kind in "iuf":
                want[f"{name}/{c}"] = [(int(s), f32(v)) for s, v in zip(steps, values) if not np.isnan(v)]
        return columns

    if log["attrs"]["job_kind"] == "erm":
        table("stages", "stage")
        return {k: v for k, v in want.items() if v}
    epochs = table("epochs", None, skip=("task", "epoch"))
    table("tasks", "index")
    want["epochs/samples_per_s"] = [(i, f32(s / t)) for i, (s, t) in
                                    enumerate(zip(epochs["samples"], epochs["time_s"]))]
    for name, prefix in (("eval/top1", "accuracy"), ("eval/top5", "accuracy_top5")):
        m = log[name]
        for j in range(m.shape[1]):
            want[f"{prefix}/task_{j}"] = [(t, f32(m[t, j])) for t in range(m.shape[0]) if not np.isnan(m[t, j])]
    rank0 = read_h5(os.path.join(run_dir, "ranks", "rank00000.h5"))
    assert rank0["attrs"]["rank"] == 0
    for p in PHASES:
        want[f"time/{p}"] = []
        for step, (t, e) in enumerate(zip(epochs["task"], epochs["epoch"])):
            mine = (rank0["timers/task"] == t) & (rank0["timers/epoch"] == e)
            want[f"time/{p}"].append((step, f32(sum(rank0[f"timers/{p}"][mine].tolist()))))
    return want


def assert_matches_logs(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-12), tag


@pytest.mark.parametrize("run", ["live", "erm"])
def test_live_events_hold_the_logs_rows_at_their_steps(runs, run):
    got = events(os.path.join(runs[run], "tensorboard"))
    want = expected_from_logs(runs[run])
    assert_matches_logs(got, want)
    if run == "erm":
        assert "stages/objective" in got and "stages/subopt" not in got
    if run == "live":   # the headline scalars are all there, over both tasks
        assert {"epochs/loss", "epochs/lr", "epochs/samples_per_s", "accuracy/task_1",
                "time/rehearsal_wait", "time/allreduce_step"} <= set(got)
        assert [s for s, _ in got["epochs/loss"]] == [0, 1, 2, 3]
        assert any(v > 0 for _, v in got["time/rehearsal_wait"])


def test_only_rank_0_writes_and_only_with_the_key(runs):
    for run in ("live", "erm"):
        files = [os.path.relpath(p, runs[run]) for p in
                 glob.glob(os.path.join(runs[run], "**", "events.out.tfevents.*"), recursive=True)]
        assert len(files) == 1 and files[0].startswith("tensorboard" + os.sep), files
    assert not glob.glob(os.path.join(runs["plain"], "**", "events.out.tfevents.*"), recursive=True)
    assert not os.path.exists(os.path.join(runs["plain"], "tensorboard"))


def cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_export_gives_the_live_writers_tags_and_steps_with_the_logs_values(runs, tmp_path, capsys):
    out = tmp_path / "tb"
    code, _, err = cli(["analyze", runs["plain"], runs["live"], runs["erm"], "--tensorboard", str(out)], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["erm", "live", "plain"]
    live = events(os.path.join(runs["live"], "tensorboard"))
    exported_plain = events(str(out / "plain"))
    # A run made without the key: the live writer's tags and steps, its own log's values.
    assert {t: [s for s, _ in p] for t, p in exported_plain.items()} == \
        {t: [s for s, _ in p] for t, p in live.items()}
    assert_matches_logs(exported_plain, expected_from_logs(runs["plain"]))
    # The same run live and exported: the very same points.
    assert events(str(out / "live")) == live
    assert events(str(out / "erm")) == events(os.path.join(runs["erm"], "tensorboard"))
    # Exported again: replaced, not doubled.
    assert cli(["analyze", runs["live"], "--tensorboard", str(out)], capsys)[0] == 0
    assert events(str(out / "live")) == live


def test_a_tensorboard_dir_that_cannot_be_written_is_refused_before_any_output(runs, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = cli(["analyze", runs["live"], "--tensorboard", str(blocker)], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "--tensorboard" in err and str(blocker) in err and "found an existing file" in err
    code, out, err = cli(["analyze", runs["live"], "--tensorboard", str(blocker / "sub")], capsys)
    assert code == 2 and out == "" and "--tensorboard" in err and "is a file" in err
    # Two runs that would share DIR/<name>/, and a file where a run's folder goes.
    twin = tmp_path / "other" / os.path.basename(runs["live"])
    code, out, err = cli(["analyze", runs["live"], str(twin), "--tensorboard", str(tmp_path / "tb")], capsys)
    assert code == 2 and out == "" and "both named" in err and not os.path.exists(tmp_path / "tb")
    (tmp_path / "tb2").mkdir()
    (tmp_path / "tb2" / os.path.basename(runs["live"])).write_text("x")
    code, out, err = cli(["analyze", runs["live"], "--tensorboard", str(tmp_path / "tb2")], capsys)
    assert code == 2 and out == "" and "found a file" in err


def test_events_are_on_disk_at_each_flush_and_a_failing_writer_does_not_stop_the_log(tmp_path):
    log = H5Log(str(tmp_path / "log.h5"), "run")
    rank = H5Log(str(tmp_path / "rank.h5"), "rank")
    warnings = []
    mirror = LiveMirror(str(tmp_path / "tb"), log, rank, warn=warnings.append)
    for epoch in range(3):       # live: each flush readable while the writer is open
        log.append("epochs", task=0, epoch=epoch, loss=1.0 / (epoch + 1), train_accuracy=0.5, lr=0.1,
                   samples=10, time_s=0.5, iterations=2)
        log.flush()
        assert events(str(tmp_path / "tb"))["epochs/loss"] == [(e, f32(1.0 / (e + 1))) for e in range(epoch + 1)]
    mirror._writer.close()       # the event file gone from under the writer
    log.append("epochs", task=0, epoch=3, loss=0.1, train_accuracy=0.5, lr=0.1, samples=10, time_s=0.5,
               iterations=2)
    log.flush()                  # no exception: training goes on
    assert mirror.error and len(warnings) == 1 and str(tmp_path / "tb") in warnings[0]
    log.append("epochs", task=0, epoch=4, loss=0.1, train_accuracy=0.5, lr=0.1, samples=10, time_s=0.5,
               iterations=2)
    log.close()
    mirror.close()
    assert len(warnings) == 1
    stored = read_h5(str(tmp_path / "log.h5"))
    assert len(stored["epochs/loss"]) == 5 and stored["attrs"]["tensorboard_error"] == mirror.error
    # A directory that cannot be made: warned at the start, the log untouched.
    (tmp_path / "blocked").write_text("x")
    warnings.clear()
    log2 = H5Log(str(tmp_path / "log2.h5"), "run")
    LiveMirror(str(tmp_path / "blocked" / "tb"), log2, H5Log(str(tmp_path / "rank2.h5"), "rank"),
               warn=warnings.append)
    log2.append("epochs", task=0, epoch=0, loss=1.0, train_accuracy=0.5, lr=0.1, samples=10, time_s=0.5,
                iterations=2)
    log2.close()
    assert len(warnings) == 1 and "tensorboard_error" in read_h5(str(tmp_path / "log2.h5"))["attrs"]
