"""Proximal maps on known inputs and loss derivatives."""
import numpy as np
import pytest

from hpccl.erm import L1, L2, ElasticNet, Logistic, SmoothedHinge, Squared, soft_threshold


def test_soft_threshold_known_values_and_exact_zeros():
    v = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5, 1e-300])
    out = soft_threshold(v, 1.0)
    np.testing.assert_array_equal(out, [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0])
    zero = np.abs(v) <= 1.0
    # Exact +0.0: no tiny residue, no negative zero.
    assert np.all(out[zero] == 0.0) and not np.signbit(out[zero]).any()


def test_elastic_net_prox_known_values():
    R = ElasticNet(l1=0.5, l2=2.0)
    v = np.array([3.0, -0.2, -4.0])
    tau = 0.5
    # soft threshold by tau*l1 = 0.25, then divide by 1 + tau*l2 = 2.
    np.testing.assert_allclose(R.prox(v, tau), [(3.0 - 0.25) / 2, 0.0, (-4.0 + 0.25) / 2])
    np.testing.assert_allclose(L2(2.0).prox(v, tau), v / 2.0)
    np.testing.assert_allclose(L1(0.5).prox(v, tau), [2.75, 0.0, -3.75])
    assert ElasticNet().prox(v, tau) is not v  # a copy even when R = 0


def test_prox_is_the_minimizer():
    """prox_{tau R}(v) minimizes R(z) + (z - v)^2/(2 tau), checked on a fine 1-D grid."""
    R = ElasticNet(l1=0.3, l2=0.7)
    tau = 0.8
    grid = np.linspace(-5, 5, 200_001)
    for v in (-2.0, -0.1, 0.0, 0.2, 1.7):
        obj = 0.3 * np.abs(grid) + 0.35 * grid**2 + (grid - v) ** 2 / (2 * tau)
        z = R.prox(np.array([v]), tau)[0]
        assert abs(z - grid[np.argmin(obj)]) < 1e-4


def test_min_norm_subgradient():
    R = ElasticNet(l1=1.0, l2=0.5)
    x = np.array([0.0, 0.0, 2.0, -1.0])
    g = np.array([0.5, -3.0, 0.0, 0.0])
    # x=0: shrink g by l1; x!=0: g + l2 x + l1 sign(x).
    np.testing.assert_allclose(R.min_norm_subgradient(x, g), [0.0, -2.0, 2.0, -1.5])


@pytest.mark.parametrize("loss", [Logistic(), Squared(), SmoothedHinge(1.0), SmoothedHinge(0.3)])
def test_loss_derivatives(loss):
    rng = np.random.default_rng(0)
    t = rng.normal(scale=3, size=200)
    y = rng.choice([-1.0, 1.0], size=200)
    h = 1e-6
    fd = (loss.value(t + h, y) - loss.value(t - h, y)) / (2 * h)
    np.testing.assert_allclose(loss.deriv(t, y), fd, atol=1e-6)
    fd2 = (loss.deriv(t + h, y) - loss.deriv(t - h, y)) / (2 * h)
    smooth = np.ones_like(t, dtype=bool)
    if isinstance(loss, SmoothedHinge):  # phi'' jumps at y t = 1 and 1 - delta
        u = 1 - y * t
        smooth = (np.abs(u) > 1e-3) & (np.abs(u - loss.delta) > 1e-3)
    np.testing.assert_allclose(loss.deriv2(t, y)[smooth], fd2[smooth], atol=1e-5)
    # The curvature bound that defines L_i holds.
    assert loss.deriv2(np.linspace(-20, 20, 4001), np.ones(4001)).max() <= loss.curvature + 1e-12


def test_logistic_is_stable_in_the_tails():
    loss = Logistic()
    t = np.array([-1000.0, 1000.0])
    y = np.ones(2)
    np.testing.assert_allclose(loss.value(t, y), [1000.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(loss.deriv(t, y), [-1.0, 0.0], atol=1e-12)
