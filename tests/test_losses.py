"""jot.losses against numpy: OTM, DIOTM, HJB and R1."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jot import losses

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 3)).astype(np.float32)
Y = (RNG.normal(size=(16, 3)) + 2.0).astype(np.float32)
T_np = lambda x: 1.5 * x + 0.25  # noqa: E731
S_np = lambda y: 0.5 * y - 1.0  # noqa: E731
A = np.array([0.3, -0.2, 0.7], np.float32)


def v_np(z):  # static potential
    return 0.3 * np.sum(z**2, -1) + z @ A


def V_np(t, z):  # time potential
    return (1.0 + t) * (0.3 * np.sum(z**2, -1)) + (t**2) * (z @ A)


def v_jnp(z):
    return 0.3 * jnp.sum(z**2, -1) + z @ A


def V_jnp(t, z):
    return (1.0 + t) * (0.3 * jnp.sum(z**2, -1)) + (t**2) * (z @ A)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_quadratic_cost_matches_numpy(reduce):
    got = losses.quadratic(jnp.asarray(X), jnp.asarray(Y), tau=0.7, reduce=reduce)
    sq = (X - Y) ** 2
    want = 0.7 * (sq.sum(-1) if reduce == "sum" else sq.mean(-1))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert losses.quadratic_scale(0.7, (3,), reduce) * np.sum(sq, -1) == pytest.approx(want, rel=1e-6)


def test_otm_map_and_potential_losses_match_numpy():
    loss, aux = jax.jit(lambda x: losses.map_loss(lambda u: 1.5 * u + 0.25, v_jnp, x, tau=0.2))(X)
    tx = T_np(X)
    want = np.mean(0.2 * np.sum((X - tx) ** 2, -1) - v_np(tx))
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux["cost"], np.mean(0.2 * np.sum((X - tx) ** 2, -1)), rtol=1e-5)

    lv, aux_v = losses.potential_loss(v_jnp, jnp.asarray(tx), jnp.asarray(Y), r1_weight=0.4)
    grad_v = 0.6 * Y + A  # d/dy of v
    r1 = 0.5 * np.mean(np.sum(grad_v**2, -1))  # R1 = (1/2) E ||grad v(y)||^2
    np.testing.assert_allclose(aux_v["r1"], r1, rtol=1e-5)
    np.testing.assert_allclose(lv, np.mean(v_np(tx)) - np.mean(v_np(Y)) + 0.4 * r1, rtol=1e-5)


def test_otm_and_diotm_share_one_r1_definition():
    """A time-independent V: DIOTM's "r1" on z equals OTM's R1 of v = V(t, .) on the same z."""
    z = jnp.asarray(np.concatenate([X, Y]))
    t = jnp.asarray(RNG.uniform(size=16).astype(np.float32))
    _, aux_v = losses.potential_loss(v_jnp, jnp.asarray(X), z, r1_weight=1.0)
    _, aux_V = losses.value_loss(lambda t, u: v_jnp(u), t, jnp.asarray(X), t, jnp.asarray(Y), regularizer="r1")
    np.testing.assert_allclose(aux_V["reg"], aux_v["r1"], rtol=1e-6)
    np.testing.assert_allclose(losses.r1_regularizer(v_jnp, z), 0.5 * np.mean(np.sum((0.6 * np.asarray(z) + A) ** 2, -1)),
                               rtol=1e-5)


def test_potential_loss_stops_gradient_through_transported_points():
    g = jax.grad(lambda tx: losses.potential_loss(v_jnp, tx, jnp.asarray(Y))[0])(jnp.asarray(X))
    np.testing.assert_array_equal(g, 0.0)


def test_diotm_map_losses_match_numpy():
    t = RNG.uniform(size=16).astype(np.float32)
    lt, aux = losses.forward_map_loss(lambda u: 1.5 * u + 0.25, V_jnp, jnp.asarray(X), jnp.asarray(t), tau=0.3)
    tx = T_np(X)
    xt = (1 - t[:, None]) * X + t[:, None] * tx
    want = np.mean(t * 0.3 * np.sum((tx - X) ** 2, -1) - V_np(t, xt))
    np.testing.assert_allclose(lt, want, rtol=1e-5)
    np.testing.assert_allclose(aux["x_t"], xt, rtol=1e-5)

    ls, aux_s = losses.backward_map_loss(lambda u: 0.5 * u - 1.0, V_jnp, jnp.asarray(Y), jnp.asarray(t), tau=0.3)
    sy = S_np(Y)
    yt = t[:, None] * Y + (1 - t[:, None]) * sy
    want = np.mean((1 - t) * 0.3 * np.sum((sy - Y) ** 2, -1) + V_np(t, yt))
    np.testing.assert_allclose(ls, want, rtol=1e-5)
    np.testing.assert_allclose(aux_s["y_t"], yt, rtol=1e-5)


def _hjb_numpy(t, z, k):
    # V = (1 + t) 0.3 |z|^2 + t^2 a.z  =>  d_t V = 0.3 |z|^2 + 2 t a.z,  grad V = 0.6 (1 + t) z + t^2 a
    d_t = 0.3 * np.sum(z**2, -1) + 2 * t * (z @ A)
    g = 0.6 * (1 + t)[:, None] * z + (t**2)[:, None] * A
    return d_t + np.sum(g**2, -1) / (4 * k)


@pytest.mark.parametrize("regularizer", ["hjb", "r1", "otm", "none"])
def test_value_loss_matches_numpy(regularizer):
    tx_, ty_ = RNG.uniform(size=16).astype(np.float32), RNG.uniform(size=16).astype(np.float32)
    x_real, y_real = X + 0.5, Y - 0.25  # the real endpoints, distinct from the interpolants
    got, aux = jax.jit(
        lambda a, b, c, d: losses.value_loss(V_jnp, a, b, c, d, tau=0.3, regularizer=regularizer, weight=0.5,
                                             x=x_real, y=y_real)
    )(tx_, X, ty_, Y)
    base = np.mean(V_np(tx_, X)) - np.mean(V_np(ty_, Y))
    t_all, z_all = np.concatenate([tx_, ty_]), np.concatenate([X, Y])
    if regularizer == "hjb":
        reg = np.mean(_hjb_numpy(t_all, z_all, 0.3) ** 2)
    elif regularizer == "r1":
        g = 0.6 * (1 + t_all)[:, None] * z_all + (t_all**2)[:, None] * A
        reg = 0.5 * np.mean(np.sum(g**2, -1))
    elif regularizer == "otm":  # (1/2) (E ||grad V(1, y)||^2 + E ||grad V(0, x)||^2)
        g1 = 0.6 * 2.0 * y_real + A
        g0 = 0.6 * x_real
        reg = 0.5 * (np.mean(np.sum(g1**2, -1)) + np.mean(np.sum(g0**2, -1)))
    else:
        reg = 0.0
    np.testing.assert_allclose(got, base + 0.5 * reg, rtol=2e-5)


def test_hjb_residual_vanishes_for_translation_value_function():
    # Translation by m under c = k |x - y|^2: V(t, z) = 2 k m.z - k |m|^2 t solves the HJB equation.
    k, m = 0.35, jnp.array([3.0, -1.0, 0.5])
    V = lambda t, z: 2 * k * z @ m - k * jnp.sum(m**2) * t  # noqa: E731
    z, t = jnp.asarray(X), jnp.asarray(RNG.uniform(size=16).astype(np.float32))
    r = jax.jit(lambda t, z: losses.hjb_residual(V, t, z, scale=k))(t, z)
    assert float(jnp.max(jnp.abs(r))) < 1e-5
    # ... and the wrong time slope does not.
    V_bad = lambda t, z: 2 * k * z @ m + k * jnp.sum(m**2) * t  # noqa: E731
    r_bad = losses.hjb_residual(V_bad, t, z, scale=k)
    np.testing.assert_allclose(r_bad, 2 * k * float(jnp.sum(m**2)), rtol=1e-5)


def test_hjb_residual_matches_numpy_and_uses_mean_cost_scale():
    t = RNG.uniform(size=16).astype(np.float32)
    got = losses.hjb_residual(V_jnp, jnp.asarray(t), jnp.asarray(X), scale=0.3)
    np.testing.assert_allclose(got, _hjb_numpy(t, X, 0.3), rtol=1e-5)
    # reduce="mean" divides tau by the number of coordinates.
    assert losses.quadratic_scale(0.3, (3,), "mean") == pytest.approx(0.1)
    np.testing.assert_allclose(losses.hjb_penalty(V_jnp, jnp.asarray(t), jnp.asarray(X), scale=0.1, kind="abs"),
                               np.abs(_hjb_numpy(t, X, 0.1)), rtol=1e-5)


def test_loss_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"T\(x\) must have the same shape"):
        losses.map_loss(lambda u: u[:, :2], v_jnp, jnp.asarray(X))
    with pytest.raises(ValueError, match="one scalar per example"):
        losses.map_loss(lambda u: u, lambda z: v_jnp(z)[:, None], jnp.asarray(X))
    with pytest.raises(ValueError, match="t must have shape"):
        losses.forward_map_loss(lambda u: u, V_jnp, jnp.asarray(X), jnp.ones(3))
    with pytest.raises(ValueError, match="leading batch axis"):
        losses.map_loss(lambda u: u, v_jnp, jnp.ones(3))
    with pytest.raises(ValueError, match="regularizer must be"):
        losses.value_loss(V_jnp, jnp.ones(16), jnp.asarray(X), jnp.ones(16), jnp.asarray(Y), regularizer="l2")
    with pytest.raises(ValueError, match="pass x= .source. and y= .target."):
        losses.value_loss(V_jnp, jnp.ones(16), jnp.asarray(X), jnp.ones(16), jnp.asarray(Y), regularizer="otm")
