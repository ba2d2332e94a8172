"""jot.losses.dmd: the DMD/RDMD losses against direct numpy formulas, and RDMD with an exact
Gaussian teacher converging to the closed-form minimiser over affine maps (and to the OT map
as lambda -> 0)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from jot import losses
from jot.diffusion import analytic, schedules


def _eps_real(x, s, cond=None):
    return 0.3 * x + 0.001 * s.reshape((-1,) + (1,) * (x.ndim - 1))


def _eps_fake(x, s, cond=None):
    return jnp.tanh(x) - 0.2


def _np_x0(eps, x_s, a):
    a = a.reshape((-1,) + (1,) * (x_s.ndim - 1))
    return (x_s - np.sqrt(1 - a) * eps) / np.sqrt(a)


def _inputs(shape=(5, 3), seed=0):
    r = np.random.default_rng(seed)
    y = r.normal(size=shape).astype(np.float32)
    noise = r.normal(size=shape).astype(np.float32)
    s = r.uniform(10, 900, size=shape[0]).astype(np.float32)
    a = r.uniform(0.05, 0.95, size=shape[0]).astype(np.float32)
    return y, noise, s, a


def _np_direction(y, noise, s, a, *, normalize, weight=None):
    ab = a.reshape((-1,) + (1,) * (y.ndim - 1))
    y_s = np.sqrt(ab) * y + np.sqrt(1 - ab) * noise
    sb = s.reshape(ab.shape)
    x0_r = _np_x0(0.3 * y_s + 0.001 * sb, y_s, a)
    x0_f = _np_x0(np.tanh(y_s) - 0.2, y_s, a)
    g = x0_f - x0_r
    if normalize:
        g = g / np.abs(y - x0_r).reshape(len(y), -1).mean(1).reshape(ab.shape)
    if weight is not None:
        g = g * weight.reshape(ab.shape)
    return g, y_s


@pytest.mark.parametrize("normalize", [True, False])
def test_dmd_direction_matches_numpy(normalize):
    y, noise, s, a = _inputs((4, 3, 2, 1))
    w = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    g, aux = jax.jit(lambda *z: losses.dmd_direction(_eps_real, _eps_fake, *z, weight=w, normalize=normalize))(
        y, noise, s, a)
    g_np, y_s = _np_direction(y, noise, s, a, normalize=normalize, weight=w)
    np.testing.assert_allclose(g, g_np, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(aux["y_s"], y_s, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_generator_loss_gradient_is_the_dmd_direction(reduce):
    y, noise, s, a = _inputs((6, 4))
    g_np, _ = _np_direction(y, noise, s, a, normalize=True)

    def f(y):
        return losses.generator_loss(_eps_real, _eps_fake, y, noise, s, a, reduce=reduce)[0]

    value, grad = jax.jit(jax.value_and_grad(f))(y)
    per = 0.5 * (g_np ** 2).sum(1) if reduce == "sum" else 0.5 * (g_np ** 2).mean(1)
    np.testing.assert_allclose(value, per.mean(), rtol=1e-5)
    scale = len(y) * (1 if reduce == "sum" else y.shape[1])
    np.testing.assert_allclose(grad, g_np / scale, rtol=1e-5, atol=1e-7)


def test_fake_loss_is_denoising_on_detached_outputs():
    y, noise, s, a = _inputs((5, 3))
    ab = a[:, None]
    y_s = np.sqrt(ab) * y + np.sqrt(1 - ab) * noise
    value, grad = jax.value_and_grad(lambda y: losses.fake_loss(_eps_fake, y, noise, s, a)[0])(y)
    np.testing.assert_allclose(value, np.mean((np.tanh(y_s) - 0.2 - noise) ** 2), rtol=1e-5)
    np.testing.assert_array_equal(grad, 0.0)  # the generator gets nothing from the fake model's loss


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_rdmd_loss_value_and_generator_gradient(reduce):
    x, noise, s, a = _inputs((8, 3), seed=3)
    r = np.random.default_rng(4)
    A = r.normal(size=(3, 3)).astype(np.float32) * 0.3 + np.eye(3, dtype=np.float32)
    b = r.normal(size=3).astype(np.float32)
    lam = 0.7

    def f(p):
        return losses.rdmd_loss(lambda u: u @ p["A"].T + p["b"], _eps_real, _eps_fake, x, noise, s, a, lam=lam,
                                reduce=reduce)

    (value, aux), grad = jax.jit(jax.value_and_grad(f, has_aux=True))({"A": A, "b": b})
    y = x @ A.T + b
    g_np, _ = _np_direction(y, noise, s, a, normalize=True)
    red = (lambda v: v.sum(1)) if reduce == "sum" else (lambda v: v.mean(1))
    cost = red((x - y) ** 2).mean()
    np.testing.assert_allclose(aux["cost"], cost, rtol=1e-5)
    np.testing.assert_allclose(value, 0.5 * red(g_np ** 2).mean() + lam * cost, rtol=1e-5)
    # d/dy per example: (g + 2 lam (y - x)) / B (/ d for "mean"), chained through y = A x + b.
    dy = (g_np + 2 * lam * (y - x)) / (len(x) * (1 if reduce == "sum" else x.shape[1]))
    np.testing.assert_allclose(grad["A"], dy.T @ x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad["b"], dy.sum(0), rtol=1e-4, atol=1e-6)


def test_bad_shapes_raise():
    y, noise, s, a = _inputs((4, 2))
    with pytest.raises(ValueError, match="one diffusion step per example"):
        losses.generator_loss(_eps_real, _eps_fake, y, noise, s[:2], a)
    with pytest.raises(ValueError, match="same shape"):
        losses.generator_loss(_eps_real, _eps_fake, y, noise[:, :1], s, a)
    with pytest.raises(ValueError, match="one time weight per example"):
        losses.generator_loss(_eps_real, _eps_fake, y, noise, s, a, weight=np.ones(3))
    with pytest.raises(ValueError, match="lam=-1"):
        losses.rdmd_loss(lambda u: u, _eps_real, _eps_fake, y, noise, s, a, lam=-1.0)


# --- RDMD with an exact Gaussian teacher -----------------------------------------------------
#
# Source N(m1, s1^2 I), target N(m2, s2^2 I) in 2D, generator G(x) = A x + b over all affine
# maps. The fake model is the exact noise predictor of G's pushforward N(A m1 + b, s1^2 A A^T),
# so the only approximations are the Monte Carlo ones. Without normalisation and with time
# weights w(s), the surrogate's expected gradient is that of (module docstring of jot.losses.dmd)
#
#     L(A, b) = mean_k w_k / snr_k KL(N(sqrt(a_k) mu, a_k Sigma + (1 - a_k) I) || N(sqrt(a_k) m2, (a_k s2^2 + 1 - a_k) I))
#               + lam E ||x - A x - b||^2
#
# over the steps s_k, minimised here independently with scipy and closed-form Gaussian KLs.

M1, S1, M2, S2 = np.zeros(2), 1.0, np.array([2.0, 1.0]), 0.5
STEPS = np.arange(20, 1000, 40)  # 25 integer steps of the 1000-step linear schedule
ALPHA = np.cumprod(1.0 - np.linspace(1e-4, 2e-2, 1000))[STEPS]


def _reference(lam: float, weighting: str) -> np.ndarray:
    """``(A.ravel(), b)`` minimising ``L`` above (numpy/scipy only)."""
    w = ALPHA / (1 - ALPHA) if weighting == "kl" else np.ones_like(ALPHA)

    def objective(theta):
        A, b = theta[:4].reshape(2, 2), theta[4:]
        mu, sig = A @ M1 + b, S1 ** 2 * A @ A.T
        total = 0.0
        for a, wk in zip(ALPHA, w):
            s0, v1 = a * sig + (1 - a) * np.eye(2), a * S2 ** 2 + 1 - a
            dm = np.sqrt(a) * (mu - M2)
            kl = 0.5 * (np.trace(s0) / v1 + dm @ dm / v1 - 2 + 2 * np.log(v1) - np.linalg.slogdet(s0)[1])
            total += wk * (1 - a) / a * kl
        cost = np.sum(((np.eye(2) - A) @ M1 - b) ** 2) + S1 ** 2 * np.sum((np.eye(2) - A) ** 2)
        return total / len(ALPHA) + lam * cost

    res = scipy.optimize.minimize(objective, np.r_[1.0, 0, 0, 1, 0, 0], method="BFGS", options={"gtol": 1e-10})
    return res.x


def _gaussian_eps(sched, mean, cov):
    """Exact ``E[eps | x_s]`` for data ``N(mean, cov)``: ``sqrt(1-a) (a cov + (1-a) I)^-1 (x_s - sqrt(a) mean)``."""

    def eps(x, s, cond=None):
        a = sched.alpha_bar_at(s)[:, None, None]
        cov_s = a * cov + (1 - a) * jnp.eye(2)
        r = x - jnp.sqrt(a[:, :, 0]) * mean
        return jnp.sqrt(1 - a[:, :, 0]) * jnp.linalg.solve(cov_s, r[..., None])[..., 0]

    return eps


@jax.jit
def _learn_affine(lam: jax.Array, kl_weights: jax.Array, steps: int = 1000, batch: int = 2048) -> jax.Array:
    """``(A.ravel(), b)`` after Adam on ``rdmd_loss`` (mean of the last quarter of the iterates);
    time weights ``snr(s)`` when ``kl_weights`` else 1."""
    sched = schedules.make("linear", 1000)
    real = analytic.GaussianEps(sched, jnp.asarray(M2, jnp.float32), jnp.float32(S2))
    tx = optax.adam(optax.cosine_decay_schedule(2e-2, steps, 0.01))
    p = {"A": jnp.eye(2), "b": jnp.zeros(2)}
    step_grid = jnp.asarray(STEPS, jnp.float32)
    tail = steps // 4

    def update(carry, i):
        p, opt, total = carry
        kx, kn, ks = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(0), i), 3)
        x = jnp.asarray(M1, jnp.float32) + S1 * jax.random.normal(kx, (batch, 2))
        noise = jax.random.normal(kn, (batch, 2))
        s = step_grid[jax.random.randint(ks, (batch,), 0, len(STEPS))]
        a = sched.alpha_bar_at(s)
        w = jnp.where(kl_weights, a / (1 - a), 1.0)
        A0, b0 = jax.lax.stop_gradient(p["A"]), jax.lax.stop_gradient(p["b"])
        fake = _gaussian_eps(sched, A0 @ jnp.asarray(M1, jnp.float32) + b0, S1 ** 2 * A0 @ A0.T)

        def loss(p):
            G = lambda u: u @ p["A"].T + p["b"]  # noqa: E731
            return losses.rdmd_loss(G, real, fake, x, noise, s, a, lam=lam, weight=w, normalize=False)[0]

        updates, opt = tx.update(jax.grad(loss)(p), opt, p)
        p = optax.apply_updates(p, updates)
        keep = (i >= steps - tail).astype(jnp.float32)  # average the last quarter of the iterates
        total = jax.tree.map(lambda t, v: t + keep * v, total, p)
        return (p, opt, total), None

    zeros = jax.tree.map(jnp.zeros_like, p)
    (_, _, total), _ = jax.lax.scan(update, (p, tx.init(p), zeros), jnp.arange(steps))
    return jnp.concatenate([total["A"].ravel(), total["b"]]) / tail


def test_rdmd_with_exact_gaussian_teacher_reaches_the_closed_form_affine_minimiser():
    ot = np.r_[(S2 / S1) * np.eye(2).ravel(), M2 - (S2 / S1) * M1]  # Monge map x -> m2 + (s2/s1)(x - m1)
    errors_to_ot = []
    for lam, weighting in [(1.0, "kl"), (0.1, "kl"), (0.001, "kl"), (0.1, "one")]:
        ref = _reference(lam, weighting)
        learned = np.asarray(_learn_affine(jnp.float32(lam), jnp.bool_(weighting == "kl")))
        print(f"lam={lam} weighting={weighting}: learned {np.round(learned, 4)} closed form {np.round(ref, 4)}")
        np.testing.assert_allclose(learned, ref, atol=0.012, err_msg=f"lam={lam}, weighting={weighting}")
        # A wrong weight on either term (e.g. the surrogate's factor 0.5 lost) moves the minimiser further.
        assert np.max(np.abs(_reference(lam / 2, weighting) - ref)) > 0.03 or lam < 0.01
        if weighting == "kl":
            errors_to_ot.append(np.max(np.abs(learned - ot)))
    # lambda -> 0: the minimiser tends to the OT map (A = (s2/s1) I, b = m2 - (s2/s1) m1).
    assert errors_to_ot[0] > errors_to_ot[1] > errors_to_ot[2], errors_to_ot
    assert errors_to_ot[2] < 0.01, errors_to_ot
