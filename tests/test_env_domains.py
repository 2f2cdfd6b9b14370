"""Every environment variable hpccl reads has a domain (hpccl/core/env.py), as every key of the
job schema has: the sources are searched for HPCCL_ names, each must be in the table and read
only through it, and a value outside a domain is refused with the variable named (exit 2)."""

import os
import re
import subprocess
import sys

import pytest

from hpccl.core import env
from hpccl.core.errors import ConfigError

from helpers import ROOT, hpccl_cmd, run_cmd

SOURCES = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(ROOT, "hpccl"))
           for f in files if f.endswith((".py", ".j2", ".sh"))]


def names_in(path):
    with open(path) as f:
        return set(re.findall(r"\bHPCCL_[A-Z_]+\b", f.read()))


def test_every_variable_the_sources_name_is_in_the_table():
    named = set().union(*(names_in(p) for p in SOURCES))
    assert named - set(env.VARIABLES) == set()
    assert len(named) >= 10         # the walk really read the sources


def test_python_reads_variables_only_through_the_table():
    direct = re.compile(r"""(environ|getenv|\benv)\s*(\.get)?\s*[\[(]\s*["']HPCCL_""")
    offenders = [p for p in SOURCES if p.endswith(".py") and not p.endswith(os.path.join("core", "env.py"))
                 and direct.search(open(p).read())]
    assert offenders == []


BAD = [("HPCCL_SCAN_LIMIT_GB", "lots", "a number > 0"), ("HPCCL_SCAN_LIMIT_GB", "-1", "a number > 0"),
       ("HPCCL_SCAN_LIMIT_GB", "inf", "a number > 0"),
       ("HPCCL_REHEARSAL_PROGRESS", "of", "one of 'on', 'off'"),
       ("HPCCL_INJECT_KILL_IN_LOG_WRITE", "3.5", "an integer >= 0"),
       ("HPCCL_DATA_CACHE", "/tmp/a\nb", "a path without control characters"),
       ("HPCCL_RELAUNCHED", "yes", "one of '0', '1'")]


@pytest.mark.parametrize("name, value, expected", BAD)
def test_a_value_outside_a_domain_is_refused_naming_the_variable(name, value, expected):
    with pytest.raises(ConfigError, match=rf"environment variable {name}: expected {re.escape(expected)}"):
        env.read(name, {name: value})


def test_unset_or_empty_means_the_default():
    assert env.read("HPCCL_SCAN_LIMIT_GB", {}) == 4.0
    assert env.read("HPCCL_SCAN_LIMIT_GB", {"HPCCL_SCAN_LIMIT_GB": ""}) == 4.0
    assert env.read("HPCCL_SCAN_LIMIT_GB", {"HPCCL_SCAN_LIMIT_GB": "0.5"}) == 0.5


def test_the_cli_refuses_a_bad_variable_with_exit_2(tmp_path):
    """Through the real command: hpccl validate reads the scan limit when it checks the data."""
    r = run_cmd(hpccl_cmd("validate", os.path.join(ROOT, "jobs", "quickstart.yaml")),
                env={"HPCCL_SCAN_LIMIT_GB": "lots"}, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "environment variable HPCCL_SCAN_LIMIT_GB: expected a number > 0" in r.stderr
    assert "Traceback" not in r.stderr
