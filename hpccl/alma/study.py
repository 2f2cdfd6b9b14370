"""ALMA study files: a base job and named groups of variants, each a mapping of ``--set``
overrides, run once per seed (``scripts/alma_study.py`` runs and tabulates them)::

    job: ../alma_digits.yaml        # relative to the study file
    seeds: [0, 1, 2]
    studies:
      waiting:
        w=1: {scenario.wait: 1}
        w=2: {}                     # the base job itself
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from hpccl.core.errors import ConfigError
from hpccl.core.schema import YamlInputError, load_yaml


@dataclass
class Variant:
    group: str
    name: str
    overrides: dict

    def set_args(self) -> list[str]:
        """``--set KEY=VALUE`` arguments (JSON values: JSON is YAML, as --set reads it)."""
        return [arg for key, value in self.overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]

    def set_items(self) -> list[str]:
        return self.set_args()[1::2]


@dataclass
class Study:
    path: str
    job: str                 # absolute path of the base job file
    seeds: list
    variants: list


def load_study(path: str) -> Study:
    try:
        raw = load_yaml(Path(path).read_bytes())
    except OSError as e:
        raise ConfigError(f"study file {path!r} cannot be read ({e.strerror}).") from None
    except YamlInputError as e:
        raise ConfigError(f"{path}: {e}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or "job" not in raw or not isinstance(raw.get("studies"), dict):
        raise ConfigError(f"{path}: a study file needs 'job' (the base job file, relative to the study "
                          "file) and 'studies' (groups of named variants, each a mapping of --set overrides).")
    job = os.path.join(os.path.dirname(os.path.abspath(path)), raw["job"])
    if not os.path.isfile(job):
        raise ConfigError(f"{path}: key 'job': expected an existing job file, found {raw['job']!r} ({job}).")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
        raise ConfigError(f"{path}: key 'seeds': expected a list of integers, found {seeds!r}.")
    variants = []
    for group, named in raw["studies"].items():
        if not isinstance(named, dict):
            raise ConfigError(f"{path}: key 'studies.{group}': expected a mapping of variant names to "
                              f"--set overrides, found {type(named).__name__}.")
        for name, overrides in named.items():
            if overrides is not None and not isinstance(overrides, dict):
                raise ConfigError(f"{path}: key 'studies.{group}.{name}': expected a mapping of --set "
                                  f"overrides (e.g. {{scenario.wait: 2}}), found {overrides!r}.")
            variants.append(Variant(str(group), str(name), overrides or {}))
    return Study(path, job, seeds, variants)
