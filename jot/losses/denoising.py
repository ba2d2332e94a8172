"""Denoising score matching in epsilon- and v-prediction form (Ho et al. 2020; Salimans & Ho
2022), pure JAX.

For clean data ``x0``, noise ``eps ~ N(0, I)`` and steps ``s`` with ``a = alpha_bar(s)``,

    x_s    = sqrt(a) x0 + sqrt(1 - a) eps
    l_i    = w(snr_i) * mean_pixels( (eps_fn(x_s, s, cond) - eps)^2 ),   snr = a / (1 - a)

with ``w = 1`` (the "simple" DDPM loss) or, with ``snr_gamma`` set, the min-SNR-gamma
weighting of Hang et al. 2023 for epsilon prediction, ``w = min(snr, gamma) / snr``, which
down-weights the low-noise steps whose epsilon targets are nearly unidentifiable.

``velocity_loss`` is the same with the model predicting the velocity (SD 2.x
``v_prediction``) and the target

    v = sqrt(a) eps - sqrt(1 - a) x0,

weighted by ``w = min(snr, gamma) / (snr + 1)`` with ``snr_gamma`` (Hang et al. 2023, the
v-prediction form of min-SNR).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def _check(x0, noise, s, alpha_bar, reduction):
    if x0.shape != noise.shape:
        raise ValueError(f"x0 has shape {x0.shape} but noise has shape {noise.shape}; they must match.")
    batch = x0.shape[0]
    if s.shape != (batch,) or alpha_bar.shape != (batch,):
        raise ValueError(
            f"s {s.shape} and alpha_bar {alpha_bar.shape} must both have shape ({batch},), one per example."
        )
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r}; expected 'mean' or 'none'.")


def _regression(model_fn, target_of, x0, noise, s, alpha_bar, cond, weight_of, reduction):
    """``weight(snr) * mean_pixels((model_fn(x_s, s, cond) - target)^2)`` per example, reduced."""
    batch = x0.shape[0]
    a = alpha_bar.reshape((batch,) + (1,) * (x0.ndim - 1))
    x_s = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise
    pred = model_fn(x_s, s, cond)
    if pred.shape != x0.shape:
        raise ValueError(f"the model returned shape {pred.shape}; expected the input shape {x0.shape}.")
    per_example = jnp.mean(jnp.square(pred - target_of(a)).reshape(batch, -1), axis=1)
    if weight_of is not None:
        per_example = per_example * weight_of(alpha_bar / (1.0 - alpha_bar))
    return per_example if reduction == "none" else jnp.mean(per_example)


def epsilon_loss(
    eps_fn: Callable[[jax.Array, jax.Array, Any], jax.Array],
    x0: jax.Array,
    noise: jax.Array,
    s: jax.Array,
    alpha_bar: jax.Array,
    *,
    cond: Any = None,
    snr_gamma: float | None = None,
    reduction: str = "mean",
) -> jax.Array:
    """Epsilon-prediction denoising loss (formula in the module docstring).

    Args:
      eps_fn: the model, ``eps_fn(x_s, s, cond) -> eps_hat`` with the shape of ``x_s``.
      x0: clean data ``(B, ...)``.
      noise: standard normal noise, same shape as ``x0``.
      s: ``(B,)`` steps given to the model (integer or fractional).
      alpha_bar: ``(B,)`` values ``alpha_bar(s)`` in ``(0, 1)``.
      cond: conditioning passed through to ``eps_fn``.
      snr_gamma: if set, min-SNR-gamma weights ``min(snr, gamma) / snr``.
      reduction: ``"mean"`` (scalar over the batch) or ``"none"`` (``(B,)`` per example).

    Returns:
      The weighted loss, a scalar or ``(B,)`` array.
    """
    _check(x0, noise, s, alpha_bar, reduction)
    weight = None if snr_gamma is None else (lambda snr: jnp.minimum(snr, snr_gamma) / snr)
    return _regression(eps_fn, lambda a: noise, x0, noise, s, alpha_bar, cond, weight, reduction)


def velocity_loss(
    v_fn: Callable[[jax.Array, jax.Array, Any], jax.Array],
    x0: jax.Array,
    noise: jax.Array,
    s: jax.Array,
    alpha_bar: jax.Array,
    *,
    cond: Any = None,
    snr_gamma: float | None = None,
    reduction: str = "mean",
) -> jax.Array:
    """V-prediction denoising loss: the model ``v_fn(x_s, s, cond)`` regresses
    ``v = sqrt(a) eps - sqrt(1 - a) x0`` (module docstring); arguments as ``epsilon_loss``,
    with ``snr_gamma`` weights ``min(snr, gamma) / (snr + 1)``."""
    _check(x0, noise, s, alpha_bar, reduction)
    weight = None if snr_gamma is None else (lambda snr: jnp.minimum(snr, snr_gamma) / (snr + 1.0))
    return _regression(v_fn, lambda a: jnp.sqrt(a) * noise - jnp.sqrt(1.0 - a) * x0, x0, noise, s, alpha_bar, cond,
                       weight, reduction)
