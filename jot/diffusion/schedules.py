"""Variance-preserving (VP) noise schedules.

A VP schedule is the sequence ``alpha_bar[s]`` for integer steps ``s = 0..S-1``; the forward
marginal at step ``s`` is

    x_s = sqrt(alpha_bar[s]) x_0 + sqrt(1 - alpha_bar[s]) eps,   eps ~ N(0, I),

with ``alpha_bar[s] = prod_{i<=s} (1 - beta_i)``. Three families are provided:

- ``linear`` (DDPM): ``beta = linspace(beta_start, beta_end, S)``, default ``1e-4 .. 2e-2``;
- ``scaled_linear`` (Stable Diffusion): ``beta = linspace(sqrt(8.5e-4), sqrt(1.2e-2), S)^2``;
- ``cosine`` (Nichol & Dhariwal 2021): ``alpha_bar(s) = f(s+1) / f(0)`` with
  ``f(t) = cos((t/S + c) / (1 + c) * pi/2)^2``, ``c = 0.008``, betas clipped at 0.999.

Fractional steps (used by the samplers' step grids and by LSB): ``alpha_bar`` is extended
to real ``s in [-1, S-1]`` by linear interpolation between integer steps, with
``alpha_bar(-1) = 1`` prepended (the clean data). That function is strictly decreasing,
so ``step_from_alpha_bar`` inverts it exactly (piecewise-linear inverse).
"""
from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "scaled_linear", "cosine")


@flax.struct.dataclass
class Schedule:
    """A VP schedule as a pytree (pass it to jitted functions as an ordinary argument).

    Attributes:
      betas: ``(S,)`` per-step noise variances ``beta_s``.
      alpha_bar: ``(S,)`` cumulative products ``prod_{i<=s} (1 - beta_i)``, decreasing.
    """

    betas: jax.Array
    alpha_bar: jax.Array

    @property
    def num_steps(self) -> int:
        """``S``, the number of integer steps."""
        return self.alpha_bar.shape[0]

    def _knots(self) -> tuple[jax.Array, jax.Array]:
        """Interpolation knots ``s = -1..S-1`` and ``alpha_bar`` with 1 prepended."""
        steps = jnp.arange(-1, self.num_steps, dtype=jnp.float32)
        values = jnp.concatenate([jnp.ones((1,), self.alpha_bar.dtype), self.alpha_bar])
        return steps, values

    def alpha_bar_at(self, s: jax.Array) -> jax.Array:
        """``alpha_bar`` at (fractional) steps ``s in [-1, S-1]``, linear between integers.

        ``alpha_bar(s) = (1 - w) alpha_bar[floor(s)] + w alpha_bar[floor(s) + 1]``,
        ``w = s - floor(s)``, with ``alpha_bar[-1] = 1``. Values outside are clamped.
        """
        steps, values = self._knots()
        return jnp.interp(jnp.asarray(s, jnp.float32), steps, values)

    def snr(self, s: jax.Array) -> jax.Array:
        """Signal-to-noise ratio ``alpha_bar(s) / (1 - alpha_bar(s))`` at (fractional) steps."""
        a = self.alpha_bar_at(s)
        return a / (1.0 - a)

    def step_from_alpha_bar(self, alpha_bar: jax.Array) -> jax.Array:
        """Inverse of ``alpha_bar_at``: the fractional step ``s`` with ``alpha_bar(s) = a``.

        ``a`` is clamped to ``[alpha_bar[S-1], 1]``; the result lies in ``[-1, S-1]``.
        """
        steps, values = self._knots()
        # jnp.interp needs increasing abscissae; alpha_bar decreases with s.
        return jnp.interp(jnp.asarray(alpha_bar, jnp.float32), values[::-1], steps[::-1])

    def step_from_snr(self, snr: jax.Array) -> jax.Array:
        """Inverse of ``snr``: ``s`` with ``alpha_bar(s) = snr / (1 + snr)``."""
        snr = jnp.asarray(snr, jnp.float32)
        return self.step_from_alpha_bar(snr / (1.0 + snr))


def _betas(name: str, num_steps: int, beta_start: float | None, beta_end: float | None) -> np.ndarray:
    """Per-step betas in float64 for the named family."""
    if name == "linear":
        return np.linspace(beta_start or 1e-4, beta_end or 2e-2, num_steps, dtype=np.float64)
    if name == "scaled_linear":
        lo, hi = beta_start or 8.5e-4, beta_end or 1.2e-2
        return np.linspace(math.sqrt(lo), math.sqrt(hi), num_steps, dtype=np.float64) ** 2
    # cosine
    c = 0.008
    t = np.arange(num_steps + 1, dtype=np.float64)
    f = np.cos((t / num_steps + c) / (1 + c) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], 0.999)


def make(
    name: str,
    num_steps: int = 1000,
    *,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> Schedule:
    """Builds the VP schedule ``name`` (one of ``SCHEDULES``) with ``num_steps`` steps.

    ``beta_start``/``beta_end`` override the family's defaults for ``linear`` and
    ``scaled_linear`` (ignored by ``cosine``).
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"unknown noise schedule {name!r}; expected one of {list(SCHEDULES)}. "
            "Set config.model.schedule (or the `name` argument) to one of these."
        )
    if num_steps < 2:
        raise ValueError(f"num_steps={num_steps}; a schedule needs at least 2 steps.")
    betas = _betas(name, num_steps, beta_start, beta_end)
    alpha_bar = np.cumprod(1.0 - betas)
    return Schedule(betas=jnp.asarray(betas, jnp.float32), alpha_bar=jnp.asarray(alpha_bar, jnp.float32))
