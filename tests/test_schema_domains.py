"""Every numeric key of the job and site schemas states its domain, and every bound of every domain is
enforced with a one-paragraph error: the test walks the schema itself, so a key added
later without a domain, or a domain the loader stopped checking, fails here."""

import dataclasses
import types
import typing

import pytest

from hpccl.config import JobConfig, job_from_dict
from hpccl.core.errors import ConfigError
from hpccl.sched.sites import SiteConfig
from hpccl.core.schema import Loader

BASE = {"name": "x", "data": {"builtin": "digits"}}
SITE = {"scheduler": "slurm", "gpus_per_node": 4, "launcher": "srun",
        "queues": [{"name": "q", "max_nodes": 4, "max_walltime": "01:00:00"}]}


def _numeric(tp) -> set:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return {a for a in args if a in (int, float)}


def walk(cls, prefix=""):
    """(dotted key, field, type) of every field below ``cls``, as users write the keys."""
    hints = typing.get_type_hints(cls)
    shown = {v: k for k, v in getattr(cls, "__aliases__", {}).items()}
    for f in dataclasses.fields(cls):
        if f.name == getattr(cls, "__extra_keys__", None):
            continue
        key = prefix + shown.get(f.name, f.name)
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or [tp]
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(inner[0]):
            yield from walk(inner[0], key + "[0].")          # e.g. a site's queues
        elif dataclasses.is_dataclass(inner[0]):
            yield from walk(inner[0], key + ".")
        else:
            yield key, f, tp


NUMERIC = [(key, f, tp) for key, f, tp in walk(JobConfig) if _numeric(tp)]
SITE_NUMERIC = [(key, f, tp) for key, f, tp in walk(SiteConfig) if _numeric(tp)]


def outside(f, tp):
    """Values just outside each declared bound."""
    d = f.metadata["domain"]
    step = 1 if int in _numeric(tp) else 1e-3
    values = []
    if d.lo is not None:
        values.append(d.lo if d.lo_open else d.lo - step)
    if d.hi is not None:
        values.append(d.hi if d.hi_open else d.hi + step)
    return values


def test_the_walk_finds_the_schema():
    keys = {key for key, _, _ in NUMERIC}
    assert {"seed", "train.lr", "rehearsal.representatives", "runtime.threads_per_rank", "erm.l1",
            "rnn.hidden", "lora.rank", "scenario.num_tasks", "rehearsal.progress_ms"} <= keys
    assert len(keys) > 50
    assert {"gpus_per_node", "queues[0].max_nodes", "slurm.signal_seconds",
            "network.inter_node_bandwidth_gbs"} <= {key for key, _, _ in SITE_NUMERIC}


@pytest.mark.parametrize("key, f, tp", NUMERIC + SITE_NUMERIC, ids=[k for k, _, _ in NUMERIC + SITE_NUMERIC])
def test_every_numeric_key_declares_a_domain(key, f, tp):
    assert "domain" in f.metadata, f"{key}: declare its values with schema.ranged(...)"


CASES = [(key, v) for key, f, tp in NUMERIC if "domain" in f.metadata for v in outside(f, tp)]
CASES += [(key, v) for key, f, tp in NUMERIC if float in _numeric(tp) for v in (".nan", ".inf", "-.inf")]


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_values_outside_the_domain_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError) as e:
        job_from_dict(BASE, "job.yaml", [f"{key}={value}"])
    text = str(e.value)
    assert text.startswith(f"job.yaml (--set {key}={value}): key '{key}': expected ") or \
        text.startswith(f"job.yaml: key '{key}': expected "), text
    assert "\n" not in text


@pytest.mark.parametrize("key, f, tp", [x for x in NUMERIC if "domain" in x[1].metadata],
                         ids=[k for k, f, _ in NUMERIC if "domain" in f.metadata])
def test_defaults_lie_inside_their_domains(key, f, tp):
    if f.default is not None and f.default is not dataclasses.MISSING and not isinstance(f.default, str):
        assert f.default in f.metadata["domain"], key


def _site_with(key, value):
    raw = {**SITE, "queues": [dict(SITE["queues"][0])]}
    node, parts = raw, key.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part == "0" else node.setdefault(part, {})
    node[parts[-1]] = value
    return raw


SITE_CASES = [(key, v) for key, f, tp in SITE_NUMERIC for v in outside(f, tp)]
SITE_CASES += [(key, v) for key, f, tp in SITE_NUMERIC if float in _numeric(tp)
               for v in (float("nan"), float("inf"))]


@pytest.mark.parametrize("key, value", SITE_CASES, ids=[f"{k}={v}" for k, v in SITE_CASES])
def test_site_values_outside_the_domain_are_refused_naming_the_key(key, value):
    Loader("site.yaml").section(SiteConfig, _site_with(key, 1), "")     # the base is valid
    with pytest.raises(ConfigError) as e:
        Loader("site.yaml").section(SiteConfig, _site_with(key, value), "")
    assert str(e.value).startswith(f"site.yaml: key '{key}': expected "), str(e.value)
