"""Checks on paths hpccl is about to write, made before any work starts.

``check_output_file(path, what)`` and ``check_output_dir(path, what)`` raise :class:`HpcclError`
(one paragraph: ``what`` and the path, what was expected, what was found) when the path cannot
be written: it exists as the wrong kind of thing, a folder on its way is a file, or the folder
that would hold it does not accept new entries. Writability is tested by creating and removing
a probe (root ignores permission bits, so ``os.access`` proves nothing), in the deepest folder
that already exists; nothing is created or left behind. ``what`` names the flag or key the path
came from, e.g. ``"--out"`` or ``"jobs/x.yaml: key 'pretrain.out'"``.
"""

from __future__ import annotations

import os
import stat
import tempfile

from hpccl.core.errors import HpcclError

_PROBE_PREFIX = ".hpccl-probe-"


def _kind(path: str) -> str:
    """What is at ``path`` (which exists), in words."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        return "an existing directory"
    if stat.S_ISREG(mode):
        return "an existing file"
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return f"an existing {name}"
    return "an existing special file"


def _existing_ancestor(path: str, what: str, shown: str, expected: str) -> str:
    """The deepest existing folder above ``path``; an error when something on the way is not one."""
    parent = os.path.dirname(path)
    while parent and not os.path.lexists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    parent = parent or os.sep
    if not os.path.isdir(parent):
        found = "a file, not a directory" if os.path.exists(parent) else "a broken link"
        raise HpcclError(f"{what} {shown}: expected {expected}, found that {parent!r}, on the way to "
                         f"it, is {found}, so the path cannot be created. HINT: choose a path "
                         "inside a directory.")
    return parent


def _probe(folder: str, make_dir: bool, what: str, shown: str, expected: str) -> None:
    """Create and remove a probe entry in ``folder``; an error naming the folder when that fails."""
    try:
        if make_dir:
            os.rmdir(tempfile.mkdtemp(prefix=_PROBE_PREFIX, dir=folder))
        else:
            fd, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=folder)
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        raise HpcclError(f"{what} {shown}: expected {expected}, found that {folder!r} does not accept "
                         f"new {'directories' if make_dir else 'files'} ({reason}). HINT: choose a "
                         "path on a writable file system.") from None


def _look(path, what: str, expected: str):
    """(path, its repr, absolute path, what exists there or None); refuses an empty path and
    a broken symbolic link."""
    if path is None or os.fspath(path) == "":
        raise HpcclError(f"{what}: expected {expected}, found an empty path.")
    path = os.fspath(path)
    full = os.path.abspath(path)
    if os.path.exists(full):
        return path, repr(path), full, _kind(full)
    if os.path.lexists(full):
        raise HpcclError(f"{what} {path!r}: expected {expected}, found a broken symbolic link.")
    return path, repr(path), full, None


def check_output_file(path, what: str, expected: str = "a file path to write",
                      example_name: str | None = None) -> str:
    """Check that ``path`` can be written as a regular file (replacing an existing file is fine).

    Returns the absolute path. ``example_name`` (e.g. ``"digits.h5"``) adds a hint for a path
    that names a directory."""
    path, shown, full, kind = _look(path, what, expected)
    if kind is not None:
        if kind != "an existing file":
            hint = ""
            if kind == "an existing directory" and example_name:
                hint = f" HINT: name a file inside it, e.g. {os.path.join(path, example_name)}."
            raise HpcclError(f"{what} {shown}: expected {expected}, found {kind}.{hint}")
        _probe(os.path.dirname(full), False, what, shown, expected)
        return full
    folder = _existing_ancestor(full, what, shown, expected)
    _probe(folder, folder != os.path.dirname(full), what, shown, expected)
    return full


def check_output_dir(path, what: str, expected: str = "a directory to write into") -> str:
    """Check that ``path`` is a writable directory or can be created as one. Returns it absolute."""
    path, shown, full, kind = _look(path, what, expected)
    if kind is not None:
        if kind != "an existing directory":
            raise HpcclError(f"{what} {shown}: expected {expected}, found {kind}. "
                             "HINT: choose a new or existing directory.")
        _probe(full, False, what, shown, expected)
        return full
    _probe(_existing_ancestor(full, what, shown, expected), True, what, shown, expected)
    return full
