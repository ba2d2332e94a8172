"""Prior-mismatch OT (Wang et al., "Solving Prior Distribution Mismatch in Diffusion Models via
Optimal Transport").

The forward terminal law ``q_S = law(sqrt(a_S) x0 + sqrt(1 - a_S) eps)`` (``a_S = alpha_bar[S-1]``)
is not N(0, I) when ``a_S > 0`` (SD's scaled-linear schedule: ``a_S ~ 0.0047``), so the reverse
process starts off its trajectory. Fit an OT map ``M: N(0, I) -> q_S`` from samples
(``jot.ot.maps``; ``maps.DEFAULT_LATENT_MAP`` unless ``method`` says otherwise) and start
the reverse process at ``M(eps)``. ``jot.metrics.transport.held_out`` measures ``M#N(0, I)``
against ``q_S`` on fresh noise and fresh ``q_S`` samples, next to the two-sample floor.

For Gaussian data ``N(m, s^2 I)``, ``q_S = N(sqrt(a_S) m, (a_S s^2 + 1 - a_S) I)`` and the exact
map is ``M(e) = sqrt(a_S) m + sqrt(a_S s^2 + 1 - a_S) e``.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax

from jot.diffusion import samplers
from jot.diffusion.schedules import Schedule
from jot.ot import maps


def terminal_samples(x0: jax.Array, rng: jax.Array, schedule: Schedule) -> jax.Array:
    """Samples of ``q_S``: ``sqrt(a_S) x0 + sqrt(1 - a_S) eps`` at the last step ``S - 1``."""
    return samplers.add_noise(schedule, x0, float(schedule.num_steps - 1), jax.random.normal(rng, x0.shape, x0.dtype))


def fit(
    x0: jax.Array,
    rng: jax.Array,
    *,
    schedule: Schedule,
    num_noise: int | None = None,
    method: str = maps.DEFAULT_LATENT_MAP,
    epsilon: float | None = None,
    neighbours: float = maps.DEFAULT_NEIGHBOURS,
    shrinkage: float | str = "auto",
) -> tuple[Any, jax.Array, jax.Array]:
    """Fits ``M: N(0, I) -> q_S`` (``maps.fit``) from ``num_noise`` (default ``len(x0)``) Gaussian
    draws and the terminal samples of the data ``x0``. Returns ``(M, noise, q_S samples)``."""
    k_q, k_n, k_fit = jax.random.split(rng, 3)
    q = terminal_samples(x0, k_q, schedule)
    noise = jax.random.normal(k_n, ((num_noise or x0.shape[0]),) + x0.shape[1:], x0.dtype)
    latent_map = maps.fit(noise, q, method=method, epsilon=epsilon, neighbours=neighbours, shrinkage=shrinkage,
                          rng=k_fit)
    return latent_map, noise, q


@partial(jax.jit, static_argnames=("nfe", "clip"))
def _sample(noise, eps_fn, schedule, latent_map, cond, *, nfe, clip):
    start = latent_map(noise) if latent_map is not None else noise
    return samplers.ddim_sample(eps_fn, start, schedule=schedule, nfe=nfe, cond=cond, clip=clip)


def sample(
    noise: jax.Array,
    rng: jax.Array | None,
    *,
    nfe: int,
    schedule: Schedule,
    eps_fn: samplers.EpsFn,
    latent_map: Any = None,
    cond: Any = None,
    clip: float | None = None,
) -> jax.Array:
    """DDIM samples from ``M(noise)`` (or from ``noise`` when ``latent_map`` is None); ``nfe`` calls
    (``clip`` as in ``ddim_sample``)."""
    del rng
    samplers.check_nfe(nfe)
    latent_map = None if latent_map is None else samplers.as_pytree_fn(latent_map)
    return _sample(noise, samplers.as_pytree_fn(eps_fn), schedule, latent_map, cond, nfe=nfe, clip=clip)
