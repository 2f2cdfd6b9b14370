"""The documentation: the site builds with ``mkdocs build --strict`` (a broken link, a missing
anchor or a page outside the nav is an error); the generated references hold every key of the
job and site schemas and every command and option of the parser, each walked here, not listed,
so a key added without reaching the docs fails; the README stays a front door: at most 200
lines, opening with the two commands, its links into docs/ pointing at pages that exist."""

import dataclasses
import html
import os
import re
import subprocess
import sys
import typing
from html.parser import HTMLParser

import pytest
import yaml

from helpers import ROOT, run_cmd

README = os.path.join(ROOT, "README.md")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = run_cmd([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", os.path.join(ROOT, "mkdocs.yml"),
                 "-d", str(out)], timeout=120, env={"NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    return out


def page(site, name) -> str:
    with open(os.path.join(site, name, "index.html"), encoding="utf-8") as f:
        return f.read()


class _Rows(HTMLParser):
    """Every table row of a page, as the text of its cells."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def rows_by_key(text) -> dict[str, list[str]]:
    parser = _Rows()
    parser.feed(text)
    out = {}
    for row in parser.rows:
        if row:
            out.setdefault(row[0], row)     # the first row of a key: the schema's, not a later table's
    return out


# -- the schemas, walked ---------------------------------------------------------------------------

def _section(tp):
    if dataclasses.is_dataclass(tp):
        return tp
    inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    return inner[0] if inner else None


def schema_fields(cls, prefix=""):
    """(dotted YAML key, field, type) of every key a file of ``cls`` may hold."""
    hints = typing.get_type_hints(cls)
    shown = {v: k for k, v in getattr(cls, "__aliases__", {}).items()}
    for f in dataclasses.fields(cls):
        if f.name == getattr(cls, "__extra_keys__", None) or not f.init:
            continue
        key = f"{prefix}.{shown.get(f.name, f.name)}" if prefix else shown.get(f.name, f.name)
        yield key, f, hints[f.name]
        if _section(hints[f.name]) is not None:     # list[Section]: its items' keys as key[].name
            listed = typing.get_origin(hints[f.name]) in (list, tuple)
            yield from schema_fields(_section(hints[f.name]), key + ("[]" if listed else ""))


def check_reference(text, root):
    """Every key of ``root`` has a row: its type, its domain, its default and a meaning."""
    from hpccl.core.schema import domain_text
    rows = rows_by_key(text)
    keys = list(schema_fields(root))
    assert len(keys) > 20
    for key, f, tp in keys:
        assert key in rows, f"key {key!r} is missing from the reference"
        _, type_cell, domain_cell, default_cell, meaning = rows[key]
        assert type_cell, key
        assert meaning.strip(), (f"key {key!r} has no meaning in the reference: write a comment beside "
                                 "its field (hpccl/docs_reference.py reads it)")
        domain = f.metadata.get("domain")
        if domain is not None:
            assert domain_cell == (f.metadata.get("expected") or domain_text(tp, domain)), key
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert default_cell == "required", key
        elif isinstance(f.default, str):
            assert default_cell == (f.default or '""'), (key, default_cell)
        elif f.default is not dataclasses.MISSING and isinstance(f.default, (bool, int, float, type(None))):
            assert yaml.safe_load(default_cell) == f.default, (key, default_cell)


def test_the_site_builds_strictly(site):
    for name in ("", "getting-started", "concepts", "clusters", "scaling", "failures", "analysis",
                 "mpi-stacks", "architecture", "benchmarks", "reference/job-file", "reference/site-file",
                 "reference/cli"):
        assert os.path.isfile(os.path.join(site, name, "index.html")), name


def test_job_file_reference_has_every_key(site):
    from hpccl.config import JobConfig
    from hpccl.models import MODEL_KINDS, model_option_names
    text = page(site, "reference/job-file")
    check_reference(text, JobConfig)
    rows = {(r[0], r[1]) for r in _rows_list(text) if len(r) >= 2}
    for kind in MODEL_KINDS:
        for option in model_option_names(kind):
            assert (kind, f"model.{option}") in rows, f"model option {option!r} of {kind!r}"


def _rows_list(text):
    parser = _Rows()
    parser.feed(text)
    return parser.rows


def test_site_file_reference_has_every_key(site):
    from hpccl.sched.sites import PLACEHOLDERS, SiteConfig
    text = page(site, "reference/site-file")
    check_reference(text, SiteConfig)
    for name in PLACEHOLDERS:
        assert "{" + name + "}" in rows_by_key(text), name


def _commands(parser, prefix="hpccl"):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _commands(sub, f"{prefix} {name}")


def test_cli_reference_has_every_command_and_option(site):
    import argparse
    from hpccl.cli import build_parser
    text = page(site, "reference/cli")
    sections = dict(re.findall(r'<h\d id="(hpccl-[\w-]+)">(.*?)(?=<h\d id="hpccl-|\Z)', text, re.S))
    commands = list(_commands(build_parser()))
    assert len(commands) >= 10
    for full, parser in commands:
        anchor = full.replace(" ", "-")
        assert anchor in sections, f"{full!r} has no section in the CLI reference"
        rows = rows_by_key(sections[anchor])
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            row = next((r for k, r in rows.items() if all(n in k.split() or f"{n}," in k.split()
                                                           for n in names)), None)
            assert row is not None, f"{full} {names}: not in the CLI reference"
            if action.help:
                # `code` in a help text renders as code: the backticks are not in the page's text
                expected = " ".join(parser._get_formatter()._expand_help(action).replace("`", "").split())
                assert expected in html.unescape(row[1]), (full, names)
            if action.default not in (None, False, [], argparse.SUPPRESS) and action.nargs != 0:
                assert str(action.default) in row[2], (full, names, action.default)


# -- the README ------------------------------------------------------------------------------------

def readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def test_readme_is_a_short_front_door_opening_with_the_two_commands():
    text = readme()
    assert len(text.splitlines()) <= 200
    first = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first and "\n## " not in text[:first.start()], "the README must open with the commands"
    commands = [ln.split("#")[0].split() for ln in first.group(1).splitlines()]
    assert commands == [["scripts/quickstart.sh"], ["scripts/test.sh"]]
    for (script,) in commands:
        assert os.access(os.path.join(ROOT, script), os.X_OK), script
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert re.search(r"^exec bash scripts/test\.sh$", f.read(), re.M), ".ci/run must run scripts/test.sh"


def test_readme_links_into_docs_point_at_pages(site):
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme())
             if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    into_docs = [t for t in links if t.startswith("docs/")]
    assert len(into_docs) >= 10
    for target in links:
        assert os.path.exists(os.path.join(ROOT, target)), f"README links to {target!r}, which does not exist"
    for target in into_docs:
        if target.endswith(".md"):
            built = target[len("docs/"):-len(".md")]
            built = "" if built == "index" else built
            assert os.path.isfile(os.path.join(site, built, "index.html")), f"{target!r} is not a page of the site"


def test_reference_writer_without_mkdocs(tmp_path):
    r = run_cmd([sys.executable, "-m", "hpccl.docs_reference", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "reference")) == ["cli.md", "job-file.md", "site-file.md"]
    assert "`train.lr`" in (tmp_path / "reference" / "job-file.md").read_text()
