"""DDIB (Su et al. 2023): DDIM-invert with the source model, DDIM-sample with the target model.

    z = DDIM_invert_source(x: -1 -> s_end)     (nfe // 2 calls)
    y = DDIM_target(z: s_end -> -1)             (nfe - nfe // 2 calls)

With ``s_end = S - 1`` the source and target latents both approximate N(0, I) and the composite
is (for exact models) the composition of the two probability-flow maps; with an early end step
(``alpha_bar(s_end)`` well above 0) the source latents are not distributed like the target
model's latents, which is the mismatch OT-ALD removes (``jot.translate.otald``).
"""
from __future__ import annotations

import jax

from jot.diffusion import samplers
from jot.diffusion.schedules import Schedule

split_nfe = samplers.split_nfe


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
    This is ``jot.diffusion.samplers.invert_then_sample`` without a latent map.
    """
    del rng
    return samplers.invert_then_sample(eps_source, eps_target, x, schedule=schedule, nfe=nfe, end=end_step, clip=clip)
