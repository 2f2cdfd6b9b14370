import numpy as np
import pytest

from hpccl.config import ScenarioConfig
from hpccl.data.h5format import DatasetFile
from hpccl.continual.scenario import ClassIncremental
from hpccl.core.errors import ConfigError


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_task_shards_partition_the_task(digits_h5, size):
    cfg = ScenarioConfig(num_tasks=5)
    with DatasetFile(digits_h5) as ds:
        train_y = ds.labels("train")
        scenarios = [ClassIncremental(ds, cfg, seed=3, rank=r, size=size) for r in range(size)]
        classes = [s.task_classes for s in scenarios]
        assert all(np.array_equal(a, b) for c in classes for a, b in zip(c, classes[0]))
        all_classes = np.concatenate(classes[0])
        assert sorted(all_classes) == list(range(10))
        for t in range(5):
            parts = [s.task(t) for s in scenarios]
            sizes = [len(p.y) for p in parts]
            expected = int(np.isin(train_y, classes[0][t]).sum())
            assert sum(sizes) == expected == parts[0].global_size
            assert max(sizes) - min(sizes) <= 1
            for p in parts:
                assert set(p.y.tolist()) <= set(classes[0][t].tolist())
            # disjoint: no duplicate samples across ranks
            flat = np.concatenate([p.x.reshape(len(p.x), -1).numpy() for p in parts])
            assert len(np.unique(flat, axis=0)) == len(np.unique(ds.read("train", np.flatnonzero(
                np.isin(train_y, classes[0][t])))[0].reshape(expected, -1), axis=0))


def test_test_data_covers_seen_tasks(digits_h5):
    with DatasetFile(digits_h5) as ds:
        s = ClassIncremental(ds, ScenarioConfig(num_tasks=5), seed=0, rank=0, size=1)
        x, y, task_ids = s.test_upto(2)
        assert set(task_ids.tolist()) == {0, 1, 2}
        seen = np.concatenate(s.task_classes[:3])
        assert set(y.tolist()) == set(seen.tolist())
        assert len(y) == np.isin(ds.labels("test"), seen).sum()


def test_seed_changes_class_order(digits_h5):
    with DatasetFile(digits_h5) as ds:
        a = ClassIncremental(ds, ScenarioConfig(), seed=0, rank=0, size=1).task_classes
        b = ClassIncremental(ds, ScenarioConfig(), seed=1, rank=0, size=1).task_classes
        c = ClassIncremental(ds, ScenarioConfig(class_order="natural"), seed=0, rank=0, size=1).task_classes
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))
    assert [list(x) for x in c] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_too_many_tasks_is_a_config_error(digits_h5):
    with DatasetFile(digits_h5) as ds, pytest.raises(ConfigError, match="num_tasks"):
        ClassIncremental(ds, ScenarioConfig(num_tasks=11), seed=0, rank=0, size=1)
