"""Sharded mini-batch draws are the single-process draws, uniform (or ∝ L_i) over all n."""
import numpy as np
from scipy import stats

from hpccl.erm import ShardSampler

SIZES = [3, 0, 40, 17, 100]  # unequal, one empty shard
N = sum(SIZES)
STARTS = np.concatenate([[0], np.cumsum(SIZES)])


def _union(samplers, b):
    """Global indices owned by each simulated rank for one draw, concatenated."""
    parts = [s.draw_with_global(b)[1] for s in samplers]
    return parts


def test_uniform_union_is_the_global_draw():
    b = 11
    ranks = [ShardSampler(SIZES, r, seed=5) for r in range(len(SIZES))]
    single = ShardSampler([N], 0, seed=5)
    counts = np.zeros(N)
    for _ in range(3000):
        parts = _union(ranks, b)
        ref = single.draw_with_global(b)[1]
        # Each global index is owned by exactly one rank: the multiset union is the draw.
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(ref))
        for r, p in enumerate(parts):
            assert np.all((p >= STARTS[r]) & (p < STARTS[r + 1]))
            np.add.at(counts, p, 1)
    # Uniform over all n, whatever the shard sizes (chi-square goodness of fit).
    assert counts.sum() == 3000 * b
    assert stats.chisquare(counts).pvalue > 1e-3
    # Per-rank share proportional to the shard size.
    share = np.array([counts[STARTS[r]:STARTS[r + 1]].sum() for r in range(len(SIZES))])
    np.testing.assert_allclose(share / counts.sum(), np.array(SIZES) / N, atol=0.01)


def test_uniform_local_rows_and_scale():
    s = ShardSampler(SIZES, 2, seed=1)
    batch, glob = s.draw_with_global(50)
    np.testing.assert_array_equal(batch.local_idx, glob - STARTS[2])
    np.testing.assert_allclose(batch.scale, 1.0 / 50)
    assert batch.size == 50


def test_importance_sampling_union_and_frequencies():
    rng = np.random.default_rng(0)
    w = rng.integers(1, 5, size=N).astype(float)  # integer weights: exact cumsums
    shards = [w[STARTS[r]:STARTS[r + 1]] for r in range(len(SIZES))]
    totals = [float(np.cumsum(s)[-1]) if s.size else 0.0 for s in shards]
    ranks = [ShardSampler(SIZES, r, 3, local_weights=shards[r], shard_weight_totals=totals)
             for r in range(len(SIZES))]
    single = ShardSampler([N], 0, 3, local_weights=w, shard_weight_totals=[w.sum()])
    b = 13
    counts = np.zeros(N)
    for _ in range(4000):
        parts = _union(ranks, b)
        ref = single.draw_with_global(b)[1]
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(ref))
        for p in parts:
            np.add.at(counts, p, 1)
    expected = w / w.sum() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # Unbiasing weights 1/(b n q_i) with q_i = w_i / sum(w).
    batch, glob = ranks[4].draw_with_global(b)
    np.testing.assert_allclose(batch.scale, w.sum() / (b * N * w[glob]))


def test_same_seed_same_batches_different_seed_different():
    a = ShardSampler(SIZES, 4, seed=9).draw(20).local_idx
    b = ShardSampler(SIZES, 4, seed=9).draw(20).local_idx
    c = ShardSampler(SIZES, 4, seed=10).draw(20).local_idx
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
