"""OT-ALD (Wang et al., "OT-ALD: Aligning Latent Distributions with Optimal Transport for
Accelerated Image-to-Image Translation"): DDIB with OT-aligned latents.

1. ``Z_A = invert_A(X_A)`` (source training images, source model) and ``Z_B = invert_B(X_B)``
   (target training images, target model), both to the end step ``s_end``;
2. ``M = fit(Z_A -> Z_B)`` (``jot.ot.maps``; ``maps.DEFAULT_LATENT_MAP`` unless ``method``
   says otherwise);
3. ``y = sample_B(M(invert_A(x)))``: the target reverse process starts from the target
   latent distribution instead of the mismatched source latents.

Translation costs the same ``nfe`` as DDIB (``nfe // 2`` inversion + the rest sampling).
``latent_report`` measures the latent mismatch before and after the map on held-out latents
(``jot.metrics.transport.held_out``).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jot.diffusion import samplers
from jot.diffusion.schedules import Schedule
from jot.metrics import transport
from jot.ot import maps


def invert(
    x: jax.Array, *, eps_fn: samplers.EpsFn, schedule: Schedule, nfe: int, end_step: float, batch_size: int = 256
) -> jax.Array:
    """DDIM latents of ``x`` at ``end_step`` with ``nfe`` calls per image, in batches of ``batch_size``."""
    parts = [
        samplers.ddim_invert(eps_fn, x[i:i + batch_size], schedule=schedule, nfe=nfe, end=end_step)
        for i in range(0, x.shape[0], batch_size)
    ]
    return jnp.concatenate(parts)


def fit(
    x_source: jax.Array,
    x_target: jax.Array,
    *,
    eps_source: samplers.EpsFn,
    eps_target: samplers.EpsFn,
    schedule: Schedule,
    nfe: int,
    end_step: float,
    method: str = maps.DEFAULT_LATENT_MAP,
    epsilon: float | None = None,
    neighbours: float = maps.DEFAULT_NEIGHBOURS,
    shrinkage: float | str = "auto",
    rng: jax.Array | None = None,
) -> tuple[Any, jax.Array, jax.Array]:
    """Steps 1-2: inverts both training sets (``nfe // 2`` calls per image, as at translation
    time) and fits ``M: Z_A -> Z_B`` (``maps.fit``). Returns ``(M, Z_A, Z_B)``."""
    n_inv, _ = samplers.split_nfe(nfe)
    z_a = invert(x_source, eps_fn=eps_source, schedule=schedule, nfe=n_inv, end_step=end_step)
    z_b = invert(x_target, eps_fn=eps_target, schedule=schedule, nfe=n_inv, end_step=end_step)
    latent_map = maps.fit(z_a, z_b, method=method, epsilon=epsilon, neighbours=neighbours, shrinkage=shrinkage,
                          rng=rng)
    return latent_map, z_a, z_b


def latent_report(
    latent_map: Any,
    x_source: jax.Array,
    x_target: jax.Array,
    *,
    eps_source: samplers.EpsFn,
    eps_target: samplers.EpsFn,
    schedule: Schedule,
    nfe: int,
    end_step: float,
    z_target_fit: jax.Array | None = None,
) -> dict[str, float]:
    """Latent mismatch on held-out images (not used to fit ``latent_map``): inverts ``x_source``
    and ``x_target`` as in ``fit`` and returns ``jot.metrics.transport.held_out(M(Z_A'), Z_B',
    source=Z_A', fitted_target=z_target_fit)`` (per-coordinate ``W2^2`` before / after / floor,
    marginal and Bures ``W2^2``, variance ratio, collapse fraction). ``x_source[i]`` and
    ``x_target[i]`` may be twins; ``x_target`` needs at least twice as many images as are compared."""
    n_inv, _ = samplers.split_nfe(nfe)
    z_a = invert(x_source, eps_fn=eps_source, schedule=schedule, nfe=n_inv, end_step=end_step)
    z_b = invert(x_target, eps_fn=eps_target, schedule=schedule, nfe=n_inv, end_step=end_step)
    return transport.held_out(latent_map(z_a), z_b, source=z_a, fitted_target=z_target_fit)


def translate(
    x: jax.Array,
    rng: jax.Array | None,
    *,
    nfe: int,
    schedule: Schedule,
    eps_source: samplers.EpsFn,
    eps_target: samplers.EpsFn,
    latent_map: Any,
    end_step: float,
    clip: float | None = None,
) -> jax.Array:
    """Step 3 with ``nfe`` model calls in total (deterministic; ``rng`` unused; ``clip`` as in DDIB)."""
    del rng
    return samplers.invert_then_sample(
        eps_source, eps_target, x, schedule=schedule, nfe=nfe, end=end_step, latent_map=latent_map, clip=clip
    )
