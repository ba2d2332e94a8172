"""DDIM / DDPM sampling and DDIM inversion, each one jitted ``lax.scan`` over a step grid.

The model is a callable ``eps_fn(x, s, cond) -> eps_hat`` where ``x`` is a batch
``(B, ...)``, ``s`` a ``(B,)`` float array of (possibly fractional) steps of the schedule
(see ``jot.diffusion.schedules``) and ``cond`` whatever conditioning the model takes
(``None`` for none). ``eps_fn`` is passed to ``jax.jit`` as a *pytree argument*, so a model
whose parameters are pytree leaves (``jot.models.unet.EpsModel``) is not baked into the
compiled program; a plain Python function is wrapped in ``jax.tree_util.Partial`` (it is then
static, and a new function object triggers a new trace).

Step grids. Sampling with ``nfe`` model evaluations from step ``start`` down to ``end`` uses
the uniform grid ``s_k = start + k (end - start) / nfe``, ``k = 0..nfe``; step ``k`` evaluates
``eps_hat = eps_fn(x_k, s_k)`` and applies the DDIM update (Song et al. 2021, Eq. 12)

    x0_hat  = (x_k - sqrt(1 - a) eps_hat) / sqrt(a),                 a  = alpha_bar(s_k)
    x_{k+1} = sqrt(a') x0_hat + sqrt(1 - a' - sigma^2) eps_hat + sigma z,   a' = alpha_bar(s_{k+1})

with ``sigma = eta sqrt((1 - a') / (1 - a) (1 - a / a'))`` (``eta = 0``: DDIM, deterministic;
``eta = 1``: DDPM ancestral sampling, the exact posterior ``q(x_{s'} | x_s, x0_hat)``).
``end = -1`` (``alpha_bar = 1``) returns ``x0_hat`` of the last step.

Explicit grids. ``ddim_sample``, ``ddpm_sample`` and ``ddim_invert`` also take ``steps=``, a
1-D array ``s_0..s_nfe`` of (fractional) steps used as the grid instead of the uniform one
(``nfe = len(steps) - 1``; ``start``/``end`` are then not given). It is a traced argument: a
new grid of the same length reuses the compiled sampler. This runs samplers on another
library's timestep grid, e.g. diffusers' DDIMScheduler with "leading" spacing: the timesteps
``t_k`` (``steps_offset`` included) followed by the final destination, ``-1`` when
``set_alpha_to_one`` (``alpha_bar = 1``) or ``0`` otherwise (``alpha_bar[0]``); see
``jot.models.sd.StableDiffusion.ddim_steps``. Sampling grids decrease, inversion grids increase.

Inversion runs the same update toward more noise on the reversed grid, evaluating the model
at the *destination* step with the current state, ``eps_hat = eps_fn(x_k, s_{k+1})``, so the
model is never queried at ``s = -1`` (where ``eps`` is undefined) and its evaluation points are
exactly those of the sampler on the same grid. Invert-then-sample is exact up to
``O(max_k |Delta sigma_k|)`` with ``sigma = sqrt((1 - a) / a)``.

Invert-then-sample (the core of DDIB and OT-ALD, ``jot.translate.ddib`` / ``jot.translate.otald``)
inverts with one model up to an end step, optionally maps the latents, and samples back down
with another model: ``nfe // 2`` inversion calls and ``nfe - nfe // 2`` sampling calls.

NFE accounting: every function here makes exactly ``nfe`` calls of ``eps_fn`` (one per scan
iteration) and nothing else calls the model.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jot.diffusion.schedules import Schedule

EpsFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def check_nfe(nfe: int, *, minimum: int = 1, what: str = "nfe") -> int:
    """Validates a number of function evaluations (a Python int >= ``minimum``)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < minimum:
        raise ValueError(
            f"{what}={nfe!r}: the number of model evaluations must be an integer >= {minimum}. "
            f"Pass e.g. {what}={max(minimum, 10)}."
        )
    return nfe


def as_pytree_fn(eps_fn: EpsFn) -> EpsFn:
    """Returns ``eps_fn`` as something ``jax.jit`` accepts as an argument.

    Pytree callables (``jax.tree_util.Partial``, flax ``struct`` dataclasses such as
    ``jot.models.unet.EpsModel``) are returned unchanged; other callables are wrapped in
    ``jax.tree_util.Partial`` (static, compared by identity).
    """
    if isinstance(eps_fn, jax.tree_util.Partial) or dataclasses.is_dataclass(eps_fn):
        return eps_fn
    if not callable(eps_fn):
        raise TypeError(f"eps_fn must be callable as eps_fn(x, s, cond); got {type(eps_fn).__name__}.")
    return jax.tree_util.Partial(eps_fn)


def add_noise(schedule: Schedule, x0: jax.Array, s: jax.Array, noise: jax.Array) -> jax.Array:
    """Forward marginal ``x_s = sqrt(alpha_bar(s)) x0 + sqrt(1 - alpha_bar(s)) noise``.

    ``s`` is a scalar or a ``(B,)`` array of (fractional) steps.
    """
    a = schedule.alpha_bar_at(s)
    a = jnp.reshape(a, jnp.shape(a) + (1,) * (x0.ndim - jnp.ndim(a)))
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def _ddim_update(x, eps, a, a_next, sigma, z, clip=None):
    """One DDIM/DDPM move from ``alpha_bar = a`` to ``a_next`` (formula in the module doc).

    With ``clip``, ``x0_hat`` is clipped to ``[-clip, clip]`` and ``eps`` recomputed from it,
    ``eps = (x - sqrt(a) x0_hat) / sqrt(1 - a)`` (the "clip denoised" of pixel-space DDPM code).
    """
    x0_hat = (x - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)
    if clip is not None:
        x0_hat = jnp.clip(x0_hat, -clip, clip)
        eps = (x - jnp.sqrt(a) * x0_hat) / jnp.sqrt(1.0 - a)
    dir_coef = jnp.sqrt(jnp.maximum(1.0 - a_next - sigma**2, 0.0))
    return jnp.sqrt(a_next) * x0_hat + dir_coef * eps + sigma * z


def _batch_steps(s: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.full((x.shape[0],), s, jnp.float32)


def _grid(start, end, nfe, steps):
    """The ``nfe + 1`` steps of a run: ``steps`` if given, else uniform from ``start`` to ``end``."""
    if steps is not None:
        return jnp.asarray(steps, jnp.float32)
    return jnp.linspace(start, end, nfe + 1).astype(jnp.float32)


def _check_steps(
    steps: Any, nfe: int | None, bound: float | None, *, what: str, bound_name: str = "start"
) -> tuple[Any, int]:
    """Validates an explicit step grid (or ``nfe`` without one); returns ``(steps, nfe)``."""
    if steps is None:
        if nfe is None:
            raise ValueError(
                f"{what} needs nfe (the number of model evaluations on the uniform grid) or steps "
                "(an explicit 1-D array of nfe + 1 steps); pass e.g. nfe=10."
            )
        return None, check_nfe(nfe)
    shape = jnp.shape(steps)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(
            f"steps has shape {tuple(shape)}; expected a 1-D array of nfe + 1 >= 2 steps "
            "s_0..s_nfe (the grid including the final destination)."
        )
    if nfe is not None and nfe != shape[0] - 1:
        raise ValueError(
            f"nfe={nfe!r} but steps has {shape[0]} entries (nfe={shape[0] - 1}); pass one of them, "
            "or steps with nfe + 1 entries."
        )
    if bound is not None:
        raise ValueError(
            f"{bound_name}={bound!r} was given together with steps; the grid steps[0]..steps[-1] already "
            "fixes both ends. Pass steps or start/end, not both."
        )
    return steps, shape[0] - 1


@partial(jax.jit, static_argnames=("nfe", "clip"))
def _sample(eps_fn, schedule, x, cond, rng, start, end, eta, steps=None, *, nfe, clip):
    grid = _grid(start, end, nfe, steps)
    keys = jax.random.split(rng, nfe)

    def body(x, k):
        s, s_next = grid[k], grid[k + 1]
        a, a_next = schedule.alpha_bar_at(s), schedule.alpha_bar_at(s_next)
        eps = eps_fn(x, _batch_steps(s, x), cond)
        sigma = eta * jnp.sqrt((1.0 - a_next) / (1.0 - a) * (1.0 - a / a_next))
        z = jax.random.normal(keys[k], x.shape, x.dtype)
        return _ddim_update(x, eps, a, a_next, sigma, z, clip).astype(x.dtype), None

    x, _ = jax.lax.scan(body, x, jnp.arange(nfe))
    return x


@partial(jax.jit, static_argnames=("nfe",))
def _invert(eps_fn, schedule, x, cond, start, end, steps=None, *, nfe):
    grid = _grid(start, end, nfe, steps)

    def body(x, k):
        s, s_next = grid[k], grid[k + 1]
        a, a_next = schedule.alpha_bar_at(s), schedule.alpha_bar_at(s_next)
        eps = eps_fn(x, _batch_steps(s_next, x), cond)
        return _ddim_update(x, eps, a, a_next, 0.0, 0.0).astype(x.dtype), None

    x, _ = jax.lax.scan(body, x, jnp.arange(nfe))
    return x


def _default_start(schedule: Schedule, start: float | None) -> float:
    return float(schedule.num_steps - 1) if start is None else start


def ddim_sample(
    eps_fn: EpsFn,
    x: jax.Array,
    *,
    schedule: Schedule,
    nfe: int | None = None,
    start: float | None = None,
    end: float = -1.0,
    cond: Any = None,
    clip: float | None = None,
    steps: Any = None,
) -> jax.Array:
    """Deterministic DDIM (eta = 0) from step ``start`` (default ``S-1``) down to ``end``.

    Makes exactly ``nfe`` calls of ``eps_fn``. ``x`` is the state at ``start`` (e.g. N(0, I)
    noise, or an inverted latent); returns the state at ``end`` (``end=-1``: clean data).
    ``clip``: clip ``x0_hat`` to ``[-clip, clip]`` at every step (pixel data in [-1, 1]: 1.0).
    ``steps``: an explicit decreasing grid ``s_0..s_nfe`` instead of ``start``/``end``/``nfe``
    (module docstring, "Explicit grids").
    """
    steps, nfe = _check_steps(steps, nfe, start, what="ddim_sample")
    start = _default_start(schedule, start)
    return _sample(as_pytree_fn(eps_fn), schedule, x, cond, jax.random.PRNGKey(0), start, end, 0.0, steps,
                   nfe=nfe, clip=clip)


def ddpm_sample(
    eps_fn: EpsFn,
    x: jax.Array,
    rng: jax.Array,
    *,
    schedule: Schedule,
    nfe: int | None = None,
    start: float | None = None,
    end: float = -1.0,
    cond: Any = None,
    eta: float = 1.0,
    clip: float | None = None,
    steps: Any = None,
) -> jax.Array:
    """Ancestral (stochastic) sampling on the ``nfe``-step grid; ``eta=1`` is DDPM.

    With a skipped grid the update is the exact Gaussian posterior of the forward process
    between consecutive grid steps given ``x0_hat``. Makes exactly ``nfe`` calls of ``eps_fn``.
    ``clip`` and ``steps`` as in ``ddim_sample``.
    """
    steps, nfe = _check_steps(steps, nfe, start, what="ddpm_sample")
    start = _default_start(schedule, start)
    return _sample(as_pytree_fn(eps_fn), schedule, x, cond, rng, start, end, eta, steps, nfe=nfe, clip=clip)


def ddim_invert(
    eps_fn: EpsFn,
    x: jax.Array,
    *,
    schedule: Schedule,
    nfe: int | None = None,
    end: float | None = None,
    start: float = -1.0,
    cond: Any = None,
    steps: Any = None,
) -> jax.Array:
    """DDIM inversion from step ``start`` (default ``-1``: clean data) up to ``end`` (default ``S-1``).

    Makes exactly ``nfe`` calls of ``eps_fn``, at the grid steps ``s_1..s_nfe`` (never at
    ``start``). ``ddim_sample(..., start=end, end=start)`` with the same ``nfe`` undoes it.
    ``steps``: an explicit increasing grid ``s_0..s_nfe`` instead of ``start``/``end``/``nfe``;
    ``ddim_sample(..., steps=steps[::-1])`` undoes it.
    """
    steps, nfe = _check_steps(steps, nfe, end, what="ddim_invert", bound_name="end")
    end = _default_start(schedule, end)
    return _invert(as_pytree_fn(eps_fn), schedule, x, cond, start, end, steps, nfe=nfe)


def split_nfe(nfe: int) -> tuple[int, int]:
    """``(inversion, sampling)`` model calls for an invert-then-sample budget of ``nfe`` (>= 2)."""
    check_nfe(nfe, minimum=2)
    return nfe // 2, nfe - nfe // 2


@partial(jax.jit, static_argnames=("nfe", "clip"))
def _invert_then_sample(x, eps_source, eps_target, schedule, end, latent_map, *, nfe, clip):
    n_inv, n_gen = split_nfe(nfe)
    z = ddim_invert(eps_source, x, schedule=schedule, nfe=n_inv, end=end)
    if latent_map is not None:
        z = latent_map(z)
    return ddim_sample(eps_target, z, schedule=schedule, nfe=n_gen, start=end, clip=clip)


def invert_then_sample(
    eps_source: EpsFn,
    eps_target: EpsFn,
    x: jax.Array,
    *,
    schedule: Schedule,
    nfe: int,
    end: float | None = None,
    latent_map: Callable[[jax.Array], jax.Array] | None = None,
    clip: float | None = None,
) -> jax.Array:
    """DDIM-inverts ``x`` with ``eps_source`` from clean data up to step ``end`` (default ``S-1``),
    applies ``latent_map`` to the latents if given, and DDIM-samples them back to clean data
    with ``eps_target``.

    Makes exactly ``nfe`` model calls in total (``split_nfe``); deterministic. ``latent_map`` is
    passed to ``jax.jit`` like the models (``as_pytree_fn``); ``clip`` as in ``ddim_sample``.
    """
    split_nfe(nfe)
    end = _default_start(schedule, end)
    latent_map = None if latent_map is None else as_pytree_fn(latent_map)
    return _invert_then_sample(
        x, as_pytree_fn(eps_source), as_pytree_fn(eps_target), schedule, end, latent_map, nfe=nfe, clip=clip
    )
