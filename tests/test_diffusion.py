"""Schedules, samplers and the denoising loss against closed forms and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jot.diffusion import analytic, samplers, schedules
from jot.losses import denoising


def _numpy_alpha_bar(name, n):
    if name == "linear":
        betas = np.linspace(1e-4, 0.02, n)
    elif name == "scaled_linear":
        betas = np.linspace(8.5e-4**0.5, 1.2e-2**0.5, n) ** 2
    else:
        f = lambda t: np.cos((t / n + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
        betas = np.minimum(1 - f(np.arange(1, n + 1)) / f(np.arange(n)), 0.999)
    return np.cumprod(1 - betas)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_schedule_matches_numpy_formula(name):
    sched = schedules.make(name, 1000)
    expected = _numpy_alpha_bar(name, 1000)
    np.testing.assert_allclose(np.asarray(sched.alpha_bar), expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(sched.snr(jnp.arange(1000.0))), expected / (1 - expected), rtol=1e-3)
    if name == "scaled_linear":  # SD's terminal alpha_bar, the source of the prior mismatch.
        assert abs(float(sched.alpha_bar[-1]) - 0.00466) < 2e-4


def test_unknown_schedule_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown noise schedule 'sigmoid'.*'linear', 'scaled_linear', 'cosine'"):
        schedules.make("sigmoid")


def test_fractional_steps_interpolate_and_invert():
    sched = schedules.make("scaled_linear", 1000)
    ab = np.asarray(sched.alpha_bar)
    assert float(sched.alpha_bar_at(-1.0)) == 1.0
    np.testing.assert_allclose(float(sched.alpha_bar_at(17.0)), ab[17], rtol=1e-6)
    np.testing.assert_allclose(float(sched.alpha_bar_at(17.25)), 0.75 * ab[17] + 0.25 * ab[18], rtol=1e-6)
    np.testing.assert_allclose(float(sched.alpha_bar_at(-0.5)), 0.5 * (1 + ab[0]), rtol=1e-6)
    s = jax.random.uniform(jax.random.PRNGKey(0), (2000,), minval=-1.0, maxval=999.0)
    back = jax.jit(lambda s: sched.step_from_alpha_bar(sched.alpha_bar_at(s)))(s)
    np.testing.assert_allclose(np.asarray(back), np.asarray(s), atol=2e-2)
    back_snr = sched.step_from_snr(sched.snr(s[:100]))
    np.testing.assert_allclose(np.asarray(back_snr), np.asarray(s[:100]), atol=5e-2)


M, STD = jnp.array([1.5, -0.5]), 0.6


def test_ddim_invert_then_sample_roundtrip_error_shrinks_with_nfe():
    sched = schedules.make("linear", 1000)
    eps = analytic.GaussianEps(sched, M, jnp.asarray(STD))
    x = M + STD * jax.random.normal(jax.random.PRNGKey(1), (256, 2))
    errors = []
    for nfe in (10, 40, 160):
        z = samplers.ddim_invert(eps, x, schedule=sched, nfe=nfe)
        back = samplers.ddim_sample(eps, z, schedule=sched, nfe=nfe)
        errors.append(float(jnp.sqrt(jnp.mean((back - x) ** 2))))
    # First-order method: 4x the NFE cuts the round-trip error by ~4x (measured 0.25, 0.08, 0.02).
    assert errors[1] < errors[0] / 2.5 and errors[2] < errors[1] / 2.5, errors
    assert errors[2] < 0.03, errors


def test_ddim_and_ddpm_sample_gaussian_moments():
    sched = schedules.make("cosine", 1000)
    eps = analytic.GaussianEps(sched, M, jnp.asarray(STD))
    noise = jax.random.normal(jax.random.PRNGKey(2), (8000, 2))
    x_ddim = samplers.ddim_sample(eps, noise, schedule=sched, nfe=50)
    x_ddpm = samplers.ddpm_sample(eps, noise, jax.random.PRNGKey(3), schedule=sched, nfe=100)
    for x in (x_ddim, x_ddpm):
        np.testing.assert_allclose(np.asarray(x.mean(0)), np.asarray(M), atol=0.03)
        np.testing.assert_allclose(np.asarray(x.std(0)), [STD, STD], atol=0.03)


def test_each_sampler_calls_the_model_exactly_nfe_times():
    sched = schedules.make("linear", 100)
    calls = []

    def eps_fn(x, s, cond):
        jax.debug.callback(lambda: calls.append(1), ordered=True)
        return 0.1 * x

    x = jnp.ones((4, 3))
    for fn, nfe, kwargs in (
        (samplers.ddim_sample, 7, {}),
        (samplers.ddim_invert, 5, {}),
        (lambda *a, **k: samplers.ddpm_sample(a[0], a[1], jax.random.PRNGKey(0), **k), 3, {}),
    ):
        calls.clear()
        jax.block_until_ready(fn(eps_fn, x, schedule=sched, nfe=nfe, **kwargs))
        jax.effects_barrier()
        assert len(calls) == nfe


@pytest.mark.parametrize("nfe", [0, -3, 2.5])
def test_nfe_below_one_is_a_clear_error(nfe):
    sched = schedules.make("linear", 100)
    with pytest.raises(ValueError, match=rf"nfe={nfe}.*integer >= 1"):
        samplers.ddim_sample(lambda x, s, c: x, jnp.zeros((2, 2)), schedule=sched, nfe=nfe)


@pytest.mark.parametrize("snr_gamma", [None, 5.0])
def test_epsilon_loss_matches_numpy(snr_gamma):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    s = np.array([0, 10, 100, 400, 700, 999], np.float32)
    ab = np.asarray(schedules.make("linear").alpha_bar)[s.astype(int)]

    def eps_fn(x, s, cond):
        return 0.7 * x + 1e-3 * s[:, None, None, None]

    per = jax.jit(
        lambda x0, n, s, a: denoising.epsilon_loss(eps_fn, x0, n, s, a, snr_gamma=snr_gamma, reduction="none")
    )(x0, noise, s, ab)
    a = ab[:, None, None, None].astype(np.float64)
    xs = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    ref = ((0.7 * xs + 1e-3 * s[:, None, None, None] - noise) ** 2).reshape(6, -1).mean(1)
    if snr_gamma is not None:
        snr = ab / (1 - ab)
        ref = ref * np.minimum(snr, snr_gamma) / snr
    np.testing.assert_allclose(np.asarray(per), ref, rtol=1e-4)
    mean = denoising.epsilon_loss(eps_fn, x0, noise, s, ab, snr_gamma=snr_gamma)
    np.testing.assert_allclose(float(mean), ref.mean(), rtol=1e-4)


@pytest.mark.parametrize("snr_gamma", [None, 5.0])
def test_velocity_loss_matches_numpy(snr_gamma):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    s = np.array([0, 10, 100, 400, 700, 999], np.float32)
    ab = np.asarray(schedules.make("scaled_linear").alpha_bar)[s.astype(int)]

    def v_fn(x, s, cond):
        return -0.4 * x + cond * 1e-3 * s[:, None, None, None]

    per = jax.jit(lambda x0, n, s, a: denoising.velocity_loss(v_fn, x0, n, s, a, cond=2.0, snr_gamma=snr_gamma,
                                                              reduction="none"))(x0, noise, s, ab)
    a = ab[:, None, None, None].astype(np.float64)
    xs = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    v = np.sqrt(a) * noise - np.sqrt(1 - a) * x0
    ref = ((-0.4 * xs + 2e-3 * s[:, None, None, None] - v) ** 2).reshape(6, -1).mean(1)
    if snr_gamma is not None:
        snr = ab / (1 - ab)
        ref = ref * np.minimum(snr, snr_gamma) / (snr + 1)
    np.testing.assert_allclose(np.asarray(per), ref, rtol=1e-4)
    # The exact velocity has zero loss.
    exact = denoising.velocity_loss(lambda x, s, c: jnp.asarray(v, jnp.float32), x0, noise, s, ab)
    assert float(exact) < 1e-10


def test_epsilon_loss_shape_errors():
    x0 = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match=r"noise has shape \(3, 3\)"):
        denoising.epsilon_loss(lambda x, s, c: x, x0, jnp.zeros((3, 3)), jnp.zeros(3), jnp.full(3, 0.5))
    with pytest.raises(ValueError, match=r"must both have shape \(3,\)"):
        denoising.epsilon_loss(lambda x, s, c: x, x0, x0, jnp.zeros(2), jnp.full(3, 0.5))
    with pytest.raises(ValueError, match=r"the model returned shape \(3, 1\); expected the input shape \(3, 2\)"):
        denoising.epsilon_loss(lambda x, s, c: x[:, :1], x0, x0, jnp.zeros(3), jnp.full(3, 0.5))
