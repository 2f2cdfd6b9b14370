"""``hpccl analyze``: one summary per run directory, merged from the rank logs."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from hpccl.core.errors import CorruptFileError, HpcclError
from hpccl.core.logs import SCHEMA_VERSION, not_a_log, read_h5

def load_run(run_dir: str) -> tuple[dict, list[dict]]:
    path = os.path.join(run_dir, "log.h5")
    if not os.path.isfile(path):
        raise HpcclError(f"{run_dir!r} is not an hpccl run directory: it has no log.h5. HINT: pass "
                         "the directory printed by 'hpccl run' (e.g. runs/quickstart-20260101-120000).")
    run = _read_log(path)
    # An HDF5 file, but not (or no longer) the run's log; an array there has no truth value.
    if not isinstance(run["attrs"].get("kind"), str) or run["attrs"]["kind"] != "run":
        raise CorruptFileError(not_a_log(path, "run", run["attrs"].get("kind")))
    check_log_attrs(run["attrs"], path)
    version = int(run["attrs"].get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise HpcclError(f"{path}: log schema version {version}, but this hpccl reads version "
                         f"{SCHEMA_VERSION}. HINT: analyse it with the hpccl version that wrote it.")
    ranks = []
    for rank_path in sorted(glob.glob(os.path.join(run_dir, "ranks", "rank*.h5"))):
        log = _read_log(rank_path)
        found = log["attrs"].get("kind")
        if not isinstance(found, str) or found != "rank":
            raise CorruptFileError(not_a_log(rank_path, "rank", found))
        if not isinstance(log["attrs"].get("rank"), (int, np.integer)):   # what merges the ranks' tables
            found = repr(log["attrs"]["rank"]) if "rank" in log["attrs"] else "missing"
            raise CorruptFileError(f"{rank_path}: its attribute 'rank' is {found}, expected the rank's "
                                   "number; the log was damaged or edited; nothing was changed.")
        ranks.append(log)
    return run, ranks


def _read_log(path: str) -> dict:
    try:
        return read_h5(path)
    except (OSError, RuntimeError) as e:    # h5py raises either for a damaged file
        raise HpcclError(f"{path}: not a readable HDF5 log ({e}).") from None


# The run log's attributes that the summaries compute with, as hpccl writes them: (type, least).
LOG_ATTRS = {"schema_version": (int, None), "world_size": (int, 1), "tasks_completed": (int, 0),
             "arrivals_completed": (int, 0), "train_time_s": (float, 0.0), "name": (str, None),
             "status": (str, None), "learner": (str, None), "backend": (str, None), "job_kind": (str, None),
             "scenario": (str, None), "config_yaml": (str, None)}


def check_log_attrs(attrs: dict, path: str) -> None:
    """A log attribute of another type than hpccl writes (edited, or overwritten by another
    tool) is named here, not met as a ValueError deep in a summary."""
    from hpccl.core.errors import CorruptFileError
    for key, (kind, least) in LOG_ATTRS.items():
        if key not in attrs:
            continue
        value = attrs[key]
        if isinstance(value, np.generic):
            value = value.item()
        ok = isinstance(value, str) if kind is str else (
            isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
            and np.isfinite(value) and (least is None or value >= least))
        if not ok:
            what = {str: "a string", int: "an integer", float: "a finite number"}[kind]
            raise CorruptFileError(f"{path}: its attribute {key!r} is {value!r}, expected {what}"
                                   + (f" >= {least}" if least is not None else "")
                                   + "; the log was damaged or edited; nothing was changed.")


def summarize(run_dir: str) -> dict:
    """The summary of one run, by its job kind (hpccl.core.kinds)."""
    from hpccl.core import kinds
    from hpccl.core.errors import CorruptFileError
    run, ranks = load_run(run_dir)
    try:
        kind = kinds.of_log(run["attrs"])
    except KeyError:
        raise CorruptFileError(f"{os.path.join(run_dir, 'log.h5')}: its attributes name a job kind this "
                               f"hpccl does not know ({run['attrs'].get('job_kind')!r}; known: "
                               f"{', '.join(kinds.KINDS)}).") from None
    try:
        return kind.summary(run_dir, run, ranks)
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as e:
        # The attributes passed check_log_attrs: what is left is a table (its columns, their
        # dtypes and shapes) that hpccl did not write this way. Named, with what the summary met.
        raise CorruptFileError(f"{os.path.join(run_dir, 'log.h5')} (or a rank log beside it): its tables are "
                               f"not what hpccl writes, so the run cannot be summarised ({str(e) or 'no detail'}); "
                               "the log was damaged or edited; nothing was changed. If it was not, report "
                               "this as a bug in hpccl analyze.") from None


def run_heading(s: dict, details: str) -> list[str]:
    """The first lines of a run's text block: ``== RUN_DIR: NAME (DETAILS, STATUS)``, then its
    note when it has one."""
    lines = [f"== {s['run_dir']}: {s['name']} ({details}, {s['status']})"]
    if s.get("note"):
        lines.append(f"note: {s['note']}")
    return lines


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def format_report(reports: list[dict], fmt: str = "text", compare: bool = False) -> str:
    """Summaries of any kinds: JSON of them all, in order; otherwise each kind formats its own
    runs (hpccl.core.kinds), in the order the kinds first appear."""
    from hpccl.core import kinds
    if fmt == "json":
        return json.dumps(_jsonable(reports[0] if len(reports) == 1 else reports), indent=2)
    by_kind: dict = {}
    for s in reports:
        by_kind.setdefault(kinds.of_summary(s).name, []).append(s)
    return "\n\n".join(kinds.KINDS[name].formatted(runs, fmt, compare) for name, runs in by_kind.items())
