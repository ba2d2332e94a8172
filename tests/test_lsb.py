"""``jot.translate.lsb``: the LSB ODE against a loop written from the paper's algorithm, its exactness
when the predictors are exact, the model-call count, and its errors."""
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jot.diffusion import analytic, schedules
from jot.diffusion.schedules import Schedule
from jot.translate import lsb

SCHED = schedules.make("scaled_linear", 1000)


@flax.struct.dataclass
class TwoGaussians:
    """Exact eps-model of data N(means[c], stds[c]^2 I) for the integer condition c of each example."""

    schedule: Schedule
    means: jax.Array
    stds: jax.Array

    def __call__(self, x, s, cond):
        m, sd = self.means[cond][:, None], self.stds[cond][:, None]
        a = self.schedule.alpha_bar_at(s)[:, None]
        return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * m) / (a * sd**2 + 1 - a)


MODEL = TwoGaussians(SCHED, jnp.array([-1.0, 2.0]), jnp.array([0.6, 1.2]))


def _np_alpha_bar(s):
    ab = np.concatenate([[1.0], np.asarray(SCHED.alpha_bar, np.float64)])
    return np.interp(s, np.arange(-1, 1000), ab)


def _np_step(a):
    ab = np.concatenate([[1.0], np.asarray(SCHED.alpha_bar, np.float64)])
    return np.interp(a, ab[::-1], np.arange(-1, 1000)[::-1])


def _np_eps(x, s, c):
    m, sd = np.array([-1.0, 2.0])[c], np.array([0.6, 1.2])[c]
    a = _np_alpha_bar(s)
    return np.sqrt(1 - a) * (x - np.sqrt(a) * m) / (a * sd**2 + 1 - a)


def _reference(z, noise, *, nfe, sigma, t0, w, snr, timedep, final, final_to):
    """LSB written as a plain loop, one image condition at a time, from the paper's description."""
    x = (1 - t0) * z + sigma * np.sqrt(t0 * (1 - t0)) * noise
    steps = nfe - 1 if final else nfe
    times = np.linspace(t0, 1, steps + 1)

    def predict(x, t, c):
        if snr:
            a = 1 / (1 + sigma**2 * t * (1 - t))
            u = np.sqrt(a) * x
        else:
            a = max(1 - sigma**2 * t * (1 - t), float(SCHED.alpha_bar[-1]))
            u = x
        eps = _np_eps(u, _np_step(a), c)
        return eps, (u - np.sqrt(1 - a) * eps) / np.sqrt(a)

    calls = 0
    for k in range(steps):
        t = times[k]
        eps0, xh0 = predict(x, t, 0)
        eps1, xh1 = predict(x, t, 1)
        calls += 1
        eps = eps1 if (timedep and t > 0.5) else eps0
        v = sigma * (1 - 2 * t) / (2 * np.sqrt(t * (1 - t))) * eps + w * (xh1 - xh0)
        x = x + (times[k + 1] - t) * v
    if final:
        eps, xh = predict(x, times[-2], 1)
        calls += 1
        a_to = _np_alpha_bar(final_to)
        x = np.sqrt(a_to) * xh + np.sqrt(1 - a_to) * eps
    assert calls == nfe
    return x


@pytest.mark.parametrize(
    "snr,timedep,w,final,final_to",
    [  # the paper's Table 2 rows, top to bottom, and a clean final step
        (True, True, 11.0, True, 20.0),
        (False, True, 11.0, True, 20.0),
        (False, False, 11.0, True, 20.0),
        (False, False, 1.0, True, 20.0),
        (False, False, 1.0, False, 20.0),
        (True, True, 3.0, True, -1.0),
    ],
)
def test_translate_matches_a_loop_written_from_the_algorithm(snr, timedep, w, final, final_to):
    z = -1.0 + 0.6 * np.asarray(jax.random.normal(jax.random.PRNGKey(0), (64, 3)))
    rng = jax.random.PRNGKey(1)
    noise = np.asarray(jax.random.normal(rng, z.shape))  # what start_point draws from rng
    kw = dict(nfe=6, sigma=2.3, t0=0.2)
    out = lsb.translate(jnp.asarray(z, jnp.float32), rng, schedule=SCHED, eps_fn=MODEL, cond_source=0, cond_target=1,
                        guidance=w, snr_matching=snr, time_dependent_noise=timedep, final_step=final,
                        final_to=final_to, **kw)
    want = _reference(z.astype(np.float64), noise, w=w, snr=snr, timedep=timedep, final=final, final_to=final_to, **kw)
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(np.asarray(out), want, atol=2e-4 * scale, rtol=2e-4)


def test_exact_predictors_carry_the_t0_marginal_to_the_data():
    """With one domain (source = target) the bridge is x_t = z + sigma sqrt(t(1-t)) eps and the
    SNR-matched VP model gives the exact E[eps | x_t]: the ODE denoises the t0 marginal into
    N(m, s^2), better as NFE grows. The naive plug-in (no SNR matching) does not."""
    m, sd, sigma, t0, n = 0.7, 0.5, 2.3, 0.2, 100_000
    model = analytic.GaussianEps(SCHED, jnp.float32(m), jnp.float32(sd))
    kz, ke = jax.random.split(jax.random.PRNGKey(2))
    z = m + sd * jax.random.normal(kz, (n, 1))
    x_t0 = z + sigma * np.sqrt(t0 * (1 - t0)) * jax.random.normal(ke, (n, 1))

    def run(nfe, snr=True):
        f = jax.jit(lambda x: lsb.solve(model, x, schedule=SCHED, cond_source=None, cond_target=None, nfe=nfe,
                                        sigma=sigma, t0=t0, guidance=1.0, final_step=False, snr_matching=snr))
        out = np.asarray(f(x_t0))
        return abs(out.mean() - m) + abs(out.std() - sd)

    errors = {nfe: run(nfe) for nfe in (4, 16, 64, 256)}
    assert errors[4] > errors[16] > errors[64]
    assert errors[256] < 0.02
    assert run(256, snr=False) > 5 * errors[256]  # converges, to the wrong law


def test_one_batched_call_per_euler_step_and_one_final_call():
    seen = []

    def counted(x, s, cond):
        jax.debug.callback(lambda b, s0, c: seen.append((int(b), float(s0), tuple(np.asarray(c).tolist()))),
                           jnp.int32(x.shape[0]), s[0], cond)
        return MODEL(x, s, cond)

    z = jnp.zeros((3, 2))
    for nfe, final in ((8, True), (5, False)):
        seen.clear()
        lsb.translate(z, jax.random.PRNGKey(0), nfe=nfe, schedule=SCHED, eps_fn=counted, cond_source=0,
                      cond_target=1, final_step=final).block_until_ready()
        jax.effects_barrier()
        assert len(seen) == nfe  # (the callbacks are unordered: sort them by batch and step)
        euler = sorted(c for c in seen if c[0] == 6)
        last = [c for c in seen if c[0] != 6]
        assert len(euler) == (nfe - 1 if final else nfe) and len(last) == int(final)
        assert all(c == (0, 0, 0, 1, 1, 1) for _, _, c in euler)  # [x; x] with [c_src; c_tgt]
        times = np.linspace(0.2, 1.0, len(euler) + 1)[:-1]
        want = _np_step(1 / (1 + 2.3**2 * times * (1 - times)))
        np.testing.assert_allclose([s for _, s, _ in euler], np.sort(want), atol=0.05)
        if final:
            assert last[0][0] == 3 and last[0][2] == (1, 1, 1)
            np.testing.assert_allclose(last[0][1], want[-1], atol=0.05)  # the last Euler time's step


def test_model_alpha_bar_with_and_without_snr_matching():
    t = np.linspace(0.05, 0.95, 7)
    np.testing.assert_allclose(lsb.model_alpha_bar(SCHED, t, sigma=2.3), 1 / (1 + 2.3**2 * t * (1 - t)), rtol=1e-6)
    naive = np.asarray(lsb.model_alpha_bar(SCHED, t, sigma=0.5, snr_matching=False))
    np.testing.assert_allclose(naive, 1 - 0.25 * t * (1 - t), rtol=1e-6)
    clamped = np.asarray(lsb.model_alpha_bar(SCHED, 0.5, sigma=2.3, snr_matching=False))
    np.testing.assert_allclose(clamped, float(SCHED.alpha_bar[-1]), rtol=1e-6)


def test_bad_arguments_are_clear_errors():
    z, key = jnp.zeros((4, 2)), jax.random.PRNGKey(0)
    kw = dict(schedule=SCHED, eps_fn=MODEL, cond_source=0, cond_target=1)
    with pytest.raises(ValueError, match=r"nfe=1.*integer >= 2"):
        lsb.translate(z, key, nfe=1, **kw)
    lsb.translate(z, key, nfe=1, final_step=False, **kw)  # one Euler step is a valid budget without the final step
    with pytest.raises(ValueError, match=r"t0=1.0"):
        lsb.translate(z, key, t0=1.0, **kw)
    with pytest.raises(ValueError, match=r"sigma=0"):
        lsb.translate(z, key, sigma=0, **kw)
    with pytest.raises(ValueError, match=r"leading dimension 3 but the batch has 4"):
        lsb.translate(z, key, schedule=SCHED, eps_fn=MODEL, cond_source=jnp.zeros(3, jnp.int32), cond_target=1)
