"""``hpccl analyze``: one summary per run directory, merged from the rank logs."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from hpccl.core.errors import HpcclError
from hpccl.core.logs import SCHEMA_VERSION, read_h5

def load_run(run_dir: str) -> tuple[dict, list[dict]]:
    path = os.path.join(run_dir, "log.h5")
    if not os.path.isfile(path):
        raise HpcclError(f"{run_dir!r} is not an hpccl run directory: it has no log.h5. HINT: pass "
                         "the directory printed by 'hpccl run' (e.g. runs/quickstart-20260101-120000).")
    run = _read_log(path)
    version = int(run["attrs"].get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise HpcclError(f"{path}: log schema version {version}, but this hpccl reads version "
                         f"{SCHEMA_VERSION}. HINT: analyse it with the hpccl version that wrote it.")
    ranks = [_read_log(p) for p in sorted(glob.glob(os.path.join(run_dir, "ranks", "rank*.h5")))]
    return run, ranks


def _read_log(path: str) -> dict:
    try:
        return read_h5(path)
    except (OSError, RuntimeError) as e:    # h5py raises either for a damaged file
        raise HpcclError(f"{path}: not a readable HDF5 log ({e}).") from None


def summarize(run_dir: str) -> dict:
    """The summary of one run, by its job kind (hpccl.core.kinds)."""
    from hpccl.core import kinds
    run, ranks = load_run(run_dir)
    return kinds.of_log(run["attrs"]).summary(run_dir, run, ranks)


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
