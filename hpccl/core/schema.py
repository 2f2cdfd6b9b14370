"""A small typed loader: plain dicts (from YAML) into nested dataclasses, with errors that
name the file, the key path, what was expected and what was found.

Why not pydantic: its messages would need rewriting to name the file and suggest keys, and
this needs ~150 lines with no dependency. Supported field types: bool, int, float, str,
Literal[...], Optional[...], list[T], tuple[T, ...], dict, and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from typing import Any, Literal, Union

import yaml

from hpccl.core.errors import ConfigError


MAX_DEPTH = 64            # nesting levels a job, site or study file may use (they need < 10)
# Control characters a string may not hold: all but tab and newline (a block scalar's lines).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class YamlInputError(yaml.YAMLError):
    """A document hpccl refuses although a lax YAML reader would take it: not UTF-8, a key
    written twice, nesting beyond MAX_DEPTH, a control character in a string."""


class YamlSyntaxError(yaml.YAMLError):
    """PyYAML's syntax error in one line: its own text spans lines (the document's line under
    a caret, a blank line at the end of the text), and hpccl's errors are one paragraph."""


def _one_line(e: yaml.MarkedYAMLError) -> str:
    def where(mark):
        return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    parts = [f"{e.context}{where(e.context_mark)}"] if e.context else []
    parts.append(f"{e.problem}{where(e.problem_mark)}")
    return ": ".join(parts) + (f" ({e.note})" if e.note else "")


class YamlLoader(yaml.SafeLoader):
    """YAML as users write it: ``1e-3`` is a number. PyYAML follows YAML 1.1, where a float
    needs a dot (``1.0e-3``) and ``1e-3`` is a string; YAML 1.2 and most tools read it as a
    number. And strict where PyYAML is silent: a key written twice is an error (PyYAML keeps
    the last one, so a setting far down a file quietly undoes one above), and so is nesting
    deep enough to exhaust Python's recursion limit in the composer."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        # Anchors of the collections being composed: an alias to one of them (&a [*a]) makes a
        # value that holds itself, which every walk over the data recursed into until
        # RecursionError (a site file's check of its strings).
        open_anchors = self.__dict__.setdefault("_open_anchors", [])
        event = self.peek_event()
        anchor = event.anchor if isinstance(event, yaml.CollectionStartEvent) else None
        try:
            if self._depth > MAX_DEPTH:
                raise YamlInputError(f"nesting deeper than {MAX_DEPTH} levels (line "
                                     f"{event.start_mark.line + 1}); hpccl's files need a few")
            if isinstance(event, yaml.AliasEvent) and event.anchor in open_anchors:
                raise YamlInputError(f"the alias *{event.anchor} on line {event.start_mark.line + 1} "
                                     f"stands inside the value it names (&{event.anchor}): a value "
                                     "that holds itself; write the value out")
            open_anchors.append(anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                open_anchors.pop()
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = (key_node.tag, key_node.value)
                if key in first:
                    raise YamlInputError(f"key {key_node.value!r} is written twice in one mapping, on line "
                                         f"{first[key] + 1} and line {key_node.start_mark.line + 1}; "
                                         "keep one")
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        # An explicit tag on text it cannot build (!!float 'x', !!int ''): PyYAML lets the
        # constructor's ValueError or KeyError out, which names neither line nor tag.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError, LookupError) as e:
            found = node.value if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlInputError(f"line {node.start_mark.line + 1}: the tag {tag} cannot be built "
                                 f"from {found!r} ({e}); drop the tag or fix the value") from None


# YAML 1.1 also reads 1:30:00 as the base-60 number 5400 (and 1:30.5 as a float): an unquoted
# walltime became seconds and was refused as "expected a string, found 5400". YAML 1.2 dropped
# base 60; here such a scalar stays the string it looks like.
YamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if not (tag.endswith((":int", ":float")) and ":[0-5]?[0-9]" in rx.pattern)]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))


def _decode(data: bytes) -> str:
    """UTF-8 (a UTF-8 byte-order mark is dropped); anything else named, with where it fails."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            raise YamlInputError(f"the file is {name} text (it starts with a {name} byte-order mark); "
                                 "hpccl reads UTF-8. HINT: save it as UTF-8, e.g. iconv -f "
                                 f"{name} -t UTF-8")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise YamlInputError(f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} on line {line}, "
                             f"column {column} (a Latin-1 or Windows-1252 file?). HINT: save it as "
                             "UTF-8, e.g. iconv -f LATIN1 -t UTF-8") from None


def refuse_control_characters(value, path: str = "", seen: set | None = None) -> None:
    """YamlInputError naming the key path of the first string holding a control character."""
    seen = set() if seen is None else seen
    if isinstance(value, str):
        m = _CONTROL.search(value)
        if m:
            raise YamlInputError(f"key '{path or '<top level>'}': the string {value!r} holds the control "
                                 f"character {m.group()!r}; hpccl takes printable text (tabs and "
                                 "line breaks of a block scalar aside)")
    elif isinstance(value, (dict, list)) and id(value) not in seen:
        seen.add(id(value))      # aliases share objects: visit each once (no exponential walk)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            sub = f"{path}[{key}]" if isinstance(value, list) else (f"{path}.{key}" if path else str(key))
            refuse_control_characters(key, sub, seen)
            refuse_control_characters(item, sub, seen)


MAX_YAML_BYTES = 2**20


def load_yaml(stream):
    """The one YAML reader for job files, ``--set`` values, site and study files: YAML 1.2's
    exponent floats, and strict (``YamlInputError``, a ``yaml.YAMLError``, so callers name the
    file as for a syntax error). ``stream``: text, bytes, or a file opened in binary mode (so
    the encoding is checked here, not by the platform's default)."""
    if hasattr(stream, "read"):
        stream = stream.read(MAX_YAML_BYTES + 1)
    if len(stream) > MAX_YAML_BYTES:
        # PyYAML reads about a megabyte a second: a 50 MB file (a data file given as the job, a
        # runaway generator) held validate for minutes, deaf to the user.
        raise YamlInputError(f"the text is longer than {MAX_YAML_BYTES // 2**20} MiB; hpccl's job, "
                             "site and study files are a few kB (is it a data file?)")
    if isinstance(stream, bytes):
        stream = _decode(stream)
    try:
        value = yaml.load(stream, Loader=YamlLoader)
    except yaml.MarkedYAMLError as e:
        raise YamlSyntaxError(_one_line(e)) from None
    except yaml.reader.ReaderError as e:
        # A raw control byte (NUL...) stops PyYAML's reader before any key is known; its own text
        # is two lines and counts characters from the start of the file.
        line = stream.count("\n", 0, e.position) + 1
        column = e.position - (stream.rfind("\n", 0, e.position) + 1) + 1
        raise YamlSyntaxError(f"the control character {chr(e.character)!r} on line {line}, column "
                              f"{column}; hpccl takes printable text (tabs and line breaks aside)") from None
    refuse_control_characters(value)
    return value


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: bounds, each open or closed. Declared on the field
    (``ranged``), checked by the loader for every value a file or ``--set`` gives, and walked
    by the tests, which try a value outside every declared bound."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    @staticmethod
    def applies(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def describe(self, kind: str) -> str:
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"{kind} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {hi}"
        return kind


@dataclasses.dataclass(frozen=True)
class PathComponent:
    """A string that becomes one component of a path (a job's name makes its run directory
    LOG_DIR/NAME-TIME): '../x' would leave log.dir, 'a/b' nest directories, '' or '.' name
    the log directory itself, and a control character or a leading '-' reaches shell and
    scheduler command lines as something else."""
    max_len: int = 200             # NAME-TIME and a sweep's -weak-gNNNN suffix within NAME_MAX (255)
    EXPECTED = ("a name usable as one directory component: 1 to 200 printable characters, not "
                "'.' or '..', without '/' and not starting with '-'")

    @staticmethod
    def applies(v) -> bool:
        return isinstance(v, str)

    def __contains__(self, v) -> bool:
        return (0 < len(v) <= self.max_len and v not in (".", "..") and "/" not in v
                and not v.startswith("-") and v.isprintable())


def user_path(default=None):
    """A path key (data.path, log.dir, ...): '~' and '~user' are expanded on reading, as a
    shell would; unexpanded, '~/runs' made a directory named '~' in the working directory and
    '~/data.h5' was reported missing."""
    return dataclasses.field(default=default, metadata={"user_path": True})


def path_component(default=dataclasses.MISSING):
    domain = PathComponent()
    return dataclasses.field(default=default, metadata={"domain": domain, "expected": domain.EXPECTED})


def _number(v) -> str:
    if v is None:
        return ""
    return str(int(v)) if isinstance(v, int) or (isinstance(v, float) and v.is_integer()) else f"{v:g}"


def ranged(default=dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, expected=None):
    """A dataclass field whose numeric value must lie in the given bounds (``ge``/``gt``
    below, ``le``/``lt`` above); ``None`` stays allowed where the type is Optional.
    ``expected``: the whole domain in words, where numbers share the key with words (the
    generated 'an integer >= 1 or a string' would suggest values the key refuses)."""
    domain = Range(lo=gt if gt is not None else ge, hi=lt if lt is not None else le,
                   lo_open=gt is not None, hi_open=lt is not None)
    return dataclasses.field(default=default, metadata={"domain": domain, "expected": expected})


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def domain_text(tp, domain: Range) -> str:
    """'an integer >= 1 or null' for Optional[int] with ge=1, and so on."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    kind = "an integer" if int in args else "a number"
    text = domain.describe(kind)
    others = [a for a in args if a not in (int, float, type(None))]
    text += "".join(f" or {_type_name(a)}" for a in others)
    return text + (" or null" if type(None) in args else "")


def yaml_keys(cls) -> list[str]:
    """The keys a user writes for a section (field names, with aliases such as 'async')."""
    shown = {v: k for k, v in getattr(cls, "__aliases__", {}).items()}
    return sorted(shown.get(f.name, f.name) for f in dataclasses.fields(cls)
                  if f.name != getattr(cls, "__extra_keys__", None))


def suggest(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class Loader:
    """Converts raw values into typed ones; ``source`` names the file in every error."""

    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, expected: str, found: Any, hint: str = "") -> ConfigError:
        shown = repr(found) if not isinstance(found, (dict, list)) else type(found).__name__
        return ConfigError(f"{self.source}: key '{path}': expected {expected}, found {shown}.{hint}")

    def convert(self, tp, value, path: str):
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            errors = []
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return self.convert(arg, value, path)
                except ConfigError as e:
                    errors.append(e)
            if len(errors) == 1:
                raise errors[0]
            raise self.error(path, _type_name(tp), value)
        if origin is Literal:
            choices = typing.get_args(tp)
            if value not in choices:
                raise self.error(path, _type_name(tp), value, suggest(value, [str(c) for c in choices]))
            return value
        if origin in (list, tuple):
            if not isinstance(value, (list, tuple)):
                raise self.error(path, _type_name(tp), value)
            item = typing.get_args(tp)[0]
            out = [self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(out) if origin is tuple else out
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise self.error(path, "a mapping", value)
            return dict(value)
        if dataclasses.is_dataclass(tp):
            return self.section(tp, value, path)
        if tp is bool:
            if not isinstance(value, bool):
                raise self.error(path, "true/false", value)
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(path, "an integer", value)
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(path, "a number", value)
            if not math.isfinite(value):
                raise self.error(path, "a finite number", value)
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise self.error(path, "a string", value)
            return value
        if tp is Any:
            return value
        raise TypeError(f"unsupported schema type {tp!r} at {path}")

    def section(self, cls, value, path: str):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(path or "<top level>", "a mapping (section)", value)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        extra_ok = getattr(cls, "__extra_keys__", None)  # name of a dict field taking unknown keys
        aliases = getattr(cls, "__aliases__", {})         # YAML key -> field (e.g. async -> async_updates)
        kwargs, extras = {}, {}
        for written, raw in value.items():
            key = aliases.get(written, written)
            sub = f"{path}.{written}" if path else str(written)    # errors name the YAML key
            if key not in fields or key == extra_ok:
                if extra_ok:
                    extras[key] = raw
                    continue
                where = f"section '{path}'" if path else "the top level"
                known = yaml_keys(cls)
                raise ConfigError(f"{self.source}: unknown key '{sub}' in {where}; known keys: "
                                  f"{', '.join(known)}.{suggest(key, known)}")
            kwargs[key] = self.convert(hints[key], raw, sub)
            if fields[key].metadata.get("user_path") and isinstance(kwargs[key], str):
                kwargs[key] = os.path.expanduser(kwargs[key])
            domain = fields[key].metadata.get("domain")
            if domain is not None and domain.applies(kwargs[key]) and kwargs[key] not in domain:
                raise self.error(sub, fields[key].metadata.get("expected") or domain_text(hints[key], domain), raw)
        for name in fields:
            # Absent sections are built (and checked) like written ones, from an empty mapping.
            if name not in kwargs and dataclasses.is_dataclass(hints[name]):
                kwargs[name] = self.section(hints[name], {}, f"{path}.{name}" if path else name)
        missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING and n not in kwargs and n != extra_ok]
        if missing:
            raise ConfigError(f"{self.source}: section '{path or '<top level>'}' is missing required "
                              f"key '{missing[0]}' ({_type_name(hints[missing[0]])}).")
        if extra_ok:
            kwargs[extra_ok] = extras
        obj = cls(**kwargs)
        check = getattr(obj, "check", None)
        if check is not None:
            check(self, path)
        return obj


def apply_override(raw: dict, dotted: str, value, source: str, root_cls) -> None:
    """Set ``a.b.c = value`` in a raw dict, refusing paths the schema does not know."""
    keys = dotted.split(".")
    node, cls = raw, root_cls
    for i, key in enumerate(keys):
        known = {f.name for f in dataclasses.fields(cls)} if cls is not None else None
        extra = getattr(cls, "__extra_keys__", None) if cls is not None else None
        # The raw dict keeps the key as written (``async``), so errors name it; the schema
        # knows it by its field (``async_updates``).
        field_name = getattr(cls, "__aliases__", {}).get(key, key) if cls is not None else key
        if known is not None and field_name not in known and not extra:
            prefix = ".".join(keys[:i]) or "<top level>"
            shown = yaml_keys(cls)
            raise ConfigError(f"{source}: unknown key '{'.'.join(keys[:i + 1])}' in section "
                              f"'{prefix}'; known keys: {', '.join(shown)}.{suggest(key, shown)}")
        if i == len(keys) - 1:
            node[key] = value
            return
        child = node.get(key)
        if isinstance(child, str):  # shorthand such as `learner: rehearsal`
            child = {"kind": child}
        node[key] = child if isinstance(child, dict) else {}
        node = node[key]
        nxt = typing.get_type_hints(cls).get(field_name) if cls is not None and field_name in known else None
        cls = nxt if nxt is not None and dataclasses.is_dataclass(nxt) else None


# checkpoint.every: N epochs, a duration, 'task' or 'off' (parsed here, so a job file is
# checked without importing the checkpoint machinery and torch).
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)\s*$")
_UNIT_S = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}


def parse_every(value):
    """``checkpoint.every`` as (kind, amount): ("epochs", N), ("seconds", S), ("task", 0) or
    ("off", 0); None when the value means nothing."""
    if isinstance(value, int) and not isinstance(value, bool):
        return ("epochs", value) if value >= 1 else None
    if value in ("task", "off"):
        return (value, 0)
    m = _DURATION.match(str(value))
    if m and float(m.group(1)) > 0:
        return ("seconds", float(m.group(1)) * _UNIT_S[m.group(2)])
    return None


def parse_timeout(value):
    """``runtime.hang_timeout`` in seconds: a number of seconds > 0, a time such as '5min',
    or 'off' (0.0); None when the value means nothing."""
    if value is False or value == "off":
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value > 0 and value == value and value != float("inf") else None
    m = _DURATION.match(str(value))
    if m and float(m.group(1)) > 0:
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    return None
