"""What hpccl/core/checkpoint.py and docs/failures.md promise about the checkpoint directories, on
2 real MPI ranks: the leftovers of a save killed while writing are removed before the next
save, ``keep`` checkpoints stay (the latest and ``checkpoint.prev1/`` ... newest first), and a
save asked for while the previous one is still being written waits for it, so both end
complete, in order. One launch runs the three scenarios (checkpoint_promises_worker.py)."""

import json
import os
import sys

import pytest

from hpccl.core.launch import mpirun_prefix

from helpers import run_cmd

WORKER = os.path.join(os.path.dirname(__file__), "checkpoint_promises_worker.py")
FILES = ["model.pt", "rank00000.pt", "rank00001.pt", "state.json"]


def _killed_mid_write(run_dir):
    """A committed checkpoint of task 0, and what saves killed while writing leave behind:
    checkpoint.newK/ without state.json (written last), holding files of another world size
    that a resumed run would never overwrite."""
    ckpt = run_dir / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"task": 0, "epoch": 0, "world_size": 2}))
    for name in FILES[:-1]:
        (ckpt / name).write_bytes(b"task 0")
    for leftover in ("checkpoint.new1", "checkpoint.new12"):
        (run_dir / leftover).mkdir()
        (run_dir / leftover / "rank00005.pt").write_bytes(b"from a killed 6-rank save")
        (run_dir / leftover / "model.pt").write_bytes(b"torn")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("checkpoint-promises")
    _killed_mid_write(base / "stale")
    r = run_cmd(mpirun_prefix(2) + [sys.executable, WORKER, str(base)], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((base / "result.json").read_text())


def test_leftovers_of_a_save_killed_while_writing_are_removed_before_the_next_save(results):
    got = results["stale"]
    # Gone as soon as the writer starts (so no later save reuses checkpoint.new1 with a
    # stranger's files in it); the committed checkpoint is left alone.
    assert got["after_start"] == {"checkpoint": 0}
    assert got["after_save"] == {"checkpoint": 1, "checkpoint.prev1": 0}
    assert got["files"] == FILES


@pytest.mark.parametrize("keep", [3, 4])
def test_keep_checkpoints_stay_newest_first_as_prev1_prev2(results, keep):
    got = results["rotate"][str(keep)]
    for saved, found in enumerate(got["after_each_save"], start=1):
        expected = {"checkpoint": saved}
        expected.update({f"checkpoint.prev{i}": saved - i for i in range(1, min(saved, keep))})
        assert found == expected, f"after save {saved}"
    # whole checkpoints: every rank's file moved with its directory
    assert got["rank_files"] == {name: [task, task] for name, task in got["after_each_save"][-1].items()}


def test_a_save_waits_for_the_one_in_flight_and_both_commit_in_order(results):
    got = results["queue"]
    events = [dict(rank_events) for rank_events in got["events"]]   # {event: time} per rank
    order0 = [name for name, _ in got["events"][0]]
    assert all("first write ends" in e for e in events), got["events"]   # none abandoned
    last_first_write = max(e["first write ends"] for e in events)
    for rank, e in enumerate(events):
        # no rank starts the next checkpoint before every rank has written the one in flight
        assert e["second write starts"] > last_first_write, (rank, got["events"])
    # rank 0 committed the first checkpoint inside the second save, before writing the second
    assert [n for n in order0 if n.startswith("commit")] == ["commit 1", "commit 2"], order0
    at = order0.index
    assert at("first save returned") < at("commit 1") < at("second save returned"), order0
    assert at("commit 1") < at("second write starts"), order0
    assert got["after"] == {"checkpoint": 2, "checkpoint.prev1": 1}
    assert got["files"] == {"checkpoint": sorted(FILES + ["second.txt"]),
                            "checkpoint.prev1": sorted(FILES + ["first.txt"])}
