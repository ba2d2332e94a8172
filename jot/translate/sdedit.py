"""SDEdit (Meng et al. 2022): noise the source image to step ``s0``, denoise with the target model.

    x_{s0} = sqrt(alpha_bar(s0)) x + sqrt(1 - alpha_bar(s0)) z,   z ~ N(0, I)
    y      = DDIM_target(x_{s0}: s0 -> -1)          (``nfe`` model calls)

``s0`` trades faithfulness (small) against realism in the target domain (large).
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax

from jot.diffusion import samplers
from jot.diffusion.schedules import Schedule


@partial(jax.jit, static_argnames=("nfe", "clip"))
def _translate(x, rng, eps_target, schedule, start_step, cond, *, nfe, clip):
    noisy = samplers.add_noise(schedule, x, start_step, jax.random.normal(rng, x.shape, x.dtype))
    return samplers.ddim_sample(eps_target, noisy, schedule=schedule, nfe=nfe, start=start_step, cond=cond, clip=clip)


def translate(
    x: jax.Array,
    rng: jax.Array,
    *,
    nfe: int,
    schedule: Schedule,
    eps_target: samplers.EpsFn,
    start_step: float,
    cond: Any = None,
    clip: float | None = None,
) -> jax.Array:
    """Translates ``x`` with SDEdit from step ``start_step``; exactly ``nfe`` target-model calls
    (``clip`` clips ``x0_hat``, see ``ddim_sample``)."""
    samplers.check_nfe(nfe)
    return _translate(
        x, rng, samplers.as_pytree_fn(eps_target), schedule, start_step, cond, nfe=nfe, clip=clip
    )
