"""Every environment variable hpccl reads, with its domain, in one table: ``read(NAME)`` returns
the checked value or raises a ConfigError naming the variable, what it takes and what it held
(exit 2), as the job schema does for a key. A variable read anywhere else, or a name missing
from this table, fails tests/test_env_domains.py, which greps the sources.

Variables read by the job scripts (bash) are listed too, so the table is the one place that
says what each one means; the scripts check them themselves (``!= 1`` means off)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from hpccl.core.errors import ConfigError


PATH_MAX, NAME_MAX = 4096, 255     # Linux's limits on a path and on one name in it


@dataclass(frozen=True)
class Variable:
    kind: str                 # 'path', 'paths', 'number', 'count', 'choice', 'text', 'script'
    default: object
    meaning: str
    choices: tuple = ()
    lo: float | None = None   # numbers: the smallest value allowed (exclusive for 'number')

    def expected(self) -> str:
        if self.kind == "number":
            return f"a number > {self.lo:g}"
        if self.kind == "count":
            return f"an integer >= {self.lo:g}"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "paths":
            return f"directories separated by {os.pathsep!r}"
        if self.kind == "path":
            return "a path"
        return "text on one line"


VARIABLES = {
    "HPCCL_DATA_CACHE": Variable("path", None, "where converted built-in datasets are kept "
                                 "(default ~/.cache/hpccl/data)"),
    "HPCCL_CACHE": Variable("path", None, "where ERM reference solutions are kept (default ~/.cache/hpccl)"),
    "HPCCL_SITE_DIR": Variable("paths", "", "more directories of site files, latest first in precedence"),
    "HPCCL_MPIRUN": Variable("text", "mpirun", "the mpirun that hpccl run -n N starts ranks with"),
    "HPCCL_SCAN_LIMIT_GB": Variable("number", 4.0, "how much of a dataset file hpccl validate "
                                    "reads in full before it samples instead", lo=0.0),
    "HPCCL_REHEARSAL_PROGRESS": Variable("choice", "on", "off: the rehearsal thread makes no MPI "
                                         "progress calls for RMA (hpccl check's probe)", choices=("on", "off")),
    "HPCCL_RELAUNCHED": Variable("choice", "0", "set by hpccl run -n N on the ranks it starts",
                                 choices=("0", "1")),
    "HPCCL_INJECT_FAILURE": Variable("text", "", "test hook: rank=R,task=T[,epoch=E][,how=sigkill][,once=PATH]"),
    "HPCCL_INJECT_SWAP_KILL": Variable("path", None, "test hook: SIGKILL mid checkpoint swap, once"),
    "HPCCL_INJECT_KILL_IN_LOG_WRITE": Variable("count", 0, "test hook: SIGKILL before the Nth log "
                                               "column write", lo=0),
    # Read by the job scripts (bash), not by Python:
    "HPCCL_LAUNCHER": Variable("script", "", "replaces the launcher of a job script (test and debugging)"),
    "HPCCL_SKIP_CHECK": Variable("script", "0", "1: a job script skips its hpccl check"),
    "HPCCL_SKIP_MODULES": Variable("script", "0", "1: a job script loads no modules"),
    # Read by the test suite only:
    "HPCCL_UPDATE_GOLDEN": Variable("script", "0", "1: the render tests rewrite their golden files"),
}


def _refuse(name: str, var: Variable, text: str, why: str = "") -> ConfigError:
    return ConfigError(f"environment variable {name}: expected {var.expected()}{why}, found {text!r} "
                       f"({var.meaning}). HINT: unset it for the default"
                       + (f" ({var.default!r})." if var.default not in (None, "") else "."))


def read(name: str, env=os.environ):
    """The value of ``name`` (its default when unset or empty), checked against its domain."""
    var = VARIABLES[name]
    text = env.get(name)
    if text is None or text == "":
        return var.default
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in text):
        raise _refuse(name, var, text, " without control characters")
    if var.kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise _refuse(name, var, text) from None
        if not math.isfinite(value) or value <= var.lo:
            raise _refuse(name, var, text)
        return value
    if var.kind == "count":
        try:
            value = int(text, 10)
        except ValueError:
            raise _refuse(name, var, text) from None
        if value < var.lo:
            raise _refuse(name, var, text)
        return value
    if var.kind == "choice" and text not in var.choices:
        raise _refuse(name, var, text)
    if var.kind in ("path", "paths"):
        # The file system's own limits, checked here: past them every open and stat raises
        # OSError ("File name too long") wherever the path is first used.
        for part in (text.split(os.pathsep) if var.kind == "paths" else [text]):
            longest = max((len(os.fsencode(c)) for c in part.split(os.sep)), default=0)
            if len(os.fsencode(part)) >= PATH_MAX or longest > NAME_MAX:
                raise _refuse(name, var, text[:80] + "...", f" of at most {PATH_MAX - 1} bytes, "
                              f"each name in it at most {NAME_MAX}")
    return text
