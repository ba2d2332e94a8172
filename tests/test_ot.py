"""jot.ot against POT's exact solver and closed forms."""
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest

from jot.ot import exact, sinkhorn


def test_exact_w2_and_assignment_match_pot():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) * 2 + 3
    w = np.full(200, 1 / 200)
    want = pot.emd2(w, w, pot.dist(x, y))  # squared Euclidean by default
    assert exact.w2_squared(x, y) == pytest.approx(want, rel=1e-9)
    plan = pot.emd(w, w, pot.dist(x, y))
    sigma = exact.assignment(x, y)
    np.testing.assert_array_equal(sigma, plan.argmax(1))
    tx = y[sigma] + 0.1
    assert exact.l2_to_ot(x, tx, y) == pytest.approx(0.02, rel=1e-9)


def test_exact_rejects_unequal_sizes_and_nan():
    with pytest.raises(ValueError, match="same size"):
        exact.w2_squared(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        exact.w2_squared(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_entropic_map_recovers_gaussian_ot_map():
    # N(0, I) -> N(m, 4 I): the OT map is x -> m + 2 x.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1500, 2)).astype(np.float32)
    y = (rng.normal(size=(1500, 2)) * 2 + np.array([3.0, -1.0])).astype(np.float32)
    m = sinkhorn.entropic_map(jnp.asarray(x), jnp.asarray(y), epsilon=0.01)
    z = rng.normal(size=(200, 2)).astype(np.float32) * 0.8
    err = np.mean(np.sum((np.asarray(m(jnp.asarray(z))) - (np.array([3.0, -1.0]) + 2 * z)) ** 2, -1))
    assert err < 0.1


def test_sinkhorn_coupling_has_uniform_marginals_and_approaches_exact_cost():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(100, 2)).astype(np.float32), (rng.normal(size=(100, 2)) + 1).astype(np.float32)
    p = np.asarray(sinkhorn.coupling(jnp.asarray(x), jnp.asarray(y), epsilon=1e-2, threshold=1e-5))
    np.testing.assert_allclose(p.sum(1), 1 / 100, atol=1e-4)
    np.testing.assert_allclose(p.sum(0), 1 / 100, atol=1e-4)
    approx = float(sinkhorn.w2_squared(jnp.asarray(x), jnp.asarray(y), epsilon=1e-2, threshold=1e-5))
    assert approx == pytest.approx(exact.w2_squared(x, y), rel=0.05)
