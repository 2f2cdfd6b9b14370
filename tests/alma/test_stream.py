import numpy as np
import pytest

from hpccl.alma.stream import MegaBatchStream, Schedule, shard


@pytest.mark.parametrize("n,m", [(100, 10), (103, 7), (5, 5)])
def test_megabatches_partition_training_set(n, m):
    s = MegaBatchStream(n, m, seed=3)
    mbs = [s.megabatch(t) for t in range(m)]
    allidx = np.concatenate(mbs)
    assert sorted(allidx.tolist()) == list(range(n))
    sizes = [len(mb) for mb in mbs]
    assert max(sizes) - min(sizes) <= 1
    # deterministic from the seed, different with another seed
    assert all(np.array_equal(a, b) for a, b in zip(mbs, [MegaBatchStream(n, m, 3).megabatch(t) for t in range(m)]))
    assert not all(np.array_equal(a, b) for a, b in zip(mbs, [MegaBatchStream(n, m, 4).megabatch(t) for t in range(m)]))


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_rank_shards_partition_each_megabatch(ranks):
    s = MegaBatchStream(103, 5, seed=0)
    for t in range(5):
        parts = [s.shard(t, r, ranks) for r in range(ranks)]
        assert sorted(np.concatenate(parts).tolist()) == s.megabatch(t).tolist()
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("m,w,expected", [(6, 1, [0, 1, 2, 3, 4, 5]), (6, 2, [1, 3, 5]), (6, 3, [2, 5]),
                                          (6, 6, [5]), (7, 3, [2, 5, 6])])
def test_waiting_triggers_updates(m, w, expected):
    sched = Schedule(MegaBatchStream(70, m, seed=1), wait=w)
    arrivals = list(sched)
    assert [a.t for a in arrivals if a.update is not None] == expected
    assert sched.update_arrivals() == expected
    # each update trains on exactly the mega-batches since the previous update
    last = -1
    for k, a in enumerate(a for a in arrivals if a.update is not None):
        assert a.update.index == k
        assert a.update.new == list(range(last + 1, a.t + 1))
        assert a.update.past == list(range(0, last + 1))
        want = np.concatenate([sched.stream.megabatch(j) for j in a.update.new])
        assert np.array_equal(a.update.new_indices, want)
        last = a.t
    assert [a.t for a in Schedule(MegaBatchStream(70, 7, 1), wait=3, flush=False) if a.update] == [2, 5]


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_replay_proportion(p):
    s = MegaBatchStream(101, 5, seed=2)
    for a in Schedule(s, wait=1, replay=p):
        u = a.update
        assert set(u.replay_per_megabatch) == set(range(a.t))
        for j, drawn in u.replay_per_megabatch.items():
            assert len(drawn) == round(p * len(s.megabatch(j)))
            assert len(set(drawn.tolist())) == len(drawn)              # without replacement
            assert set(drawn.tolist()) <= set(s.megabatch(j).tolist())  # from that mega-batch
        assert len(u.indices) == len(s.megabatch(a.t)) + sum(round(p * len(s.megabatch(j))) for j in range(a.t))
        if p == 1.0:
            assert sorted(u.indices.tolist()) == sorted(np.concatenate([s.megabatch(j) for j in range(a.t + 1)]).tolist())


def test_update_split_and_local_shards():
    s = MegaBatchStream(60, 3, seed=0)
    u = list(Schedule(s, wait=1, replay=0.5))[2].update
    tr, va = u.split(0.2, seed=0)
    assert sorted(np.concatenate([tr, va]).tolist()) == sorted(u.indices.tolist())
    assert len(va) == round(0.2 * len(u.indices))
    parts = [u.local(r, 3) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == sorted(u.indices.tolist())
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError):
        shard(np.arange(4), 2, 2)
