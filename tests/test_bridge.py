"""``jot.diffusion.bridge``: LSB's Proposition 1 on Gaussians, SNR matching against direct formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jot.diffusion import bridge, schedules

SIGMA = 2.3
M0, S0, M1, S1 = -1.5, 0.7, 2.0, 1.3


def _gaussian_velocity(t, x):
    """The exact velocity for x0 ~ N(M0, S0^2), x1 ~ N(M1, S1^2) independent: the conditional
    expectations of x0, x1 and eps given x_t are linear in x_t (joint Gaussian)."""
    mean = (1 - t) * M0 + t * M1
    var = (1 - t) ** 2 * S0**2 + t**2 * S1**2 + SIGMA**2 * t * (1 - t)
    r = (x - mean) / var
    x0_hat = M0 + (1 - t) * S0**2 * r
    x1_hat = M1 + t * S1**2 * r
    eps_hat = SIGMA * jnp.sqrt(t * (1 - t)) * r
    return bridge.sb_velocity(t, eps_hat, x0_hat, x1_hat, sigma=SIGMA)


def test_marginal_has_the_bridge_moments():
    k0, k1, ke = jax.random.split(jax.random.PRNGKey(0), 3)
    n, t = 400_000, 0.3
    x0 = M0 + S0 * jax.random.normal(k0, (n, 1))
    x1 = M1 + S1 * jax.random.normal(k1, (n, 1))
    xt = np.asarray(bridge.marginal(x0, x1, t, jax.random.normal(ke, (n, 1)), sigma=SIGMA))
    np.testing.assert_allclose(xt.mean(), (1 - t) * M0 + t * M1, atol=0.01)
    np.testing.assert_allclose(xt.var(), (1 - t) ** 2 * S0**2 + t**2 * S1**2 + SIGMA**2 * t * (1 - t), rtol=0.01)


def test_proposition_1_the_ode_carries_the_t0_marginal_to_the_target():
    """Integrating sb_velocity from t0 = 0.2 to 1 turns samples of the t0 marginal into samples of
    N(M1, S1^2); the error shrinks as the Euler grid refines."""
    t0, n = 0.2, 200_000
    k0, k1, ke = jax.random.split(jax.random.PRNGKey(1), 3)
    x0 = M0 + S0 * jax.random.normal(k0, (n, 1))
    x1 = M1 + S1 * jax.random.normal(k1, (n, 1))
    start = bridge.marginal(x0, x1, t0, jax.random.normal(ke, (n, 1)), sigma=SIGMA)
    errors = {}
    for nfe in (4, 16, 64, 256):
        end = np.asarray(jax.jit(lambda x, nfe=nfe: bridge.euler(_gaussian_velocity, x, t0=t0, nfe=nfe))(start))
        errors[nfe] = abs(end.mean() - M1) + abs(end.std() - S1)
    assert errors[4] > errors[16] > errors[64]
    assert errors[256] < 0.02  # sampling noise of 200k points is ~0.005
    assert errors[4] > 0.05  # the coarse grid is visibly off: the check is not vacuous


def test_snr_matching_turns_the_bridge_into_the_vp_state():
    sched = schedules.make("scaled_linear", 1000)
    t = np.linspace(0.05, 0.95, 19)
    a = np.asarray(bridge.snr_matched_alpha_bar(t, sigma=SIGMA))
    np.testing.assert_allclose(a, 1 / (1 + SIGMA**2 * t * (1 - t)), rtol=1e-6)
    # sqrt(a) * sigma sqrt(t(1-t)) is the VP noise scale sqrt(1 - a)
    np.testing.assert_allclose(np.sqrt(a) * SIGMA * np.sqrt(t * (1 - t)), np.sqrt(1 - a), rtol=1e-5)
    s = np.asarray(bridge.snr_matched_step(sched, t, sigma=SIGMA))
    ab = np.concatenate([[1.0], np.asarray(sched.alpha_bar, np.float64)])  # step -1 has alpha_bar 1
    want = np.interp(a, ab[::-1], np.arange(-1, 1000)[::-1])
    np.testing.assert_allclose(s, want, atol=1e-2)
    np.testing.assert_allclose(np.asarray(sched.alpha_bar_at(s)), a, rtol=1e-4)
    assert np.all(np.diff(s[: len(s) // 2 + 1]) > 0) and np.all(np.diff(s[len(s) // 2:]) < 0)  # noisiest at t = 1/2


def test_euler_makes_nfe_minus_one_calls_and_never_evaluates_t_1():
    calls = []

    def velocity(t, x):
        jax.debug.callback(lambda t: calls.append(float(t)), t)
        return jnp.ones_like(x)

    out = bridge.euler(velocity, jnp.zeros((3,)), t0=0.2, nfe=8)
    jax.effects_barrier()
    np.testing.assert_allclose(np.asarray(out), 0.8, rtol=1e-6)  # dx/dt = 1 over [0.2, 1]
    assert len(calls) == 7 and max(calls) < 1.0
    with pytest.raises(ValueError, match=r"nfe=1"):
        bridge.euler(velocity, jnp.zeros(3), t0=0.2, nfe=1)
    with pytest.raises(ValueError, match=r"t0=0.0"):
        bridge.euler(velocity, jnp.zeros(3), t0=0.0, nfe=4)
