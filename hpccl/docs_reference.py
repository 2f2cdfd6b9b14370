"""The documentation's reference pages, generated from the code so they cannot drift: the job
file and the site file from their dataclass schemas (every key, its type, its domain from
``hpccl.core.schema.ranged``, its default and its meaning), the command line from
``hpccl.cli.build_parser()`` (every subcommand, its arguments, help and defaults).

A key's meaning is the comment written beside its field (continued on comment lines indented
under it), else the comment block right above it, else an attribute docstring: the schema's
comments are its documentation, read with ``tokenize`` and placed with ``ast``, so nothing is
written twice. A section's meaning is its class docstring.

It is also an mkdocs hook (``hooks:`` in mkdocs.yml): ``on_files`` adds the pages to every
build, so no generated file is kept in the repository. ``python -m hpccl.docs_reference DIR``
writes them to DIR, to read them without mkdocs.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import os
import sys
import textwrap
import tokenize
import typing

import yaml

PAGES = {"reference/job-file.md": "job_file_page",
         "reference/site-file.md": "site_file_page",
         "reference/cli.md": "cli_page"}


# --- meanings, from the comments of the schema's source ---------------------------------------

@functools.lru_cache(maxsize=None)
def _module_source(path: str):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    comments = {}       # line -> (column, text), every comment of the file
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip())
    return text.splitlines(), comments, ast.parse(text)


def _is_separator(text: str) -> bool:
    """'-- the task -----' and the like: a group heading, not a key's meaning."""
    return text.startswith("--") or set(text) <= set("-=# ")


def field_meanings(cls) -> dict[str, str]:
    """Field name -> its meaning in words, from the comments at its definition."""
    lines, comments, tree = _module_source(inspect.getsourcefile(cls))
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__), None)
    if node is None:
        return {}
    out = {}
    body = node.body
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        beside = [comments[n][1] for n in range(stmt.lineno, stmt.end_lineno + 1)
                  if n in comments and lines[n - 1][:comments[n][0]].strip()]
        n = stmt.end_lineno + 1       # comment lines indented under the field continue its comment
        while beside and n in comments and not lines[n - 1][:comments[n][0]].strip() \
                and comments[n][0] > stmt.col_offset:
            beside.append(comments[n][1])
            n += 1
        above, n = [], stmt.lineno - 1
        while n in comments and not lines[n - 1][:comments[n][0]].strip() \
                and comments[n][0] == stmt.col_offset:
            above.insert(0, comments[n][1])
            n -= 1
        above = [t for t in above if not _is_separator(t)]
        nxt = body[i + 1] if i + 1 < len(body) else None
        docstring = (nxt.value.value if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                     and isinstance(nxt.value.value, str) else "")
        parts = beside or above
        out[stmt.target.id] = " ".join(parts + ([" ".join(docstring.split())] if docstring else []))
    return out


def _doc(cls) -> str:
    """A class docstring as Markdown: its paragraphs, a preformatted block kept as code."""
    text = inspect.getdoc(cls) or ""
    if cls.__doc__ is None or text.startswith(f"{cls.__name__}("):   # dataclass's generated one
        return ""
    blocks = []
    for para in text.split("\n\n"):
        if any(ln.startswith(" ") for ln in para.splitlines()[1:]):
            blocks.append("```\n" + para + "\n```")
        else:
            blocks.append(" ".join(para.split()))
    return "\n\n".join(blocks)


# --- the schema, walked -------------------------------------------------------------------------

@dataclasses.dataclass
class Key:
    path: str            # the dotted key a user writes: train.lr, rehearsal.async
    type: str
    domain: str
    default: str
    meaning: str


def _section_class(tp):
    """The dataclass a field holds (through Optional, or as the items of a list), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    return inner[0] if inner else None


def _yaml_value(value) -> str:
    if isinstance(value, str):
        return value if value else '""'
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return _yaml_value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "" if dataclasses.is_dataclass(value) else _yaml_value(value)    # a section: its keys say
    return "required"


def schema_sections(cls, prefix: str = "") -> list[tuple[str, type, str, list[Key]]]:
    """(section path, class, meaning of the section, its keys) for ``cls`` and every section
    below it, depth first; keys by their YAML names (aliases such as ``async`` shown as such)."""
    from hpccl.core.schema import _type_name, domain_text
    hints = typing.get_type_hints(cls)
    shown = {v: k for k, v in getattr(cls, "__aliases__", {}).items()}
    meanings = field_meanings(cls)
    keys, below = [], []
    for f in dataclasses.fields(cls):
        if f.name == getattr(cls, "__extra_keys__", None) or not f.init:
            continue
        name = shown.get(f.name, f.name)
        path = f"{prefix}.{name}" if prefix else name
        tp = hints[f.name]
        domain = f.metadata.get("domain")
        domain = (f.metadata.get("expected") or domain_text(tp, domain)) if domain is not None else ""
        section = _section_class(tp)
        meaning = meanings.get(f.name, "") or (_doc(section).split("\n\n")[0] if section else "")
        kind = ("a list of sections" if typing.get_origin(tp) in (list, tuple) else "section") if section else _type_name(tp)
        keys.append(Key(path, kind, domain, _default(f), meaning))
        if section is not None:     # a list of sections (site queues): its items' keys as queues[].name
            below.append((path + ("[]" if typing.get_origin(tp) in (list, tuple) else ""), section, meaning))
    out = [(prefix, cls, _doc(cls), keys)]
    for path, section, meaning in below:
        sub = schema_sections(section, path)
        first = sub[0]
        sub[0] = (first[0], first[1], first[2] or meaning, first[3])
        out += sub
    return out


def schema_keys(cls) -> list[Key]:
    return [k for _, _, _, keys in schema_sections(cls) for k in keys]


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped, and '<' too, so '<run name>' is not taken for HTML."""
    text = (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ") or " "


def _code(text: str) -> str:
    """Text for a code span in a table cell (shown literally: only pipes need escaping)."""
    return (text or "").replace("|", "\\|").replace("\n", " ") or " "


def _table(keys: list[Key]) -> str:
    rows = ["| key | type | domain | default | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{k.path}` | {_cell(k.type)} | {_cell(k.domain)} | {f'`{_code(k.default)}`' if k.default else ' '} | {_cell(k.meaning)} |"
             for k in keys]
    return "\n".join(rows)


def _schema_page(title: str, intro: str, root) -> str:
    parts = [f"# {title}", "", intro, ""]
    for path, _cls, doc, keys in schema_sections(root):
        parts += [f"## `{path}`" if path else "## Top level", ""]
        if doc:
            parts += [doc, ""]
        parts += [_table(keys), ""]
    return "\n".join(parts)


GENERATED = ("*Generated from the code at every documentation build "
             "(`hpccl/docs_reference.py`); edit the comments beside the fields, not this page.*")


GENERATED_CLI = ("*Generated from `hpccl.cli.build_parser()` at every documentation build "
                 "(`hpccl/docs_reference.py`); edit the help texts in the parsers, not this page.*")


def job_file_page() -> str:
    from hpccl.alma.jobconfig import ALMA_LEARNER_OPTIONS
    from hpccl.config import JobConfig, LEARNER_KINDS
    from hpccl.erm.jobconfig import SOLVER_OPTIONS
    from hpccl.models import MODEL_KINDS, model_option_defaults
    intro = ("One YAML file describes one job; `jobs/` holds examples to copy. Unknown keys are "
             "errors; `--set key.path=value` overrides any key (the value is read as YAML), and "
             "the resolved job is saved as `config.yaml` in the run directory. "
             "`learner: rehearsal` is short for `learner: {kind: rehearsal}` (likewise `model` "
             "and `scenario`).\n\n" + GENERATED)
    page = _schema_page("Job-file reference", intro, JobConfig)
    extra = ["## Options of each model kind (`model.*`)", "",
             "Given flat beside `model.kind` (e.g. `hidden: [128, 128]`); read from the builders' "
             "signatures in `hpccl/models/`.", "", "| `model.kind` | option | default |", "|---|---|---|"]
    for kind in sorted(MODEL_KINDS):
        for name, default in sorted(model_option_defaults(kind).items()):
            shown = "required" if default is inspect.Parameter.empty else _yaml_value(default)
            extra.append(f"| `{kind}` | `model.{name}` | `{_code(shown)}` |")
    extra += ["", "## Learner kinds and their options (`learner.*`)", "",
              f"Class-incremental learners (no options besides `kind`): "
              f"{', '.join(f'`{k}`' for k in LEARNER_KINDS)}. The ALMA learners of "
              "`scenario: megabatch` take options flat beside `kind`:", "",
              "| `learner.kind` | option | expected |", "|---|---|---|"]
    for kind, options in ALMA_LEARNER_OPTIONS.items():
        extra += [f"| `{kind}` | `learner.{name}` | {_cell(expected)} |" for name, (expected, _) in options.items()]
    extra += ["", "## ERM solver options (`erm.options.*`)", "", "| `erm.solver` | options |", "|---|---|"]
    extra += [f"| `{s}` | {', '.join(f'`erm.options.{o}`' for o in opts) or 'none'} |"
              for s, opts in SOLVER_OPTIONS.items()]
    return page + "\n" + "\n".join(extra) + "\n"


def site_file_page() -> str:
    from hpccl.sched.sites import PLACEHOLDERS, SiteConfig
    intro = ("One YAML file per machine (`site_configs/` ships some; `hpccl sites` lists where "
             "they are read from). Unknown keys are errors, and no value may hold a newline "
             "or another control character except `description` and a queue's `note`. See "
             "[Running on clusters](../clusters.md) for how files are found and merged.\n\n" + GENERATED)
    page = _schema_page("Site-file reference", intro, SiteConfig)
    ph = ["## Placeholders", "", "`launcher` and `pbs.select` may use these (filled per job; "
          "`{local_mpirun}` only in `launcher`):", "", "| placeholder | value |", "|---|---|"]
    ph += [f"| `{{{k}}}` | {_cell(v)} |" for k, v in PLACEHOLDERS.items()]
    return page + "\n" + "\n".join(ph) + "\n"


# --- the command line ---------------------------------------------------------------------------

def _subcommands(parser):
    """(name, help, parser) of each subcommand of ``parser``, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name) or "", sub


def walk_commands(parser, prefix: str = "hpccl"):
    """(full command, help, parser) of every command below ``parser``, depth first."""
    for name, help_text, sub in _subcommands(parser):
        full = f"{prefix} {name}"
        yield full, help_text, sub
        yield from walk_commands(sub, full)


def arguments(parser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _argument_row(parser, action) -> str:
    formatter = parser._get_formatter()
    if action.option_strings:
        name = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.nargs != 0:
            name += f" `{formatter._metavar_formatter(action, action.dest.upper())(1)[0]}`"
    else:
        name = f"`{formatter._metavar_formatter(action, action.dest)(1)[0]}`"
    help_text = formatter._expand_help(action) if action.help else ""
    if action.choices and not isinstance(action.choices, dict):
        help_text += (" " if help_text else "") + "One of: " + ", ".join(f"`{c}`" for c in action.choices) + "."
    default = action.default
    shown = "" if default in (None, argparse.SUPPRESS, False, []) or action.nargs == 0 else f"`{default}`"
    return f"| {name} | {_cell(help_text)} | {shown or ' '} |"


def cli_page() -> str:
    from hpccl.cli import build_parser
    parser = build_parser()
    parts = ["# Command-line reference", "",
             "Every command has `--help` with an example. Mistakes in a flag, a job file or a "
             "`--set` end with one paragraph naming what was expected and what was found, and "
             "exit code 2.", "", GENERATED_CLI, "", "| command | what it does |", "|---|---|"]
    commands = list(walk_commands(parser))
    parts += [f"| [`{full}`](#{full.replace(' ', '-')}) | {_cell(h)} |" for full, h, _ in commands]
    parts.append("")
    for full, help_text, sub in commands:
        level = "#" * min(2 + full.count(" ") - 1, 4)
        parts += [f'{level} `{full}` {{#{full.replace(" ", "-")}}}', ""]
        parts += ["```", sub.format_usage().strip().replace("usage: ", "", 1), "```", ""]
        description, _, example = textwrap.dedent(sub.description or help_text).partition("\nexample:\n")
        parts += [_cell(" ".join(description.split())), ""]
        if example.strip():
            parts += ["```bash", textwrap.dedent(example).strip(), "```", ""]
        args = arguments(sub)
        if args:
            parts += ["| argument | meaning | default |", "|---|---|---|"]
            parts += [_argument_row(sub, a) for a in args]
            parts.append("")
    return "\n".join(parts)


def pages() -> dict[str, str]:
    """Page path (below docs/) -> Markdown."""
    return {path: globals()[fn]() for path, fn in PAGES.items()}


# --- mkdocs hook --------------------------------------------------------------------------------

def on_files(files, config):
    """Add the generated pages to the build (mkdocs >= 1.6)."""
    from mkdocs.structure.files import File
    for path, text in pages().items():
        if files.get_file_from_path(path) is None:
            files.append(File.generated(config, path, content=text))
    return files


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hpccl.docs_reference OUT_DIR", file=sys.stderr)
        return 2
    for path, text in pages().items():
        target = os.path.join(argv[0], path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(text)
        print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
