"""OT-ALD (papers/ot-ald.txt; ALGORITHMS.md section 6): DDIB with OT-aligned latents.

1. ``Z_A = invert_A(X_A)`` (source training images, source model) and ``Z_B = invert_B(X_B)``
   (target training images, target model), both to the end step ``s_end``;
2. ``M = fit(Z_A -> Z_B)`` (``jot.translate.maps``: entropic map from Sinkhorn potentials by
   default, semi-discrete as an option);
3. ``y = sample_B(M(invert_A(x)))``: the target reverse process starts from the target
   latent distribution instead of the mismatched source latents.

Translation costs the same ``nfe`` as DDIB (``nfe // 2`` inversion + the rest sampling); the map
is a softmax over the fitted target latents. ``latent_w2`` reports the mismatch before and after.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jot.diffusion import samplers
from jot.diffusion.schedules import Schedule
from jot.translate import ddib, maps


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
    method: str = "entropic",
    epsilon: float = 0.01,
    shrinkage: float = 0.1,
    rng: jax.Array | None = None,
) -> tuple[Any, jax.Array, jax.Array]:
    """Steps 1-2: inverts both training sets (``nfe // 2`` calls per image, as at translation
    time) and fits ``M: Z_A -> Z_B``. Returns ``(M, Z_A, Z_B)``."""
    n_inv, _ = ddib.split_nfe(nfe)
    z_a = invert(x_source, eps_fn=eps_source, schedule=schedule, nfe=n_inv, end_step=end_step)
    z_b = invert(x_target, eps_fn=eps_target, schedule=schedule, nfe=n_inv, end_step=end_step)
    return maps.fit(z_a, z_b, method=method, epsilon=epsilon, shrinkage=shrinkage, rng=rng), z_a, z_b


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
    ddib.split_nfe(nfe)
    return ddib._translate(
        x, samplers.as_pytree_fn(eps_source), samplers.as_pytree_fn(eps_target), schedule, end_step,
        samplers.as_pytree_fn(latent_map), nfe=nfe, clip=clip,
    )
