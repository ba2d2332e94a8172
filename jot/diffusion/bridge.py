"""Schrodinger-bridge pieces of the Latent Schrodinger Bridge (LSB) translator, pure JAX.

The bridge between a source sample ``x0`` and a target sample ``x1`` (independent coupling)
has the marginal

    x_t = (1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) eps,        eps ~ N(0, I),  t in [0, 1],

and the probability-flow velocity of its marginals is the conditional expectation of
``d x_t / dt`` given ``x_t``:

    v(t, x) = sigma (1 - 2t) / (2 sqrt(t (1 - t))) eps_hat + x1_hat - x0_hat

with ``eps_hat, x0_hat, x1_hat`` the predictions of ``eps, x0, x1`` from ``x_t`` (LSB,
Proposition 1). Integrating it from ``t0`` to 1 carries the ``t0`` marginal to the target
distribution.

``sigma`` here is the standard deviation scale of the bridge noise, the reference code's
``--tau`` (which is the square root of the paper's ``tau``); LSB's default is 2.3.

SNR matching lets one VP diffusion model (``jot.diffusion.schedules.Schedule``) serve as the
predictor: with ``x0 = x1 = z`` the marginal is ``z + sigma sqrt(t(1-t)) eps``, and
``sqrt(a) x_t`` with ``a(t) = 1 / (1 + sigma^2 t (1 - t))`` is exactly the VP state
``sqrt(a) z + sqrt(1 - a) eps``; the model is queried at the fractional step
``s(t) = alpha_bar^{-1}(a(t))``.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jot.diffusion.schedules import Schedule


def _time(t, x):
    """``t`` (scalar or ``(B,)``) broadcast against the batch ``x``."""
    t = jnp.asarray(t, x.dtype)
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)) if t.ndim else t


def marginal(x0: jax.Array, x1: jax.Array, t, eps: jax.Array, *, sigma: float) -> jax.Array:
    """``x_t = (1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) eps`` (``t`` scalar or per example)."""
    t = _time(t, x0)
    return (1.0 - t) * x0 + t * x1 + sigma * jnp.sqrt(t * (1.0 - t)) * eps


def sb_velocity(t, eps_hat: jax.Array, x0_hat: jax.Array, x1_hat: jax.Array, *, sigma: float) -> jax.Array:
    """``sigma (1 - 2t) / (2 sqrt(t (1 - t))) eps_hat + x1_hat - x0_hat`` for ``t`` in (0, 1)."""
    t = _time(t, eps_hat)
    return sigma * (1.0 - 2.0 * t) / (2.0 * jnp.sqrt(t * (1.0 - t))) * eps_hat + x1_hat - x0_hat


def snr_matched_alpha_bar(t, *, sigma: float) -> jax.Array:
    """``a(t) = 1 / (1 + sigma^2 t (1 - t))``: the ``alpha_bar`` whose VP state is ``sqrt(a) x_t``."""
    t = jnp.asarray(t, jnp.float32)
    return 1.0 / (1.0 + sigma**2 * t * (1.0 - t))


def snr_matched_step(schedule: Schedule, t, *, sigma: float) -> jax.Array:
    """The fractional step ``s(t) = alpha_bar^{-1}(a(t))`` of ``schedule`` (clamped to its range)."""
    return schedule.step_from_alpha_bar(snr_matched_alpha_bar(t, sigma=sigma))


def euler(velocity: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, *, t0: float, nfe: int) -> jax.Array:
    """Integrates ``dx/dt = velocity(t, x)`` from ``t0`` to 1 on ``linspace(t0, 1, nfe)``: ``nfe - 1``
    Euler steps, one ``velocity`` call each (never at ``t = 1``), as one ``lax.scan``."""
    if not isinstance(nfe, int) or nfe < 2:
        raise ValueError(f"nfe={nfe!r}: the Euler grid linspace(t0, 1, nfe) needs an integer nfe >= 2.")
    if not 0.0 < t0 < 1.0:
        raise ValueError(f"t0={t0!r}: the bridge starts inside (0, 1), e.g. t0=0.2.")
    times = jnp.linspace(t0, 1.0, nfe)

    def step(x, k):
        t, t_next = times[k], times[k + 1]
        return x + (t_next - t) * velocity(t, x), None

    x, _ = jax.lax.scan(step, x, jnp.arange(nfe - 1))
    return x
