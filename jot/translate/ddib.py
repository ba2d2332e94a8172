"""DDIB (Su et al. 2023): DDIM-invert with the source model, DDIM-sample with the target model.

    z = DDIM_invert_source(x: -1 -> s_end)     (nfe // 2 calls)
    y = DDIM_target(z: s_end -> -1)             (nfe - nfe // 2 calls)

With ``s_end = S - 1`` the source and target latents both approximate N(0, I) and the composite
is (for exact models) the composition of the two probability-flow maps; with an early end step
(``alpha_bar(s_end)`` well above 0) the source latents are not distributed like the target
model's latents, which is the mismatch OT-ALD removes (``jot.translate.otald``).
"""
from __future__ import annotations

from functools import partial

import jax

from jot.diffusion import samplers
from jot.diffusion.schedules import Schedule


def split_nfe(nfe: int) -> tuple[int, int]:
    """``(inversion, sampling)`` model calls for a DDIB-style budget of ``nfe`` (>= 2)."""
    samplers.check_nfe(nfe, minimum=2)
    return nfe // 2, nfe - nfe // 2


@partial(jax.jit, static_argnames=("nfe", "clip"))
def _translate(x, eps_source, eps_target, schedule, end_step, latent_map=None, *, nfe, clip):
    """DDIB; ``latent_map`` (OT-ALD) is applied to the inverted latents before sampling."""
    n_inv, n_gen = split_nfe(nfe)
    z = samplers.ddim_invert(eps_source, x, schedule=schedule, nfe=n_inv, end=end_step)
    if latent_map is not None:
        z = latent_map(z)
    return samplers.ddim_sample(eps_target, z, schedule=schedule, nfe=n_gen, start=end_step, clip=clip)


def translate(
    x: jax.Array,
    rng: jax.Array | None,
    *,
    nfe: int,
    schedule: Schedule,
    eps_source: samplers.EpsFn,
    eps_target: samplers.EpsFn,
    end_step: float | None = None,
    clip: float | None = None,
) -> jax.Array:
    """DDIB translation with ``nfe`` model calls in total (``rng`` unused: DDIB is deterministic).

    ``end_step`` defaults to ``S - 1``; ``clip`` clips ``x0_hat`` while sampling (``ddim_sample``).
    """
    del rng
    split_nfe(nfe)
    end = float(schedule.num_steps - 1) if end_step is None else end_step
    return _translate(
        x, samplers.as_pytree_fn(eps_source), samplers.as_pytree_fn(eps_target), schedule, end, nfe=nfe, clip=clip
    )
