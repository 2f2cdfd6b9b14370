"""Is a torch.save pickle whole? Read without executing it: ``pickletools.genops`` parses the
opcodes, and a small stack machine follows only what a check needs (strings, integers,
tuples, dicts and their keys, the persistent ids that name tensor storages). Nothing is
imported or constructed, and no tensor is read: the cost is the pickle's size (a few KB to a
few MB of structure), not the checkpoint's.

What it finds: bytes that are not a pickle (an unknown opcode, an argument cut short, no
STOP), a stream that does not balance (a pop from an empty stack, a mark never set, a memo
slot read before it was written, objects left after STOP), a top-level object that is not a
dict, and storages the pickle names that are missing from the archive or shorter than the
tensor needs. A pickle that parses but fails when run (a class that no longer exists) is
still met by ``torch.load`` in the ranks, which names the file too.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import importlib.util
import pickletools
import sys

# bytes per element of the storage classes torch.save names (the class is only a tag here)
_ITEM_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
               "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
               "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}
_STRINGS = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
            "SHORT_BINSTRING"}
_INTS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}


class PickleDamage(ValueError):
    """What is wrong with a pickle, in words."""


class _Dict:
    def __init__(self, keys=()):
        self.keys = set(keys)


class _Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


_OTHER = object()     # any value the checks do not look into


class _Machine:
    def __init__(self):
        self.stack, self.marks, self.memo = [], [], {}
        self.storages = []        # (key, storage class name, numel) per persistent id
        self.globals = set()      # (module, name) of every class or function it names

    def pop(self, what):
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            raise PickleDamage(f"{what} finds nothing to take from the stack")
        return self.stack.pop()

    def pop_mark(self, what):
        if not self.marks:
            raise PickleDamage(f"{what} without a MARK before it")
        at = self.marks.pop()
        items, self.stack[at:] = self.stack[at:], []
        return items

    def persistent_id(self, pid):
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
            cls = pid[1].name if isinstance(pid[1], _Global) else None
            self.storages.append((pid[2], cls, pid[4]))

    def step(self, op, arg):
        name = op.name
        if name in _STRINGS or name in _INTS:
            self.stack.append(arg)
        elif name == "MARK":
            self.marks.append(len(self.stack))
        elif name in ("PROTO", "FRAME"):
            pass
        elif name == "EMPTY_DICT":
            self.stack.append(_Dict())
        elif name == "DICT":
            self.stack.append(_Dict(k for k in self.pop_mark(name)[::2] if isinstance(k, str)))
        elif name in ("SETITEM", "SETITEMS"):
            items = [self.pop(name), self.pop(name)][::-1] if name == "SETITEM" else self.pop_mark(name)
            target = self.pop(name)
            if isinstance(target, _Dict):
                target.keys.update(k for k in items[::2] if isinstance(k, str))
            self.stack.append(target)
        elif name == "EMPTY_TUPLE":
            self.stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            self.stack.append(tuple(reversed([self.pop(name) for _ in range(n)])))
        elif name == "TUPLE":
            self.stack.append(tuple(self.pop_mark(name)))
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            self.globals.add((module, attr))
            self.stack.append(_Global(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(name), self.pop(name)
            if not (isinstance(module, str) and isinstance(attr, str)):
                raise PickleDamage("STACK_GLOBAL's module and name are not strings")
            self.globals.add((module, attr))
            self.stack.append(_Global(module, attr))
        elif name in ("EXT1", "EXT2", "EXT4"):
            if arg not in copyreg._inverted_registry:
                raise PickleDamage(f"{name} names extension code {arg}, which is not registered")
            self.stack.append(_OTHER)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not self.stack:
                raise PickleDamage(f"{name} {arg} memoizes nothing")
            self.memo[arg] = self.stack[-1]
        elif name == "MEMOIZE":
            if not self.stack:
                raise PickleDamage("MEMOIZE memoizes nothing")
            self.memo[len(self.memo)] = self.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise PickleDamage(f"{name} {arg} reads a memo slot never written")
            self.stack.append(self.memo[arg])
        elif name == "BINPERSID":
            self.persistent_id(self.pop(name))
            self.stack.append(_OTHER)
        elif name == "PERSID":
            self.stack.append(_OTHER)
        else:                     # any other opcode: its documented stack effect, values untracked
            before = op.stack_before
            if pickletools.markobject in before:
                self.pop_mark(name)
                before = before[:before.index(pickletools.markobject)]
            for _ in before:
                self.pop(name)
            self.stack.extend(_OTHER for _ in op.stack_after)


def read_pickle(data: bytes) -> tuple[set, list]:
    """(the keys of the top-level dict, the storages as (key, class name, numel)) of a
    torch.save pickle whose classes and functions all exist (``check_globals``); raises
    PickleDamage saying what is wrong."""
    machine = _Machine()
    stopped = False
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name == "STOP":
                top = machine.pop("STOP")
                if machine.stack or machine.marks:
                    raise PickleDamage(f"{len(machine.stack) + len(machine.marks)} objects are left "
                                       f"over at its STOP (byte {pos})")
                stopped = True
                break
            machine.step(op, arg)
    except PickleDamage:
        raise
    except (ValueError, TypeError, IndexError) as e:
        # genops: an unknown opcode, an argument cut short, a stream without STOP
        raise PickleDamage(f"it is not a pickle stream ({e})") from None
    if not stopped:
        raise PickleDamage("it ends without STOP")
    if not isinstance(top, _Dict):
        raise PickleDamage("its top-level object is not a dict (torch.save of hpccl's state is one)")
    check_globals(machine.globals)
    return top.keys, machine.storages


def check_globals(names) -> None:
    """Every (module, name) the pickle refers to can be found: the module on the path (found,
    not imported, unless it already is) and, for a module already imported (torch's, numpy's,
    the standard library's: what hpccl's checkpoints name), the attribute in it."""
    for module, attr in sorted(names):
        # protocol 2 names Python 3's builtins as Python 2's; the unpickler maps them back
        module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            found = module in sys.modules or importlib.util.find_spec(module) is not None
        except (ImportError, ValueError, AttributeError):
            found = False
        if not found:
            raise PickleDamage(f"it refers to {module}.{attr}, but there is no module {module!r}")
        obj = sys.modules.get(module)
        for part in attr.split(".") if obj is not None else ():
            obj = getattr(obj, part, None)
            if obj is None:
                raise PickleDamage(f"it refers to {module}.{attr}, which module {module!r} does not have")


def check_storages(storages: list, entries: dict, prefix: str) -> None:
    """Every storage the pickle names is an entry ``PREFIX/data/KEY`` of the archive
    (``entries``: name -> bytes) holding at least its elements."""
    for key, cls, numel in storages:
        name = f"{prefix}data/{key}"
        if name not in entries:
            raise PickleDamage(f"its pickle names the tensor storage {name!r}, which the archive lacks")
        need = _ITEM_BYTES.get(cls, 0) * numel if isinstance(numel, int) else 0
        if entries[name] < need:
            raise PickleDamage(f"tensor storage {name!r} holds {entries[name]} bytes, its pickle "
                               f"says {numel} elements of {cls} ({need} bytes)")
