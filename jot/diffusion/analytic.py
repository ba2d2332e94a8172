"""Closed-form quantities for Gaussian data, the oracle the sampler and translation tests use.

For ``x0 ~ N(m, std^2 I)`` the forward marginal is ``x_s ~ N(sqrt(a) m, (a std^2 + 1 - a) I)``
(``a = alpha_bar(s)``), and the exact (MMSE) noise predictor ``E[eps | x_s]`` is

    eps*(x_s, s) = sqrt(1 - a) (x_s - sqrt(a) m) / (a std^2 + 1 - a).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jot.diffusion.schedules import Schedule


@flax.struct.dataclass
class GaussianEps:
    """The exact ``eps_fn(x, s, cond)`` for data ``N(mean, std^2 I)`` under ``schedule`` (a pytree)."""

    schedule: Schedule
    mean: jax.Array
    std: jax.Array

    def __call__(self, x: jax.Array, s: jax.Array, cond=None) -> jax.Array:
        a = self.schedule.alpha_bar_at(s).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.sqrt(1.0 - a) * (x - jnp.sqrt(a) * self.mean) / (a * self.std**2 + 1.0 - a)


def gaussian_ot_map(x: jax.Array, m1, s1, m2, s2) -> jax.Array:
    """Monge map between isotropic Gaussians, ``N(m1, s1^2 I) -> N(m2, s2^2 I)``: ``m2 + (s2/s1)(x - m1)``."""
    return m2 + (s2 / s1) * (x - m1)
