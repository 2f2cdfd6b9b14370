"""A checkpoint swap interrupted at every rename it makes, then repaired by each entry point:
the run resumes from the newest complete checkpoint, with the older ones in order, and never
starts from the beginning (the job script's test, ``check_run_dir`` and ``hpccl run --resume``
all finish the swap first). A real job killed between the renames: test_checkpoint_swap_jobs.py
and, under the real Slurm, tests/sched/test_slurm_e2e.py."""

import json
import os

import h5py
import pytest

from hpccl.core import checkpoint_dirs
from hpccl.core.errors import ConfigError
from hpccl.core.rundir import check_run_dir


class Killed(BaseException):
    """The job died here: nothing after this rename ran."""


def make_checkpoint(path, label):
    os.makedirs(path)
    checkpoint_dirs.write_json_atomic(os.path.join(path, "state.json"), {"label": label})


def label_of(path):
    with open(os.path.join(path, "state.json")) as f:
        return json.load(f)["label"]


def history(run_dir):
    """Labels of checkpoint/, checkpoint.prev1/, ... as far as they go without a gap."""
    out, path, i = [], checkpoint_dirs.checkpoint_dir(str(run_dir)), 0
    while os.path.isdir(path):
        out.append(label_of(path))
        i += 1
        path = f"{checkpoint_dirs.checkpoint_dir(str(run_dir))}.prev{i}"
    return out


def setup_run(run_dir, older: int):
    """A run directory with ``older`` committed checkpoints (c1 the oldest) and c-new complete
    in checkpoint.new7, about to be swapped in."""
    os.makedirs(run_dir)
    base = checkpoint_dirs.checkpoint_dir(str(run_dir))
    for n in range(older):           # newest in checkpoint/, then prev1, ...
        make_checkpoint(base if n == 0 else f"{base}.prev{n}", f"c{older - n}")
    new = f"{base}.new7"
    make_checkpoint(new, "c-new")
    return new


def renames_of_a_swap(tmp_path, keep, older):
    calls = []
    real = os.replace

    def counting(src, dst):
        calls.append((src, dst))
        real(src, dst)
    new = setup_run(tmp_path / "count", older)
    os.replace = counting
    try:
        checkpoint_dirs.move_in(str(tmp_path / "count"), new, keep)
    finally:
        os.replace = real
    return len(calls), history(tmp_path / "count")


CASES = [(keep, older) for keep in (1, 2, 3) for older in range(0, keep + 2)]


@pytest.mark.parametrize("keep, older", CASES)
def test_a_swap_killed_after_any_rename_is_finished_on_resume(tmp_path, monkeypatch, keep, older):
    renames, expected = renames_of_a_swap(tmp_path, keep, older)
    assert expected[0] == "c-new" and len(expected) == min(older + 1, keep)
    for done in range(renames):                  # killed after `done` renames
        run_dir = tmp_path / f"killed-after-{done}"
        new = setup_run(run_dir, older)
        real, count = os.replace, [0]

        def dying(src, dst):
            if count[0] == done:
                raise Killed
            count[0] += 1
            real(src, dst)
        monkeypatch.setattr(os, "replace", dying)
        with pytest.raises(Killed):
            checkpoint_dirs.move_in(str(run_dir), new, keep)
        monkeypatch.setattr(os, "replace", real)
        assert checkpoint_dirs.resumable(str(run_dir))
        got = history(run_dir)
        # The new checkpoint is the latest, and every older one the swap would have kept is
        # still there, in order (the repair may keep one more: the run's next commit prunes).
        assert got[:len(expected)] == expected, (done, got)
        assert not os.path.exists(new) and not os.path.exists(run_dir / "checkpoint.old")


def test_a_torn_state_file_leaves_the_previous_checkpoint_latest(tmp_path):
    """Killed while writing state.json (before any rename): the new directory is not complete,
    so the previous checkpoint stays the one resumed."""
    run_dir = tmp_path / "run"
    setup_run(run_dir, older=1)
    os.remove(run_dir / "checkpoint.new7" / "state.json")
    (run_dir / "checkpoint.new7" / "state.json.tmp").write_text('{"label": "c-ne')
    assert checkpoint_dirs.resumable(str(run_dir))
    assert history(run_dir) == ["c1"]


def test_check_run_dir_finishes_the_swap_and_sends_the_run_to_resume(tmp_path):
    """A requeued job's fresh start must not move a complete checkpoint aside as a failed
    attempt: after a kill mid-swap, the directory is one to resume."""
    run_dir = tmp_path / "run"
    new = setup_run(run_dir, older=1)
    os.replace(run_dir / "checkpoint", run_dir / "checkpoint.old")     # the kill point, keep 1
    with h5py.File(run_dir / "log.h5", "w") as f:
        f.attrs["status"] = "running"
    with pytest.raises(ConfigError, match="with a checkpoint.*--resume"):
        check_run_dir(str(run_dir), set_aside=True)
    assert not os.path.exists(run_dir / "attempts") and not os.path.exists(new)
    assert history(run_dir) == ["c-new"]


def test_the_job_script_test_says_resume_after_a_kill_mid_swap(tmp_path):
    import subprocess
    import sys
    run_dir = tmp_path / "run"
    setup_run(run_dir, older=2)
    os.replace(run_dir / "checkpoint.prev1", run_dir / "checkpoint.prev2")   # oldest first
    os.replace(run_dir / "checkpoint", run_dir / "checkpoint.prev1")
    # (keep 3: c1 went to checkpoint.old before; the kill came before the new one moved in)
    r = subprocess.run([sys.executable, "-m", "hpccl.core.checkpoint_dirs", str(run_dir)])
    assert r.returncode == 0 and history(run_dir) == ["c-new", "c2", "c1"]
    empty = tmp_path / "fresh"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "hpccl.core.checkpoint_dirs", str(empty)])
    assert r.returncode == 10
