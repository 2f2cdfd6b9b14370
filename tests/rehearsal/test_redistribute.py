"""The plan that deals a checkpointed buffer over another number of ranks (pure function;
the end-to-end resume on 4 -> 2 and 2 -> 4 ranks is tests/test_rescale.py)."""

import numpy as np
import pytest

from hpccl.continual.rehearsal.redistribute import plan


def _counts(p, labels, classes):
    """[new ranks, classes] samples dealt to each new rank."""
    out = np.zeros((len(p.takes), classes), dtype=int)
    for j, take in enumerate(p.takes):
        for f, rows in take.items():
            out[j] += np.bincount(labels[f][rows], minlength=classes)
    return out


@pytest.mark.parametrize("old, new, slots", [(4, 2, 5), (2, 4, 3), (3, 3, 4), (5, 2, 7)])
def test_each_class_keeps_what_fits_in_balanced_blocks(old, new, slots):
    rng = np.random.default_rng(0)
    classes = 6
    labels = [rng.integers(0, classes, size=rng.integers(5, 30)) for _ in range(old)]
    seen = np.array([np.bincount(y, minlength=classes) * 3 for y in labels])
    p = plan(labels, seen, new, slots, np.random.default_rng(1))
    stored = np.bincount(np.concatenate(labels), minlength=classes)
    counts = _counts(p, labels, classes)
    np.testing.assert_array_equal(counts.sum(axis=0), np.minimum(stored, new * slots))
    assert counts.max() <= slots and (counts.max(axis=0) - counts.min(axis=0) <= 1).all()
    assert p.report["stored_before"] == stored.sum()
    assert p.report["dropped"] == stored.sum() - counts.sum()
    # no sample dealt twice
    dealt = [(f, r) for take in p.takes for f, rows in take.items() for r in rows]
    assert len(dealt) == len(set(dealt))
    # Full reservoirs take their share of the stream; others count what they hold.
    full = counts >= slots
    assert (p.seen[~full] == counts[~full]).all() and (p.seen[full] >= slots).all()
    kept = counts.sum(axis=0)
    np.testing.assert_allclose(p.seen[full], (seen.sum(axis=0) * counts / np.maximum(kept, 1))[full], atol=1)


def test_a_class_over_capacity_keeps_a_uniform_subset():
    """4 old ranks x 10 samples of one class into 1 rank x 10 slots: every old sample is kept
    with probability 1/4, whichever rank held it."""
    labels = [np.zeros(10, dtype=int) for _ in range(4)]
    seen = np.full((4, 1), 40)
    kept_from = np.zeros(4)
    for trial in range(400):
        p = plan(labels, seen, 1, 10, np.random.default_rng(trial))
        for f, rows in p.takes[0].items():
            kept_from[f] += len(rows)
    share = kept_from / kept_from.sum()
    assert np.abs(share - 0.25).max() < 0.03
