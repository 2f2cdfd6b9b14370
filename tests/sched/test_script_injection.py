"""Rendered job scripts are safe by construction (#28): no value can add a line to a script.

Quoting protects a value on a command line, not on a comment line: a newline in a directive's
value ends the #SBATCH/#PBS comment and starts a shell line that runs when the job starts. So

- every site file (the shipped ones and the test sites under tests/) is loaded with a hostile
  value in each field that reaches a script: control characters (newline + command, carriage
  return, NUL, tab, escape, DEL, C1, line separator) are refused on reading with one paragraph
  naming the file and key, exit 2; printable hostile values ($(...), backticks, quotes, '#',
  operators, a trailing backslash) are either refused the same way (fields with a narrower
  domain: names, the launcher's shell words, the #! line's path and one argument; each
  field's accepted values are listed) or rendered into a script that bash -n accepts,
  that has the same lines as a benign value's script, each differing only in the value's own
  shell word (or, on a comment line, in its text), and whose preamble, run, neither runs the
  injected command nor changes the value (module arguments, environment, launcher words);
- the flags of `hpccl submit` and the job values that reach a script are refused the same way;
- render_script refuses a control character in any field of a plan built in Python, naming the
  field, whatever a loader let through.

`setup:` lines are trusted shell by design (they run as written), so their preamble is not
run here; they are still one line each, written as `eval 'LINE'`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import glob
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from hpccl.cli import main
from hpccl.core.errors import ConfigError
from hpccl.sched.render import ScriptPlan, render_affinity_wrapper, render_script
from hpccl.sched.sites import load_site
from hpccl.sched.submit import load_job_for_site, prepare

from helpers import ROOT

QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")
SITE_FILES = sorted(glob.glob(os.path.join(ROOT, "site_configs", "*.yaml"))
                    + glob.glob(os.path.join(ROOT, "tests", "**", "sites", "*.yaml"), recursive=True))
BENIGN = "HpcclBenign0"     # a plain shell word: rendered as it is, so the hostile one's quoting shows

CONTROL = {
    "newline + command": "me@x\ntouch {marker} #",
    "carriage return": "a\rtouch {marker}",
    "NUL": "a\x00b",
    "tab": "a\tb",
    "escape": "a\x1b[2Kb",
    "DEL": "a\x7fb",
    "NEL (C1)": "a\x85b",
    "line separator": "a\u2028b",
}
PRINTABLE = {
    "command substitution": "$(touch {marker})",
    "backticks": "`touch {marker}`",
    "single quotes": "x'; touch {marker}; echo '",
    "double quotes": 'x"; touch {marker}; echo "',
    "hash": "x #; touch {marker}",
    "leading hash": "#x",
    "operators": "x; touch {marker} && y | z",
    "trailing backslash": "x\\",
    "quoted words": "\"a b\" 'c;d' e\\ f",
}


def _set(path: str, make=lambda raw, value: value):
    """A change to a site's raw data: ``make(raw, value)`` at a dotted path (list items as [i])."""
    def change(raw, value):
        keys = path.replace("[", ".[").split(".")
        node = raw
        for key in keys[:-1]:
            node = node[int(key[1:-1])] if key.startswith("[") else node.setdefault(key, {})
        last = keys[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = make(raw, value)
        else:
            node[last] = make(raw, value)
    return change


def _only_item(key: str):
    """A change that makes ``value`` the only item of the list at ``key``."""
    def change(raw, value):
        raw[key] = [value]
    return change


def _key_of(path: str):
    """A change that makes ``value`` a key of the mapping at ``path``."""
    def change(raw, value):
        node = raw
        for key in path.split("."):
            node = node.setdefault(key, {})
        node[value] = "1"
    return change


ALL = tuple(PRINTABLE)
ANY = {"slurm", "pbs", "none"}
# field -> (change, schedulers, kind, the printable values it accepts; the rest it must refuse,
# naming the key). Kinds: 'quoted' (written as one shell word), 'words' (the launcher: shell
# words, balanced quotes, no operators, substitutions or comments), 'shell' (trusted setup
# lines, written as eval 'LINE'), 'shebang' (the #! line: a path and one argument), 'name' (a
# name's narrow domain).
FIELDS = {
    "account": (_set("account"), ANY, "quoted", ALL),
    "python": (_set("python"), ANY, "quoted", ALL),
    "module_paths[0]": (_only_item("module_paths"), ANY, "quoted", ALL),
    "modules[0]": (_only_item("modules"), ANY, "quoted", ALL),
    "env.HPCCL_INJECTED": (_set("env.HPCCL_INJECTED"), ANY, "quoted", ALL),
    "queues[0].name": (_set("queues[0].name"), {"slurm", "pbs"}, "quoted", ALL),
    "slurm.directives.mail-user": (_set("slurm.directives.mail-user"), {"slurm"}, "quoted", ALL),
    "slurm.constraint": (_set("slurm.constraint"), {"slurm"}, "quoted", ALL),
    "pbs.directives.-M": (_set("pbs.directives.-M"), {"pbs"}, "quoted", ALL),
    "pbs.directives.mem": (_set("pbs.directives.mem"), {"pbs"}, "quoted", ALL),
    "pbs.place": (_set("pbs.place"), {"pbs"}, "quoted", ALL),
    "pbs.select": (_set("pbs.select", lambda raw, v: "{nodes}:" + v), {"pbs"}, "quoted", ALL),
    "setup[0]": (_only_item("setup"), ANY, "shell", ALL),
    "launcher": (_set("launcher", lambda raw, v: f"{raw['launcher']} {v}"), ANY, "words",
                 ("single quotes", "double quotes", "quoted words")),
    "shell": (_set("shell", lambda raw, v: "/bin/bash " + v), ANY, "shebang",
              ("leading hash", "trailing backslash")),
    "filesystems[0]": (_only_item("filesystems"), {"slurm", "pbs"}, "name", ()),
    "gpu_affinity.local_rank_var": (_set("gpu_affinity.local_rank_var"), ANY, "name", ()),
    "env": (_key_of("env"), ANY, "name", ()),
    "slurm.directives": (_key_of("slurm.directives"), {"slurm"}, "name", ()),
}


def site_ids():
    return [os.path.relpath(p, ROOT) for p in SITE_FILES]


@functools.lru_cache(maxsize=None)
def _raw(site_file: str) -> dict:
    return yaml.safe_load(Path(site_file).read_text())


def hostile_site(isolated, site_file: str, field: str, value: str) -> tuple[str, str]:
    """(site name, path written): ``site_file`` with ``field`` set to ``value``, written where it
    is read last: for a shipped site only the changed top-level key (merged over the shipped
    file), for a test site the whole file."""
    raw = copy.deepcopy(_raw(site_file))
    FIELDS[field][0](raw, value)
    shipped = Path(site_file).parent == Path(ROOT) / "site_configs"
    top = field.split(".")[0].split("[")[0]
    name = Path(site_file).stem
    path = isolated / f"{name}.yaml"
    path.write_text(yaml.safe_dump({top: raw[top]} if shipped else raw, sort_keys=False))
    return name, str(path)


def scheduler_of(site_file):
    return _raw(site_file)["scheduler"]


@pytest.fixture(scope="module")
def job():
    return load_job_for_site(QUICKSTART)


@pytest.fixture
def quick_prepare(monkeypatch):
    """prepare() without its host-memory estimate and its mpirun probe: most of its time, and
    neither writes anything into a script but the local mpirun's words."""
    import hpccl.sched.submit as submit
    monkeypatch.setattr(submit, "check_node_memory", lambda site, cfg, layout: None)
    monkeypatch.setattr(submit, "local_mpirun", lambda ranks: f"/usr/bin/mpirun -np {ranks} --oversubscribe")


def render_for(site_name: str, job, run_dir: str):
    """Script and wrapper as `hpccl submit` would write them for 2 GPUs (queue chosen, account
    from the site)."""
    site = load_site(site_name)
    prep = prepare(site, job, 2, 600, run_dir, job.name, None, site.account)
    return prep.script, render_affinity_wrapper(prep.plan)


def tokens(line: str) -> list[str]:
    """The shell words and operators of a line, as bash splits them (quotes removed)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.commenters = ""
    lex.whitespace_split = True       # words end at blanks and operators only, as in bash
    return list(lex)


DIRECTIVE = ("#SBATCH ", "#PBS ")


def _line_problem(b: str, h: str, value: str, kind: str):
    """Why hostile line ``h`` is not benign line ``b`` with the value in place of BENIGN."""
    if BENIGN not in b:
        return "a line without the value changed"
    if b.startswith("#") and not b.startswith(DIRECTIVE) and h == b.replace(BENIGN, value):
        return None          # on a comment line as it is; a quoted hint (sbatch 'DIR') is words
    words = tokens(b)
    if kind == "words":
        i = words.index(BENIGN)
        want = words[:i] + tokens(value) + words[i + 1:]
    else:
        want = [w.replace(BENIGN, value) for w in words]
    got = tokens(h)
    return None if got == want else f"shell words {got} instead of {want}"


def assert_same_structure(benign: str, hostile: str, value: str, kind: str) -> None:
    """Same lines; a changed line holds the benign value, and differs only in it: on a comment
    line its text, elsewhere its shell words (for a launcher, the words the value splits into).
    Directives are sorted by their text, so the value may move its directive within the block."""
    b_lines, h_lines = benign.split("\n"), hostile.split("\n")
    assert len(h_lines) == len(b_lines), (f"{len(h_lines)} lines with {value!r}, {len(b_lines)} "
                                          "with a benign value")
    block = [i for i, line in enumerate(b_lines) if line.startswith(DIRECTIVE)]
    assert block == [i for i, line in enumerate(h_lines) if line.startswith(DIRECTIVE)], \
        "the directive block changed its place or length"
    b_dir = sorted(b_lines[i] for i in block if b_lines[i] not in {h_lines[j] for j in block})
    h_dir = sorted(h_lines[i] for i in block if h_lines[i] not in {b_lines[j] for j in block})
    assert len(b_dir) == len(h_dir), f"directives {b_dir} became {h_dir}"
    for h in h_dir:
        problems = [_line_problem(b, h, value, kind) for b in b_dir]
        assert None in problems, f"directive {h!r} matches none of {b_dir}: {problems}"
    for number, (b, h) in enumerate(zip(b_lines, h_lines), start=1):
        if b != h and number - 1 not in block:
            problem = _line_problem(b, h, value, kind)
            assert problem is None, f"line {number}: {problem}\n  benign:  {b!r}\n  hostile: {h!r}"


def preamble(script: str, dump: str) -> str:
    """The script up to its start/resume part, its launcher line, and a dump of what they set."""
    lines = script.split("\n")
    head = lines[:lines.index("# --- start or resume " + "-" * 74)]
    head += [ln for ln in lines if ln.startswith("launcher=(")]
    head += [f'printf "%s\\0" "${{launcher[@]}}" > {dump}/launcher',
             f'printf "%s" "${{HPCCL_INJECTED-unset}}" > {dump}/env']
    return "\n".join(head) + "\n"


# `module` as the script sees it on a site (each call's arguments appended to DUMP/module), and
# what a PBS job sets that a launcher may name.
PREAMBLE_ENV = {"BASH_FUNC_module%%": '() { printf "%s\\0" "$@" >> "$DUMP/module"; }',
                "HPCCL_SKIP_MODULES": "0", "PBS_NODEFILE": "/dev/null"}

DRIVER = r"""
for case in "$1"/*/; do
  bash -n "$case/job.sh" 2> "$case/syntax.err"; echo $? > "$case/syntax.rc"
  if [[ -f "$case/preamble.sh" ]]; then
    (cd "$case" && DUMP="$case" bash preamble.sh > preamble.out 2>&1; echo $? > preamble.rc)
  fi
  if compgen -G "$2*" > /dev/null; then echo "$case" > "$case/pwned"; rm -f "$2"*; fi
done
"""


@pytest.mark.parametrize("site_file", SITE_FILES, ids=site_ids())
def test_control_characters_are_refused_on_reading_with_file_and_key(site_file, isolated_sites,
                                                                     tmp_path, capsys):
    marker = tmp_path / "PWNED"
    out = tmp_path / "run"
    for field, (_, schedulers, _, _) in FIELDS.items():
        if scheduler_of(site_file) not in schedulers:
            continue
        for label, template in CONTROL.items():
            value = template.format(marker=marker)
            name, path = hostile_site(isolated_sites, site_file, field, value)
            assert main(["submit", QUICKSTART, "--site", name, "--gpus", "2", "--dry-run",
                         "--out", str(out)]) == 2, (field, label)
            captured = capsys.readouterr()
            err = captured.err.strip()
            assert err.startswith("hpccl: error: ") and "\n" not in err, (field, label, err)
            assert path in err and "control character" in err, (field, label, err)
            assert f"key '{field}" in err and repr(value)[1:-1] in err, (field, label, err)
    assert not out.exists() and not marker.exists()


@pytest.mark.usefixtures("quick_prepare")
@pytest.mark.parametrize("site_file", SITE_FILES, ids=site_ids())
def test_printable_hostile_values_are_refused_or_stay_inside_their_word(site_file, isolated_sites,
                                                                      tmp_path, monkeypatch, job):
    marker = tmp_path / "PWNED"
    cases = tmp_path / "cases"
    cases.mkdir()
    monkeypatch.chdir(tmp_path)
    accepted = {}
    for field, (_, schedulers, kind, _) in FIELDS.items():
        if scheduler_of(site_file) not in schedulers:
            continue
        benign_value = BENIGN if kind != "name" else f"{BENIGN}_ok"
        name, _ = hostile_site(isolated_sites, site_file, field, benign_value)
        benign, benign_wrapper = render_for(name, job, str(tmp_path / "run"))
        for label, template in PRINTABLE.items():
            value = template.format(marker=marker)
            name, path = hostile_site(isolated_sites, site_file, field, value)
            try:
                script, wrapper = render_for(name, job, str(tmp_path / "run"))
            except ConfigError as e:
                assert path in str(e) and f"key '{field}'" in str(e), str(e)
                continue
            accepted.setdefault(field, []).append(label)
            try:
                assert_same_structure(benign, script, value, kind)
                assert wrapper == benign_wrapper
            except AssertionError as e:
                raise AssertionError(f"{field} = {value!r} ({label}) changed the script's "
                                     f"structure: {e}") from None
            case = cases / f"{field}-{label}".replace(" ", "_").replace("/", "_")
            case.mkdir()
            (case / "job.sh").write_text(script)
            if kind != "shell":        # setup lines run as written, by design
                (case / "preamble.sh").write_text(preamble(script, case))
            (case / "value").write_text(value)
    r = subprocess.run(["bash", "-c", DRIVER, "driver", str(cases), str(marker)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, **PREAMBLE_ENV})
    assert r.returncode == 0, r.stderr
    for case in sorted(cases.iterdir()):
        value = (case / "value").read_text()
        assert (case / "syntax.rc").read_text().strip() == "0", (case.name, (case / "syntax.err").read_text())
        assert not (case / "pwned").exists(), f"{case.name}: the preamble ran the injected command"
        if not (case / "preamble.sh").exists():
            continue
        assert (case / "preamble.rc").read_text().strip() == "0", (case.name, (case / "preamble.out").read_text())
        # The value arrives as it was written: one argument, one variable, its own words.
        if case.name.startswith("env.HPCCL_INJECTED-"):
            assert (case / "env").read_text() == value, case.name
        module_args = (case / "module").read_text().split("\0") if (case / "module").exists() else []
        if case.name.startswith("modules[0]-"):
            assert module_args[module_args.index("load") + 1] == value, case.name
        if case.name.startswith("module_paths[0]-"):
            assert module_args[module_args.index("use") + 1] == value, case.name
        if case.name.startswith("launcher-"):
            words = (case / "launcher").read_text().split("\0")[:-1]
            assert words[-len(shlex.split(value)):] == shlex.split(value), (case.name, words)
    # Quoting carries every printable value of the fields written as one shell word; narrower
    # domains refuse the rest (above, naming the key).
    for field, (_, schedulers, _, accepts) in FIELDS.items():
        if scheduler_of(site_file) in schedulers:
            assert tuple(accepted.get(field, ())) == accepts, (field, accepted.get(field))


def test_free_text_may_span_lines_and_never_reaches_the_script(isolated_sites, tmp_path, monkeypatch,
                                                                job):
    monkeypatch.chdir(tmp_path)
    (isolated_sites / "polaris.yaml").write_text(yaml.safe_dump({
        "description": "line one\nline two\n", "account": "P",
        "queues": [{"name": "debug", "max_nodes": 2, "max_walltime": "01:00:00", "note": "a\nb"}]}))
    script, _ = render_for("polaris", job, str(tmp_path / "run"))
    assert "line one" not in script and "a\nb" not in script


def test_the_issue_case_end_to_end(isolated_sites, tmp_path):
    """The reported site file: refused with exit 2 and one paragraph, nothing written or run."""
    marker = tmp_path / "PWNED"
    site = isolated_sites / "slurm-local.yaml"
    site.write_text(f'slurm: {{directives: {{mail-user: "me@x\\ntouch {marker} #"}}}}\n')
    out = tmp_path / "run"
    r = subprocess.run([os.sys.executable, "-m", "hpccl", "submit", QUICKSTART, "--site", "slurm-local",
                        "--gpus", "1", "--dry-run", "--out", str(out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300, env=dict(os.environ))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    err = r.stderr.strip()
    assert err.startswith("hpccl: error: ") and "\n" not in err, err
    assert (f"{site} (merged over" in err and "key 'slurm.directives.mail-user'" in err
            and f"'me@x\\ntouch {marker} #'" in err and "a newline at character 5" in err), err
    assert not out.exists() and not marker.exists()


# --- hpccl submit's flags and the job's values -------------------------------------------------------

SUBMIT = ["submit", QUICKSTART, "--site", "slurm-local", "--gpus", "2", "--dry-run"]


@pytest.mark.parametrize("flag", ["--account", "--queue", "--out", "--walltime", "--site"])
@pytest.mark.parametrize("label", sorted(CONTROL))
def test_submit_flags_with_control_characters_are_refused(flag, label, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = os.listdir(tmp_path)
    value = CONTROL[label].format(marker=tmp_path / "PWNED")
    flags = {"--site": "slurm-local", "--out": str(tmp_path / "run"), flag: value}
    if flag == "--out":
        flags[flag] = str(tmp_path / value)
    argv = ["submit", QUICKSTART, "--gpus", "2", "--dry-run"] + [x for kv in flags.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hpccl: error: {flag}: expected ") and "\n" not in err, err
    assert "control characters" in err and repr(flags[flag])[1:-1] in err, err
    assert os.listdir(tmp_path) == before


@pytest.mark.parametrize("key", ["name", "log.dir"])
def test_job_values_that_reach_the_script_are_refused(key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = os.listdir(tmp_path)
    assert main(SUBMIT + ["--set", f'{key}="a\\nb"']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpccl: error: ") and "\n" not in err, err
    assert f"'{key}'" in err and "'a\\nb'" in err, err
    assert os.listdir(tmp_path) == before


@pytest.mark.parametrize("flag", ["--account", "--out"])
def test_submit_flags_with_printable_hostile_values_stay_inside_their_word(flag, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"

    def script_for(value, n):
        out = tmp_path / f"runs{n}" / (value if flag == "--out" else "run")
        extra = [flag, value] if flag == "--account" else []
        assert main(SUBMIT + ["--out", str(out)] + extra) == 0, capsys.readouterr().err
        capsys.readouterr()
        return (out / "job.sh").read_text(), str(tmp_path / f"runs{n}")

    benign, benign_root = script_for(BENIGN, 0)
    for n, (label, template) in enumerate(PRINTABLE.items(), start=1):
        value = template.format(marker=marker)
        script, root = script_for(value, n)
        script = script.replace(root, benign_root)     # each case has its own parent directory
        assert_same_structure(benign, script, value, "quoted")
        path = tmp_path / f"case{n}.sh"
        path.write_text(preamble(script, str(tmp_path)))
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, label
        r = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, **PREAMBLE_ENV, "DUMP": str(tmp_path)})
        assert r.returncode == 0, (label, r.stderr)
        assert not marker.exists(), f"{flag} {value!r} ran the injected command"


# --- the renderer, whatever the plan's source -----------------------------------------------------

def _full_site(scheduler: str):
    """A site built in Python (no loader) with every field that reaches a script set."""
    site = load_site({"slurm": "perlmutter", "pbs": "polaris", "none": "local"}[scheduler])
    site = dataclasses.replace(site, account="P", module_paths=["/m"], modules=["m"], env={"K": "v"},
                               setup=["true"], python="/usr/bin/python3", filesystems=["fs"],
                               slurm=dataclasses.replace(site.slurm, directives={"mail-user": "me"}),
                               pbs=dataclasses.replace(site.pbs, directives={"mem": "1gb", "-M": "me"}))
    site.name = {"slurm": "perlmutter", "pbs": "polaris", "none": "local"}[scheduler]
    return site


def _plan(site, **changes) -> ScriptPlan:
    kwargs = dict(site=site, job_name="demo", run_dir="/scratch/run", submit_dir="/home/u",
                  python="/usr/bin/python3", nodes=1, ranks_per_node=2, walltime="00:10:00",
                  queue=site.queues[0].name if site.queues else None, account="P", cores_per_node=4,
                  local_mpirun="/usr/bin/mpirun -np 2")
    kwargs.update(changes)
    return ScriptPlan(**kwargs)


def _site_changes(site, value):
    """(field as the renderer names it, site with ``value`` there) for every rendered field."""
    def sub(section, **kw):
        return {section: dataclasses.replace(getattr(site, section), **kw)}
    renamed = copy.copy(site)
    renamed.name = "site" + value
    yield "site.name", renamed
    changes = {
        "site.shell": dict(shell="/bin/bash" + value), "site.launcher": dict(launcher="mpirun" + value),
        "site.account": dict(account=value), "site.python": dict(python=value),
        "site.module_paths[0]": dict(module_paths=[value]), "site.modules[0]": dict(modules=[value]),
        "site.env.K": dict(env={"K": value}), "site.env (key": dict(env={value: "v"}),
        "site.setup[0]": dict(setup=[value]), "site.filesystems[0]": dict(filesystems=[value]),
        "site.gpu_affinity.local_rank_var": sub("gpu_affinity", local_rank_var=value),
    }
    if site.scheduler == "slurm":
        changes.update({
            "site.slurm.constraint": sub("slurm", constraint=value),
            "site.slurm.directives.mail-user": sub("slurm", directives={"mail-user": value}),
            "site.slurm.directives (key": sub("slurm", directives={value: "x"})})
    if site.scheduler == "pbs":
        changes.update({
            "site.pbs.select": sub("pbs", select="{nodes}" + value),
            "site.pbs.place": sub("pbs", place=value),
            "site.pbs.directives.mem": sub("pbs", directives={"mem": value})})
    for field, kw in changes.items():
        changed = dataclasses.replace(site, **kw)
        changed.name = site.name
        yield field, changed


@pytest.mark.parametrize("scheduler", ["slurm", "pbs", "none"])
@pytest.mark.parametrize("label", sorted(CONTROL))
def test_render_refuses_control_characters_in_any_field_of_a_plan(scheduler, label):
    value = CONTROL[label].format(marker="/tmp/PWNED")
    site = _full_site(scheduler)
    assert render_script(_plan(site))                       # the benign plan renders
    plans = {f"plan.{f}": _plan(site, **{f: value}) for f in
             ("job_name", "run_dir", "submit_dir", "python", "walltime", "queue", "account",
              "local_mpirun")}
    for field, changed in _site_changes(site, value):
        plans[field] = _plan(changed)
    for field, plan in plans.items():
        with pytest.raises(ConfigError) as e:
            render_script(plan)
        assert str(e.value).startswith(f"job script: {field}"), (field, str(e.value))
        assert "nothing was written" in str(e.value)
        if plan.site.gpu_affinity.mode == "wrapper":      # polaris: the wrapper refuses it too
            with pytest.raises(ConfigError) as e:
                render_affinity_wrapper(plan)
            assert str(e.value).startswith(f"job script: {field}"), (field, str(e.value))


@pytest.mark.parametrize("launcher", ["srun $(touch /tmp/PWNED)", "srun `id`", "srun; id", "srun )",
                                      "srun #", "srun \\", "srun 'open", "srun \"$(id)\"",
                                      "srun $'a\\'b'c'"])
def test_render_refuses_a_launcher_that_is_not_plain_shell_words(launcher):
    site = dataclasses.replace(_full_site("slurm"), launcher=launcher)
    site.name = "perlmutter"
    with pytest.raises(ConfigError) as e:
        render_script(_plan(site))
    assert str(e.value).startswith("job script: site.launcher") and "plain shell words" in str(e.value)


def test_render_refuses_a_local_rank_variable_that_is_not_a_name():
    site = _full_site("pbs")
    site = dataclasses.replace(site, gpu_affinity=dataclasses.replace(
        site.gpu_affinity, local_rank_var="X:-$(touch /tmp/PWNED)}"))
    site.name = "polaris"
    for render in (render_script, render_affinity_wrapper):
        with pytest.raises(ConfigError) as e:
            render(_plan(site))
        assert str(e.value).startswith("job script: site.gpu_affinity.local_rank_var")
