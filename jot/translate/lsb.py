"""LSB (Latent Schrodinger Bridge): translate by the probability-flow ODE of a Schrodinger
bridge whose predictors come from one conditional VP diffusion model.

The bridge between a source ``x0`` and a target ``x1`` has the marginal
``x_t = (1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) eps`` and the velocity
(``jot.diffusion.bridge.sb_velocity``)

    v(t, x) = sigma (1 - 2t) / (2 sqrt(t (1 - t))) eps_hat + w (x1_hat - x0_hat).

One eps-model ``eps_fn(x, s, cond)`` with a source condition and a target condition (the two
domain labels of a pixel UNet, or two prompts of Stable Diffusion) provides the predictors:

- **SNR matching** (``snr_matching=True``): ``a = 1 / (1 + sigma^2 t (1 - t))``, model input
  ``u = sqrt(a) x_t`` at the fractional step ``s = alpha_bar^{-1}(a)``; with
  ``eps_c = eps_fn(u, s, c)`` the predictor of condition ``c`` is Tweedie's
  ``x_hat_c = (u - sqrt(1 - a) eps_c) / sqrt(a)``. Switched off, the model reads ``x_t`` as it is,
  at the step whose noise scale ``sqrt(1 - alpha_bar)`` equals the bridge's
  ``sigma sqrt(t (1 - t))`` (clamped to the schedule): the naive plug-in, matching the noise
  level but not the signal scale, which is the mismatch LSB's Table 2 ablates (the paper does
  not spell out its variant; this is ours).
- the two conditions are **one batched call** per step: ``[u; u]`` with ``[c_src; c_tgt]``.
- **time-dependent noise predictor** (``time_dependent_noise=True``): ``eps_hat = eps_tgt`` for
  ``t > 1/2`` and ``eps_src`` before; switched off, always ``eps_src``.
- **guidance** ``w`` scales the predictor difference ``x1_hat - x0_hat`` (classifier-free
  guidance: with ``eps_w = eps_null + w (eps_c - eps_null)`` the null prediction cancels in the
  difference, so no unconditional call is needed); ``w = 1`` is no guidance.
- **start**: ``x_{t0} = (1 - t0) z + sigma sqrt(t0 (1 - t0)) eps`` from the source sample ``z``
  (the bridge marginal at ``t0`` without the target term).
- **Euler** on ``linspace(t0, 1, n + 1)`` for ``n`` steps, one model call each, as one ``lax.scan``.
- **final denoising step** (``final_step=True``): one more target-condition call at the step of
  the last Euler time ``t_{n-1}`` (the noise level the state still carries), a DDIM move of
  ``x_1`` from there to step ``final_to`` (``-1``: the clean prediction; LSB's reference uses 20
  of 1000), which removes the residual noise.

NFE accounting: ``translate(..., nfe=N)`` makes exactly ``N`` model calls per image: ``N - 1``
Euler steps and the final step, or ``N`` Euler steps without it. Each Euler call evaluates the
model on ``2B`` inputs (both conditions), the final step on ``B`` (target only).

``sigma`` is the bridge's noise scale, the reference code's ``--tau``, i.e. the square root of
the paper's ``tau``. Defaults are the paper's: ``sigma = 2.3``, ``t0 = 0.2``, ``w = 11``, 8 NFE.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from jot.diffusion import bridge, samplers
from jot.diffusion.schedules import Schedule

SIGMA, T0, GUIDANCE, NFE, FINAL_TO = 2.3, 0.2, 11.0, 8, 20.0


def check(*, nfe: Any, sigma: Any, t0: Any, final_step: bool = True) -> None:
    """Raises ValueError naming a bad ``nfe``, ``sigma`` or ``t0``."""
    samplers.check_nfe(nfe, minimum=2 if final_step else 1)
    if not isinstance(t0, (int, float)) or not 0.0 < t0 < 1.0:
        raise ValueError(f"t0={t0!r}: the bridge starts at a time inside (0, 1); LSB uses t0=0.2.")
    if not isinstance(sigma, (int, float)) or sigma <= 0.0:
        raise ValueError(f"sigma={sigma!r}: the bridge noise scale must be > 0; LSB uses sigma=2.3.")


def start_point(z: jax.Array, rng: jax.Array, *, sigma: float = SIGMA, t0: float = T0) -> jax.Array:
    """``(1 - t0) z + sigma sqrt(t0 (1 - t0)) eps`` with ``eps ~ N(0, I)`` from ``rng``."""
    eps = jax.random.normal(rng, z.shape, z.dtype)
    return ((1.0 - t0) * z + sigma * (t0 * (1.0 - t0)) ** 0.5 * eps).astype(z.dtype)


def model_alpha_bar(schedule: Schedule, t, *, sigma: float, snr_matching: bool = True) -> jax.Array:
    """The ``alpha_bar`` the model is queried at for bridge time ``t``: SNR-matched
    ``1 / (1 + sigma^2 t (1 - t))``, or (naive) ``1 - sigma^2 t (1 - t)`` clamped to the schedule."""
    if snr_matching:
        return bridge.snr_matched_alpha_bar(t, sigma=sigma)
    t = jnp.asarray(t, jnp.float32)
    return jnp.clip(1.0 - sigma**2 * t * (1.0 - t), schedule.alpha_bar[-1], 1.0)


def _tile(cond: Any, n: int) -> Any:
    """Each leaf of ``cond`` broadcast to a leading batch of ``n`` (scalars, ``[1, ...]`` or ``[n, ...]``)."""
    def leaf(c):
        c = jnp.asarray(c)
        if c.ndim == 0:
            return jnp.full((n,), c)
        if c.shape[0] not in (1, n):
            raise ValueError(
                f"a condition has leading dimension {c.shape[0]} but the batch has {n} images; pass one "
                f"condition for all (a scalar label or shape [1, ...]) or one per image ([{n}, ...])."
            )
        return jnp.broadcast_to(c, (n,) + c.shape[1:])

    return jax.tree_util.tree_map(leaf, cond)


def _stack(cond_source: Any, cond_target: Any, n: int) -> Any:
    """``[c_src; c_tgt]`` for a ``2n`` batch."""
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), _tile(cond_source, n), _tile(cond_target, n))


def _broadcast(v: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.reshape(v, (1,) * x.ndim).astype(x.dtype)


def _predict(eps_fn, schedule, x, t, cond, *, sigma, snr_matching):
    """``(eps, x_hat, a, s)`` of ``eps_fn`` at bridge state ``x`` (batch of any size) and time ``t``."""
    a = model_alpha_bar(schedule, t, sigma=sigma, snr_matching=snr_matching)
    s = schedule.step_from_alpha_bar(a)
    u = jnp.sqrt(a).astype(x.dtype) * x if snr_matching else x
    eps = eps_fn(u, jnp.full((x.shape[0],), s, jnp.float32), cond).astype(x.dtype)
    x_hat = (u - _broadcast(jnp.sqrt(1.0 - a), x) * eps) / _broadcast(jnp.sqrt(a), x)
    return eps, x_hat, a, s


def solve(
    eps_fn: samplers.EpsFn,
    x: jax.Array,
    *,
    schedule: Schedule,
    cond_source: Any,
    cond_target: Any,
    nfe: int = NFE,
    sigma: float = SIGMA,
    t0: float = T0,
    guidance: float | jax.Array = GUIDANCE,
    snr_matching: bool = True,
    time_dependent_noise: bool = True,
    final_step: bool = True,
    final_to: float = FINAL_TO,
) -> jax.Array:
    """Runs the LSB ODE from the state ``x`` at time ``t0`` (e.g. ``start_point``) and the final
    step, with exactly ``nfe`` model calls (module docstring). Traceable (call it under ``jit``)."""
    n = x.shape[0]
    steps = nfe - 1 if final_step else nfe
    times = jnp.linspace(t0, 1.0, steps + 1)
    both = _stack(cond_source, cond_target, n)

    def euler(x, k):
        t = times[k]
        eps, x_hat, _, _ = _predict(eps_fn, schedule, jnp.concatenate([x, x]), t, both, sigma=sigma,
                                    snr_matching=snr_matching)
        eps_src, eps_tgt = eps[:n], eps[n:]
        eps_hat = jnp.where(t > 0.5, eps_tgt, eps_src) if time_dependent_noise else eps_src
        w = jnp.asarray(guidance, x.dtype)
        v = bridge.sb_velocity(t, eps_hat, w * x_hat[:n], w * x_hat[n:], sigma=sigma)
        return (x + (times[k + 1] - t).astype(x.dtype) * v).astype(x.dtype), None

    x, _ = jax.lax.scan(euler, x, jnp.arange(steps))
    if not final_step:
        return x
    eps, x_hat, _, _ = _predict(eps_fn, schedule, x, times[-2], _tile(cond_target, n), sigma=sigma,
                                snr_matching=snr_matching)
    a_to = schedule.alpha_bar_at(jnp.asarray(final_to, jnp.float32))
    return (_broadcast(jnp.sqrt(a_to), x) * x_hat + _broadcast(jnp.sqrt(1.0 - a_to), x) * eps).astype(x.dtype)


@partial(jax.jit, static_argnames=("nfe", "sigma", "t0", "snr_matching", "time_dependent_noise", "final_step", "clip"))
def _translate(x, rng, eps_fn, schedule, cond_source, cond_target, guidance, final_to, *, nfe, sigma, t0,
               snr_matching, time_dependent_noise, final_step, clip):
    y = solve(eps_fn, start_point(x, rng, sigma=sigma, t0=t0), schedule=schedule, cond_source=cond_source,
              cond_target=cond_target, nfe=nfe, sigma=sigma, t0=t0, guidance=guidance, snr_matching=snr_matching,
              time_dependent_noise=time_dependent_noise, final_step=final_step, final_to=final_to)
    return y if clip is None else jnp.clip(y, -clip, clip)


def translate(
    x: jax.Array,
    rng: jax.Array,
    *,
    nfe: int = NFE,
    schedule: Schedule,
    eps_fn: samplers.EpsFn,
    cond_source: Any,
    cond_target: Any,
    sigma: float = SIGMA,
    t0: float = T0,
    guidance: float = GUIDANCE,
    snr_matching: bool = True,
    time_dependent_noise: bool = True,
    final_step: bool = True,
    final_to: float = FINAL_TO,
    clip: float | None = None,
) -> jax.Array:
    """Translates the source samples ``x`` (pixels or VAE latents) with LSB: ``start_point`` then
    ``solve``, one jitted program, exactly ``nfe`` model calls per image.

    ``eps_fn(x, s, cond)`` is a conditional eps-model (a pytree such as ``jot.models.unet.EpsModel``
    without a fixed label, or ``jot.models.sd.SDEps`` without ``uncond``); ``cond_source`` and
    ``cond_target`` are its conditions (scalars, ``[1, ...]`` or ``[B, ...]`` per leaf), e.g. the
    domain labels 0 and 1 or two prompts' text embeddings ``[1, L, D]``. ``clip`` clips the output
    (pixels in ``[-1, 1]``: 1.0). The switches are the module docstring's.
    """
    check(nfe=nfe, sigma=sigma, t0=t0, final_step=final_step)
    return _translate(
        x, rng, samplers.as_pytree_fn(eps_fn), schedule, cond_source, cond_target, jnp.float32(guidance),
        jnp.float32(final_to), nfe=nfe, sigma=float(sigma), t0=float(t0), snr_matching=bool(snr_matching),
        time_dependent_noise=bool(time_dependent_noise), final_step=bool(final_step), clip=clip,
    )
