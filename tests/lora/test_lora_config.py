"""The lora, pretrain and scenario.classes keys: valid jobs load, mistakes get the project's
one-paragraph error (file, key, expected, found), and the class subset is what tasks use."""

import copy

import numpy as np
import pytest

from hpccl.config import ScenarioConfig, job_from_dict, load_job
from hpccl.data.h5format import DatasetFile
from hpccl.continual.scenario import ClassIncremental
from hpccl.core.errors import ConfigError

from helpers import ROOT

VIT = {"name": "x", "data": {"builtin": "digits"}, "learner": "lorac",
       "model": {"kind": "vit", "patch_size": 2, "width": 16, "depth": 1, "heads": 2},
       "scenario": {"classes": [0, 2, 4, 5, 7, 9], "num_tasks": 3}}


def load(raw, overrides=()):
    return job_from_dict(copy.deepcopy(raw), source="job.yaml", overrides=overrides)


def test_shipped_lorac_jobs_and_baseline_overrides_load():
    cfg = load_job(f"{ROOT}/jobs/lorac_digits.yaml")
    assert cfg.learner.kind == "lorac" and cfg.scenario.classes == [0, 2, 4, 5, 7, 9]
    assert cfg.model.options["pretrained"] and cfg.lora.rank == 4
    for sets in (["learner=finetune"], ["lora.shared=true"], ["lora.ipc_fraction=0"],
                 ["lora.ortho_weight=0"], ["learner=rehearsal"]):
        load_job(f"{ROOT}/jobs/lorac_digits.yaml", sets)
    cfg = load_job(f"{ROOT}/jobs/lorac_cifar100.yaml")
    assert cfg.model.options.get("preset") == "base" and cfg.scenario.num_tasks == 10


@pytest.mark.parametrize("overrides, fragments", [
    (["lora.rank=0"], ["job.yaml", "key 'lora.rank'", "an integer >= 1", "found 0"]),
    (["lora.ipc_fraction=1.5"], ["key 'lora.ipc_fraction'", "[0, 1)", "1.5"]),
    (["lora.ortho_weight=-1"], ["key 'lora.ortho_weight'", ">= 0", "-1"]),
    (["lora.ipc_beta=1"], ["key 'lora.ipc_beta'", "[0, 1)"]),
    (["lora.matrices=[q, qkv]"], ["key 'lora.matrices'", "q, k, v, proj, fc1, fc2", "found list"]),
    (["lora.shard=true"], ["unknown key 'lora.shard'", "Did you mean 'shared'"]),
    (["lora.alpha=0"], ["key 'lora.alpha'", "> 0 or null"]),
    (["pretrain.classes=[1, 2, 3]"], ["key 'pretrain.classes'", "disjoint from scenario.classes",
                                       "[2] in both"]),
    (["pretrain.epochs=0"], ["key 'pretrain.epochs'", ">= 1 or null", "found 0"]),
    (["pretrain.classes=[]"], ["key 'pretrain.classes'", "non-empty"]),
    (["scenario.classes=[1, 2]"], ["key 'scenario.classes'", "at least num_tasks (3)", "found list"]),
    (["scenario.classes=[1, 1, 2, 3]"], ["key 'scenario.classes'", "distinct"]),
])
def test_errors_name_file_key_expected_and_found(overrides, fragments):
    with pytest.raises(ConfigError) as e:
        load(VIT, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_lora_learners_need_a_vit():
    for learner in ("lorac", "finetune"):
        with pytest.raises(ConfigError) as e:
            load({**VIT, "learner": learner, "model": {"kind": "mlp"}})
        for fragment in ("key 'model.kind'", f"learner '{learner}'", "expected 'vit'", "'mlp'"):
            assert fragment in str(e.value)


def test_class_subset_is_split_into_tasks_and_out_of_range_labels_fail(digits_h5):
    ds = DatasetFile(digits_h5)
    subset = [0, 2, 4, 5, 7, 9]
    for order in ("seeded", "natural"):
        scen = ClassIncremental(ds, ScenarioConfig(num_tasks=3, classes=subset, class_order=order), 0, 0, 1)
        assert sorted(np.concatenate(scen.task_classes).tolist()) == subset
        assert all(len(c) == 2 for c in scen.task_classes)
        for t in range(3):
            assert set(scen.task(t).y.tolist()) == set(scen.task_classes[t].tolist())
        _, y, _ = scen.test_upto(2)
        assert set(y.tolist()) == set(subset)
    # Without a subset, the seeded order is what it always was.
    plain = ClassIncremental(ds, ScenarioConfig(num_tasks=5), 0, 0, 1)
    assert sorted(np.concatenate(plain.task_classes).tolist()) == list(range(10))
    with pytest.raises(ConfigError, match=r"scenario.classes.*0\.\.9.*\[12\]"):
        ClassIncremental(ds, ScenarioConfig(num_tasks=2, classes=[1, 12]), 0, 0, 1)
