"""A fixed-seed fuzzer over what a user hands hpccl.

It covers:
- job files, --set values and site files;
- dataset files (HDF5: hostile attributes, dtypes and shapes, through a job's data.path);
- run directories whose logs were tampered with, and paths that are not runs;
- the HPCCL_* environment variables hpccl's Python reads;
- the arguments of validate, submit --dry-run, check, analyze, status, sites, model and
  data convert.

Each case runs in this process (``hpccl.cli.main``). It must end with exit 0 or 2: never 1,
never an uncaught exception, never longer than a bound. A dry-run script must pass
``bash -n`` with no value split over two lines (a newline on an ``#SBATCH``/``#PBS`` line
starts a shell command). An exit 2 must be hpccl's error: stderr's last error starts
"hpccl: error:" (or argparse's "hpccl CMD: error:" for a flag) and is one paragraph with no
Python repr in it. When the only bad input was a file (job, site, dataset, run directory),
the error must name that file's path.

Every case the fuzzer has found is kept in tests/fuzz_corpus/cases.json and replayed here,
so a class once closed stays closed whatever the generator draws next. The generator is our
own, on ``random.Random(SEED)``: the same cases on every machine and no extra dependency.
HPCCL_FUZZ_CASES=N runs more cases by hand, and HPCCL_FUZZ_SEED picks another seed. Failing
cases are printed as corpus entries ready to paste."""

from __future__ import annotations

import contextlib
import copy
import glob
import io
import json
import math
import os
import random
import re
import signal
import subprocess
import time
import traceback

import h5py
import numpy as np
import pytest
import yaml

import fuzz_inputs
from helpers import ROOT, write_job
from hpccl.cli import main

SEED = int(os.environ.get("HPCCL_FUZZ_SEED", "28"))
# More by hand, never fewer: a variable left set in an environment cannot thin the suite's run.
CASES = max(1500, int(os.environ.get("HPCCL_FUZZ_CASES", "1500")))
CPU_BOUND_S = 10.0            # per case, CPU time of this process
WALL_BOUND_S = 60             # a case still running after this is a hang (SIGALRM)
CORPUS = os.path.join(ROOT, "tests", "fuzz_corpus", "cases.json")

# A value that, written on a directive line, would start a shell line of its own.
PAYLOAD = "me@x\ntouch /tmp/PWNED #"
HOSTILE = [
    None, True, False, 0, 1, -1, 2, 3, 7, 2 ** 31, 2 ** 63, -2 ** 63, 10 ** 30, 1e20, -1e20, 1e-320,
    0.5, -0.5, float("nan"), float("inf"), float("-inf"), "", " ", "x", "10", "1e3", "true", "none",
    "auto", "a\nb", PAYLOAD, "me@x\rtouch /tmp/PWNED #", "\x00", "\x1b[2J", "\t", "é中文🙂", "\u202egnp",
    "../escaped", "a/b", "/", "$(touch /tmp/PWNED)", "`id`", "'", '"', "{ranks}", "{nosuch}", "%s%n",
    "x" * 3000, [], [1], [None], ["a\nb"], {}, {"a": 1}, {"kind": PAYLOAD}, [[[]]], -0.0,
]
# YAML written as is where a value goes: what a dumper never produces.
RAW = [
    "1:30:00", "2020-01-01", ".nan", "-.inf", "0x1F", "0o17", "1_000", "+12", "~", "yes", "!!binary aGk=",
    "!!python/object/apply:os.system ['true']", "&a [*a]", "[" * 1500 + "]" * 1500,
    "{a: " * 800 + "1" + "}" * 800, '"\\x00"', '"\\u0085x"', '"\\u2028x"', "'unterminated", "*nosuch",
    "\x07bell", "\ufeffx", "[1, 2", "{", "!!set {a, b}", "!!timestamp 2001-12-14", "!!float 'x'",
    "!!int '1'", "!!int ''", "!!bool x", "!!str 3", "!nosuchtag 3", "[1, [2, [3]]]", "{1: 2}", "{null: 1}", "? [1]\n  : 2",
]
GPUS = ["1", "2", "4", "8", "16", "3", "0", "-4", "1,2", "1,2,4,8", "x", "", "1e3", "4.0",
        "99999999999999999999", " 4", "٣", "8\n", "2,,4", "4,2", "nan"]
WALLTIMES = ["00:10:00", "1:30:00", "99:99:99", "-1:00:00", "", "x", "00:00:00", "1000000:00:00",
             "10", "1-00:00:00", PAYLOAD, "00:10:00\n"]
NAMES = ["debug", "regular", "prod", "nosuch", PAYLOAD, "", "a b", "$(id)", "é"]
KINDS = ["validate", "submit", "model", "synthetic", "digits", "dataset", "analyze", "status", "sites", "check"]
WEIGHTS = [28, 28, 8, 5, 1, 14, 6, 4, 3, 3]
# Variables hpccl's own Python reads (the job scripts' ones are bash's: tests/sched).
ENV_NAMES = ["HPCCL_DATA_CACHE", "HPCCL_CACHE", "HPCCL_SITE_DIR", "HPCCL_MPIRUN", "HPCCL_SCAN_LIMIT_GB",
             "HPCCL_REHEARSAL_PROGRESS", "HPCCL_RELAUNCHED", "HPCCL_INJECT_FAILURE", "HPCCL_INJECT_SWAP_KILL",
             "HPCCL_INJECT_KILL_IN_LOG_WRITE"]
ENV_VALUES = ["", " ", "x", "-1", "0", "1", "2", "nan", "inf", "1e309", "1e-300", "1.5", "\x01", "a\nb", "on", "off",
              "٣", "/dev/null", "@OUT@/nosuch", "@JOB@", "x" * 3000, "$(touch /tmp/PWNED)", "0x10", "rank=x",
              "rank=0,task=0,how=x"]
NUMBERS = ["0", "1", "2", "-1", "x", "", "nan", "inf", "1e999", "2.5", "1e3", "0x10", "10" * 15, "-0"]


class CaseTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise CaseTimeout()


# --- the generator --------------------------------------------------------------------------------

def base_jobs():
    with open(os.path.join(ROOT, "jobs", "quickstart.yaml")) as f:
        quick = yaml.safe_load(f)
    digits = yaml.safe_load(open(write_job(os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                        f"fuzz-base-{os.getpid()}.yaml"))))
    return [quick, digits]


def base_sites():
    sites = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "site_configs", "*.yaml"))):
        with open(path) as f:
            sites[os.path.basename(path)[:-5]] = yaml.safe_load(f)
    return sites


def paths(tree, prefix=()):
    """Every (path, value) in a tree of dicts and lists."""
    yield prefix, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from paths(v, prefix + (i,))


def _parent(tree, path):
    for k in path[:-1]:
        tree = tree[k]
    return tree


class Fuzzer:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.jobs, self.sites = base_jobs(), base_sites()

    def value(self):
        r = self.r
        if r.random() < 0.3:
            return ("raw", r.choice(RAW))
        return ("value", copy.deepcopy(r.choice(HOSTILE)))

    def mutate_tree(self, tree, raws):
        """Change 1 to 3 places of ``tree``; raw YAML goes in later where its marker is."""
        r = self.r
        for _ in range(r.randint(1, 3)):
            places = [p for p, _ in paths(tree) if p]
            if not places:
                break
            path = r.choice(places)
            parent, key = _parent(tree, path), path[-1]
            op = r.random()
            if op < 0.55:
                kind, v = self.value()
                if kind == "raw":
                    raws.append(v)
                    v = f"FUZZMARK{len(raws) - 1}X"
                parent[key] = v
            elif op < 0.65 and isinstance(parent, dict):
                del parent[key]
            elif op < 0.75 and isinstance(parent, dict):
                parent[r.choice([f"{key}s", "nosuch", "é", "", "a\nb", 1, None, True])] = r.choice(HOSTILE[:12])
            elif op < 0.85:
                parent[key] = [parent[key]]
            elif op < 0.95:
                # Deeper than Python's recursion limit, as text: the dumper would recurse too.
                depth = r.choice([2, 40, 70, 600, 1200])
                raws.append("{a: " * depth + "1" + "}" * depth if r.random() < 0.5 else
                            "[" * depth + "]" * depth)
                parent[key] = f"FUZZMARK{len(raws) - 1}X"
            else:
                parent[key] = {"kind": parent[key]}
        return tree

    def text(self, tree):
        """The tree as YAML text, mutated there too: duplicate keys, encodings, control characters."""
        r, raws = self.r, []
        tree = self.mutate_tree(copy.deepcopy(tree), raws)
        try:
            text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=1 << 20)
        except Exception:               # e.g. a value safe_dump cannot write: write another
            text = yaml.safe_dump({"name": "x"})
        for i, raw in enumerate(raws):
            text = text.replace(f"FUZZMARK{i}X", raw.replace("\n", "\n" + " " * 0))
        encoding = "utf-8"
        lines = text.split("\n")
        op = r.random()
        if op < 0.15 and len(lines) > 2:          # a key written twice
            i = r.randrange(len(lines) - 1)
            lines.insert(r.randrange(len(lines)), lines[i])
        elif op < 0.2:
            lines.insert(0, "\ufeff" + lines.pop(0))
        elif op < 0.25:
            lines.insert(r.randrange(len(lines)), "name: caf\xe9")
            encoding = r.choice(["latin-1", "utf-16"])
        elif op < 0.3:
            cut = r.randrange(len(text) + 1)
            lines = text[:cut].split("\n")
        elif op < 0.33:
            lines = [ln.replace("  ", "\t", 1) for ln in lines]
        elif op < 0.36:
            lines.insert(r.randrange(len(lines)), r.choice(["\x00", "x: \x01", "---", "...", "- a", "%YAML 9.9"]))
        elif op < 0.38:
            lines = r.choice([[""], ["# nothing"], ["[]"], ["42"], ["~"], ["'x'"]])
        sep = "\r\n" if r.random() < 0.05 else "\n"
        return {"text": sep.join(lines), "encoding": encoding}

    def job_file(self):
        return self.text(self.r.choice(self.jobs))

    @property
    def baseline_file(self):
        with open(os.path.join(ROOT, "benchmarks", "published", "resnet50_a100_amp.yaml")) as f:
            return yaml.safe_load(f)

    def site_file(self):
        return self.text(self.r.choice(list(self.sites.values())))

    def sets(self):
        r, out = self.r, []
        job = r.choice(self.jobs)
        keys = [".".join(map(str, p)) for p, _ in paths(job) if p]
        for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
            key = r.choice(keys + ["nosuch", "", ".", "a..b", "train.lr.x", "a." * 600 + "a", "é",
                                   "train.", ".train", "train.batch_size.0", "model.hidden.5"])
            kind, v = self.value()
            if kind == "value":
                v = r.choice([str(v), json.dumps(v, allow_nan=True) if not isinstance(v, float) or
                              math.isfinite(v) else str(v)])
            form = r.random()
            out += ["--set", key if form < 0.05 else f"={v}" if form < 0.1 else f"{key}={v}"]
        return out

    def case(self):
        r = self.r
        what = r.choices(KINDS, WEIGHTS)[0]
        files, blame = {}, None
        if what == "validate":
            files["@JOB@"] = self.job_file()
            argv = ["validate", "@JOB@"] + self.sets()
            blame = "@JOB@" if len(argv) == 2 else None
        elif what == "submit":
            mutated = set()
            if r.random() < 0.5:
                job = self.job_file()
                mutated.add("@JOB@")
            else:
                job = {"text": yaml.safe_dump(r.choice(self.jobs)), "encoding": "utf-8"}
            files["@JOB@"] = job
            if r.random() < 0.5:
                files["@SITE@.yaml"] = self.site_file()
                site = "@SITE@.yaml"
            else:
                site = r.choice(list(self.sites) + ["nosuch", PAYLOAD, ""])
            clean = r.random() < 0.3     # every flag valid: an error can only be the file's
            # one GPU: every shipped site (slurm-local has one node of 2) admits it
            argv = ["submit", "@JOB@", "--site", site, "--gpus", "1" if clean else r.choice(GPUS),
                    "--dry-run", "--out", "@OUT@"]
            if not clean:
                for flag, choices in (("--walltime", WALLTIMES), ("--queue", NAMES), ("--account", NAMES)):
                    if r.random() < 0.3:
                        argv += [flag, r.choice(choices)]
                if r.random() < 0.3:
                    argv += ["--scaling", r.choice(["weak", "strong"])]
                    for flag in ("--global-batch", "--min-batch-per-gpu"):
                        if r.random() < 0.3:
                            argv += [flag, r.choice(NUMBERS)]
                argv += self.sets()
            elif site == "@SITE@.yaml" and "@JOB@" not in mutated:
                blame = "@SITE@.yaml"
            elif site in self.sites and "@JOB@" in mutated:
                blame = "@JOB@"
        elif what == "model":
            argv = ["model", "@RUN@", "--gpus", r.choice(GPUS), "--scaling", r.choice(["weak", "strong"])]
            if r.random() < 0.5:
                argv += ["--global-batch", r.choice(NUMBERS)]
            if r.random() < 0.5:
                if r.random() < 0.5:
                    files["@SITE@.yaml"] = self.site_file()
                    argv += ["--site", "@SITE@.yaml"]
                else:
                    argv += ["--site", r.choice(list(self.sites) + ["nosuch"])]
            if r.random() < 0.4:
                argv += ["--gpus-per-node", r.choice(NUMBERS + ["64", "65"])]
            if r.random() < 0.3:
                argv += ["--no-rehearsal"]
            if r.random() < 0.3:
                argv += ["--measured", r.choice(["@RUN@", "@OUT@/nosuch", "@COPY@"])]
                if "@COPY@" in argv:
                    files["@COPY@"] = fuzz_inputs.mutate_rundir(r)
            if r.random() < 0.2:
                # instead of the run: a published baseline, mutated like a job file
                argv[1:2] = [] if r.random() < 0.8 else argv[1:2]
                files["@BASE@.yaml"] = self.text(self.baseline_file)
                argv += ["--baseline-file", "@BASE@.yaml"]
                if "--site" not in argv:
                    argv += ["--site", "polaris"]
            if r.random() < 0.1:
                argv += ["--plot", r.choice(["@JOB@", "@OUT@", "@OUT@/nosuch/p.png", "@OUT@/p.txt", "/proc/p.png",
                                             "", PAYLOAD + ".png"])]
            argv += ["--format", r.choice(["text", "json", "csv", "md"])]
        elif what == "synthetic":
            small = ["1", "2", "3"]
            argv = ["data", "convert", "synthetic", "--out", "@OUT@/s.h5", "--num-classes", r.choice(small),
                    "--shape", r.choice(["4", "2,3,3", "1,1,1"]), "--train-per-class", r.choice(small),
                    "--test-per-class", r.choice(small)]
            # one flag at a time gets a hostile value: two valid but large ones would make a large file
            i = r.choice([6, 8, 10, 12, None])
            if i is not None:
                argv[i] = r.choice(NUMBERS if i != 8 else
                                       ["0", "-1", "", "x", ",", "1,,2", "1e3", "3,32", "0,3", "1,1,1,1,1", "1000000,1000,1000"])
            for flag in ("--noise", "--seed"):
                if r.random() < 0.3:
                    argv += [flag, r.choice(NUMBERS)]
        elif what == "digits":
            argv = ["data", "convert", "digits", "--out", "@OUT@/d.h5"]
            for flag in ("--test-fraction", "--seed"):
                if r.random() < 0.5:
                    argv += [flag, r.choice(NUMBERS + ["0.5", "0.999999"])]
        elif what == "dataset":
            argv, files, blame = self.dataset_case()
        elif what in ("analyze", "status"):
            argv, files, blame = self.run_path_case(what)
        elif what == "sites":
            argv = ["sites"]
            if r.random() < 0.7:
                if r.random() < 0.5:
                    files["@SITE@.yaml"] = self.site_file()
                    argv.append("@SITE@.yaml")
                    blame = "@SITE@.yaml"
                else:
                    argv.append(r.choice(list(self.sites) + ["nosuch", "", PAYLOAD, "../x", "/", "@JOB@"]))
        else:
            argv = self.check_case(files)
        case = {"what": what, "argv": argv, "files": files}
        if r.random() < 0.12:
            case["env"] = self.environment(case)
            blame = None
        if blame:
            case["blame"] = blame
        return case

    def environment(self, case):
        """1 or 2 of the HPCCL_* variables hpccl's Python reads, with hostile values."""
        r, env = self.r, {}
        for _ in range(r.choice([1, 1, 2])):
            name = r.choice(ENV_NAMES)
            if name == "HPCCL_SITE_DIR" and r.random() < 0.5:
                # a directory of site files merged over the shipped ones
                site = r.choice(list(self.sites))
                case["files"][f"@SITEDIR@/{site}.yaml"] = self.text(r.choice([{"account": "m1"}, self.sites[site]]))
                env[name] = "@SITEDIR@"
            else:
                values = ENV_VALUES if not name.startswith("HPCCL_INJECT") else \
                    [v for v in ENV_VALUES if not v.isdigit() and v != "٣"]   # a valid one kills the test process
                env[name] = r.choice(values)
        return env

    def dataset_case(self):
        """A small job on a generated dataset file, with hostile attributes, dtypes or shapes."""
        r = self.r
        spec = fuzz_inputs.mutate_dataset(r, fuzz_inputs.base_dataset(r))
        job = {"name": "fz", "seed": 0, "data": {"path": "@DATA@"}, "scenario": {"num_tasks": 1},
               "model": {"kind": "mlp", "hidden": [8]}, "learner": {"kind": "incremental"},
               "train": {"epochs": 1, "batch_size": 1, "lr": 0.1}, "runtime": {"backend": "torch"},
               "log": {"dir": "@OUT@"}}
        if r.random() < 0.3:        # ALMA's mega-batches read the data their own way
            job.update(scenario={"kind": "megabatch", "num_megabatches": 1, "wait": 1}, learner={"kind": "single"},
                       runtime={"backend": "mpi"})
        files = {"@DATA@": {"h5": spec}, "@JOB@": {"text": yaml.safe_dump(job), "encoding": "utf-8"}}
        clean = r.random() < 0.6
        if r.random() < 0.5:
            argv = ["validate", "@JOB@"]
        else:
            argv = ["submit", "@JOB@", "--site", "polaris", "--gpus", "1", "--dry-run", "--out", "@OUT@"]
        if not clean:
            argv += self.sets()
        if r.random() < 0.1:
            argv += ["--set", f"data.path={r.choice(['@OUT@', '@JOB@', '@OUT@/nosuch.h5', '/dev/null', ''])}"]
        return argv, files, "@DATA@" if len(argv) in (2, 9) else None

    def run_path_case(self, what):
        """hpccl analyze / status on paths: the baseline run, a tampered copy of it, files and
        directories that are not runs."""
        r, files = self.r, {}
        argv = [what]
        for _ in range(r.choice([1, 1, 1, 2]) if what == "analyze" else r.choice([0, 1, 1, 2])):
            p = r.choice(["@COPY@"] * 6 + ["@RUN@", "@OUT@/nosuch", "@JOB@", "@OUT@", "/dev/null", "", "/proc/1"])
            if p == "@COPY@":
                files["@COPY@"] = fuzz_inputs.mutate_rundir(r)
            if p == "@JOB@":
                files["@JOB@"] = {"text": "name: x\n", "encoding": "utf-8"}
            if p == "@OUT@":       # a directory holding no run
                files["@OUT@/notes.txt"] = {"text": "x", "encoding": "utf-8"}
            argv.append(p)
        argv += ["--format", r.choice(["text", "json", "csv", "md"])]
        if what == "analyze":
            if r.random() < 0.3:
                argv.append("--compare")
            if r.random() < 0.1:    # only paths that cannot be written: a figure takes a second
                argv += [r.choice(["--plot", "--tensorboard"]), r.choice(["@JOB@", "/proc/x", "/dev/null/x", ""])]
        elif r.random() < 0.1:      # only values refused: a valid one watches until Ctrl-C
            argv += ["--watch", r.choice(["0", "-1", "nan", "inf", "x", "", "-inf"])]
        paths = [a for a in argv[1:] if not a.startswith("-") and a not in ("text", "json", "csv", "md")]
        clean = not any(a in argv for a in ("--plot", "--tensorboard", "--watch"))
        return argv, files, "@COPY@" if clean and paths == ["@COPY@"] else None

    def check_case(self, files):
        r = self.r
        argv = ["check"]
        if r.random() < 0.6:
            files["@JOB@"] = self.job_file() if r.random() < 0.5 else {"text": yaml.safe_dump(r.choice(self.jobs)),
                                                                        "encoding": "utf-8"}
            argv.append("@JOB@")
        if r.random() < 0.4:
            argv += ["-n", r.choice(["0", "-1", "1", "x", "", "1e3", "65537", "99999999999999999999", "nan"])]
        for flag in ("--busy-seconds", "--timeout"):
            if r.random() < 0.4:
                argv += [flag, r.choice(["0", "-1", "0.01", "nan", "inf", "x", "", "1e-300", "-0"])]
        if r.random() < 0.3:
            argv += self.sets()
        return argv


# --- running a case -------------------------------------------------------------------------------

def materialize(case, where, run_dir):
    """Write the case's files under ``where``; returns (argv, environment, out dir, blamed path)."""
    os.makedirs(where, exist_ok=True)
    names = {"@OUT@": os.path.join(where, "out"), "@RUN@": run_dir, "@SITEDIR@": os.path.join(where, "sites"),
             "@SITE@": os.path.join(where, "site"), "@JOB@": os.path.join(where, "job.yaml"),
             "@DATA@": os.path.join(where, "data.h5"), "@COPY@": os.path.join(where, "run"),
             "@BASE@": os.path.join(where, "baseline")}

    def fill(text):
        for k, v in names.items():
            text = text.replace(k, v)
        return text
    for token, spec in case["files"].items():
        path = fill(token)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if "h5" in spec:
            fuzz_inputs.write_dataset_spec(path, spec["h5"])
        elif "rundir" in spec:
            fuzz_inputs.write_rundir_spec(path, run_dir, spec)
        else:
            with open(path, "wb") as f:
                f.write(fill(spec["text"]).encode(spec["encoding"], errors="replace"))
    env = {k: fill(v) for k, v in case.get("env", {}).items()}
    blame = fill(case["blame"]) if case.get("blame") else None
    return [fill(arg) for arg in case["argv"]], env, names["@OUT@"], blame


def _where_raised(exc):
    """The innermost frame in hpccl's own code: one failure, however many inputs reach it."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}hpccl{os.sep}" in f.filename] or frames
    f = ours[-1]
    return f"{os.path.relpath(f.filename, ROOT)}:{f.name}"


def run_case(case, where, run_dir):
    """None when hpccl behaved, else (signature, detail)."""
    argv, env, out_dir, blame = materialize(case, where, run_dir)
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(WALL_BOUND_S)
    cpu = time.process_time()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except CaseTimeout:
        return f"{argv[0]}: hang", f"no end after {WALL_BOUND_S} s"
    except Exception as e:             # noqa: BLE001 -- any escaping exception is the finding
        return (f"{argv[0]}: {type(e).__name__} at {_where_raised(e)}",
                "".join(traceback.format_exception(e))[-2000:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    cpu = time.process_time() - cpu
    text = err.getvalue()
    if rc not in (0, 2):
        return f"{argv[0]}: exit {rc}", text[-2000:]
    if "Traceback" in text:
        return f"{argv[0]}: traceback printed", text[-2000:]
    if rc == 2:
        bad = error_problem(text, blame)
        if bad:
            return f"{argv[0]}: error shape: {bad}", text[-2000:]
    if cpu > CPU_BOUND_S:
        return f"{argv[0]}: slow", f"{cpu:.1f} s CPU"
    if argv[0] == "submit" and rc == 0:
        for script in glob.glob(os.path.join(glob.escape(out_dir), "**", "job.sh"), recursive=True):
            bad = script_problem(script)
            if bad:
                return "submit: unsafe script", bad
    return None


# hpccl's own error line, or argparse's for a flag (its prog is "hpccl SUBCOMMAND ...").
ERROR_LINE = re.compile(r"^hpccl(?: [\w-]+)*: error: ", re.M)
PYTHON_REPR = re.compile(r"\b[A-Z]\w*(?:Error|Exception|Warning)\(|<class '|Traceback \(")


def error_problem(text, blame):
    """None when stderr ends with hpccl's one-paragraph error (naming ``blame``, the path of the
    only bad input, when there is one), else what is wrong with it: the signature's tail."""
    found = list(ERROR_LINE.finditer(text))
    if not found:
        return "no 'hpccl: error:' line"
    message = text[found[-1].start():].rstrip("\n")
    if re.search(r"\n[ \t]*\n", message):
        return "more than one paragraph"
    if PYTHON_REPR.search(message):
        return f"a Python repr ({PYTHON_REPR.search(message).group(0)})"
    if blame and blame not in message:
        # the first words say which message it is, without the case's own values
        head = re.sub(r"'[^']*'|\"[^\"]*\"|/\S+|\d+", "_", message[found[-1].end() - found[-1].start():])[:60]
        return f"does not name the file: {head}"
    return None


def script_problem(script):
    with open(script, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    # A value with a newline split in two: its second half begins a line of its own.
    for i, line in enumerate(lines):
        if "PWNED" in line and "me@x" not in line and "$(touch" not in line:
            return f"{script}:{i + 1}: a value continues on a line of its own: {line!r}"
    r = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    if r.returncode != 0:
        return f"{script}: bash -n: {r.stderr.strip()}"
    return None


# --- the suite -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A 1-rank run directory for `hpccl model`, written with the real log writer."""
    from hpccl.core.logs import H5Log
    run_dir = tmp_path_factory.mktemp("fuzz") / "base"
    os.makedirs(run_dir / "ranks")
    log = H5Log(str(run_dir / "log.h5"), "run", {
        "name": "base", "learner": "rehearsal", "world_size": 1, "backend": "torch",
        "tasks_completed": 1, "train_time_s": 1.0, "sample_shape": "[1, 8, 8]",
        "config_yaml": "learner: {kind: rehearsal}\ntrain: {batch_size: 16}\n"
                       "rehearsal: {representatives: 16, candidates: 8, start_task: 1}\n"})
    log.append("epochs", task=0, epoch=0, loss=1.0, train_accuracy=0.5, lr=0.1, samples=160,
               time_s=1.0, iterations=10)
    log.append("tasks", index=0, train_time_s=1.0, samples=160, iterations=10, average_accuracy=0.8,
               classes="0 1")
    log.put("eval/top1", np.array([[0.9]]))
    log.close("complete")
    rl = H5Log(str(run_dir / "ranks" / "rank00000.h5"), "rank", {"rank": 0, "hostname": "h", "local_rank": 0})
    for k in ("data_load", "rehearsal_wait", "forward_backward", "allreduce_step", "other"):
        rl.put(f"timers/{k}", np.full(10, 0.01))
    rl.put("timers/total", np.full(10, 0.05))
    rl.put("timers/task", np.ones(10, dtype=int))
    rl.close()
    return str(run_dir)


@pytest.fixture
def no_mpi(monkeypatch):
    """``hpccl check`` past its arguments: a stand-in for the MPI probe, which would initialise
    MPI in the test process (3 s, and mpirun for -n > 1); it asserts what the flags let through."""
    from hpccl.continual.rehearsal import check
    from hpccl.core import launch

    def run_check(cfg, busy_s, timeout_s):
        assert math.isfinite(busy_s) and busy_s > 0 and math.isfinite(timeout_s) and timeout_s > 0
        return 0

    def relaunch(np_, argv):
        assert 1 <= np_ <= 65536, np_
        return 0
    monkeypatch.setattr(check, "run_check", run_check)
    monkeypatch.setattr(launch, "relaunch", relaunch)


def load_corpus():
    with open(CORPUS) as f:
        return json.load(f)


def test_the_baseline_gives_a_model(baseline, capsys):
    # The fuzzer's `hpccl model` cases start from this run: it must be one the command reads.
    # (A 1-rank run has no network in it: the links come from a site.)
    assert main(["model", baseline, "--gpus", "1,2", "--site", "polaris", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["predicted"][1]["gpus"] == 2


@pytest.mark.parametrize("entry", load_corpus(), ids=lambda e: e["id"])
def test_corpus_case(entry, tmp_path, baseline, monkeypatch, no_mpi):
    monkeypatch.chdir(tmp_path)
    found = run_case(entry["case"], str(tmp_path / "case"), baseline)
    if entry.get("open"):
        # Not fixed yet: strict, so the day it passes the entry is moved to the closed ones.
        if found is None:
            pytest.fail(f"{entry['id']} passes now: drop its 'open' note")
        pytest.xfail(entry["open"])
    assert found is None, f"{entry['id']} ({entry['found']}): {found[0]}\n{found[1]}"


def test_fuzz(tmp_path, baseline, monkeypatch, no_mpi):
    monkeypatch.chdir(tmp_path)
    # A failure still open in the corpus is expected again; any other is new.
    open_classes = {e["found"] for e in load_corpus() if e.get("open")}
    fuzzer, failures, kinds = Fuzzer(SEED), {}, {}
    for i in range(CASES):
        case = fuzzer.case()
        kinds[case["what"]] = kinds.get(case["what"], 0) + 1
        found = run_case(case, str(tmp_path / f"c{i}"), baseline)
        if found and found[0] not in open_classes:
            failures.setdefault(found[0], (i, case, found[1]))
    assert sum(kinds.values()) == CASES and len(kinds) == len(KINDS), kinds
    print(f"{CASES} cases (seed {SEED}): {kinds}")
    report = [json.dumps({"id": f"seed{SEED}-case{i}", "found": sig, "case": case}, ensure_ascii=True)
              + f"\n    {detail.splitlines()[-1] if detail else ''}"
              for sig, (i, case, detail) in failures.items()]
    assert not failures, f"{len(failures)} distinct failures in {CASES} cases:\n" + "\n".join(report)
