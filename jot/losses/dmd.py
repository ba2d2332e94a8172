"""Distribution matching distillation (DMD, Yin et al. 2024) and its regularised, unpaired
form RDMD (Rakitin, Shchekotov & Vetrov 2024), pure JAX.

A one-step generator ``G`` maps a source sample ``x`` to ``y = G(x)``. Its outputs are noised
with a VP schedule at steps ``s`` (``a = alpha_bar(s)``, ``eps ~ N(0, I)``)::

    y_s = sqrt(a) y + sqrt(1 - a) eps

and denoised by a frozen diffusion model of the target domain (``eps_real``) and by an online
"fake" model of G's own outputs (``eps_fake``), each through the x0-prediction::

    x0_m(y_s) = (y_s - sqrt(1 - a) eps_m(y_s, s)) / sqrt(a),      m in {real, fake}.

Since ``x0_m = (y_s + (1 - a) score_m(y_s)) / sqrt(a)`` (Tweedie), the KL between the noised
output and target marginals has the gradient (with respect to the generator's parameters,
through ``y``)::

    grad KL(p_s^G || p_s^target) = E[ snr(s) (x0_fake(y_s) - x0_real(y_s)) . dy ],  snr = a / (1 - a).

The generator update direction per example is therefore

    g = w * (x0_fake(y_s) - x0_real(y_s)) / n,

with ``n = mean_features |y - x0_real(y_s)|`` when ``normalize`` (the per-example step
normalisation of DMD, Eq. 8 of Yin et al.; no gradient flows through it) and ``n = 1``
otherwise, and ``w`` an optional per-example time weight (``w = snr(s)`` without
normalisation is the exact gradient of ``E_s KL_s``; ``w = 1`` that of ``E_s KL_s / snr(s)``).
It is applied through the surrogate whose gradient in ``y`` is exactly ``g``::

    L_DMD = E_i 0.5 ||y_i - stop_grad(y_i - g_i)||^2          (reduce="sum")

or with the squared norm replaced by its mean over features (``reduce="mean"``, DMD's MSE form,
for images: the gradient is ``g / numel``). The fake model is trained with the denoising loss on
the generator's outputs, detached from the generator::

    L_fake = E || eps_fake(y_s, s) - eps ||^2,     y = stop_grad(G(x)).

RDMD (paper Eq. 14) adds the transport cost between input and output::

    L_RDMD(G) = L_DMD + lambda E_x c(x, G(x)),     c(x, y) = ||x - y||^2  (sum or mean over features)

As ``lambda -> 0`` its minimiser tends to the Monge (quadratic OT) map from source to target
(paper Theorem 3.1).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jot.losses import _checks, costs, denoising

EpsFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
Map = Callable[[jax.Array], jax.Array]


def _bcast(v: jax.Array, like: jax.Array) -> jax.Array:
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def _check_steps(y, noise, s, alpha_bar, weight):
    _checks.batch_matrix("y", y)
    _checks.same_shape("y", y, "noise", noise)
    n = y.shape[0]
    if jnp.shape(s) != (n,) or jnp.shape(alpha_bar) != (n,):
        raise ValueError(f"s {jnp.shape(s)} and alpha_bar {jnp.shape(alpha_bar)} must both have shape ({n},), "
                         "one diffusion step per example.")
    if weight is not None and jnp.shape(weight) != (n,):
        raise ValueError(f"weight must have shape ({n},) (one time weight per example), got {jnp.shape(weight)}.")


def _reduce_features(sq: jax.Array, reduce: costs.Reduce) -> jax.Array:
    flat = sq.reshape(sq.shape[0], -1)
    if reduce == "sum":
        return jnp.sum(flat, axis=1)
    if reduce == "mean":
        return jnp.mean(flat, axis=1)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}.")


def x0_prediction(eps_fn: EpsFn, x_s: jax.Array, s: jax.Array, alpha_bar: jax.Array, cond: Any = None) -> jax.Array:
    """``x0 = (x_s - sqrt(1 - a) eps_fn(x_s, s, cond)) / sqrt(a)`` with ``a = alpha_bar`` (shape ``[B]``)."""
    eps = eps_fn(x_s, s, cond)
    if eps.shape != x_s.shape:
        raise ValueError(f"the noise predictor returned shape {eps.shape}; expected the input shape {x_s.shape}.")
    a = _bcast(alpha_bar, x_s)
    return (x_s - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)


def dmd_direction(
    eps_real: EpsFn,
    eps_fake: EpsFn,
    y: jax.Array,
    noise: jax.Array,
    s: jax.Array,
    alpha_bar: jax.Array,
    *,
    cond_real: Any = None,
    cond_fake: Any = None,
    weight: jax.Array | None = None,
    normalize: bool = True,
    min_norm: float = 1e-8,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The per-example DMD update direction ``g = w (x0_fake(y_s) - x0_real(y_s)) / n`` (module
    docstring), gradients stopped.

    Args:
      eps_real, eps_fake: noise predictors ``eps(x_s, s, cond)`` of the target and of the
        generator's outputs.
      y: generator outputs ``[B, ...]``.
      noise: standard normal noise of ``y``'s shape.
      s: ``[B]`` steps given to the models; ``alpha_bar``: ``[B]`` values ``alpha_bar(s)``.
      cond_real, cond_fake: conditioning passed to each model (e.g. the target domain label).
      weight: optional ``[B]`` time weights ``w``.
      normalize: divide by ``n = mean_features |y - x0_real(y_s)|`` (DMD); else ``n = 1``.
      min_norm: floor of ``n``.

    Returns:
      ``(g, aux)`` with ``aux``: ``y_s``, ``x0_real``, ``x0_fake`` and the per-example ``norm`` ``n``.
    """
    _check_steps(y, noise, s, alpha_bar, weight)
    y = jax.lax.stop_gradient(y)
    a = _bcast(alpha_bar, y)
    y_s = jnp.sqrt(a) * y + jnp.sqrt(1.0 - a) * noise
    x0_real = x0_prediction(eps_real, y_s, s, alpha_bar, cond_real)
    x0_fake = x0_prediction(eps_fake, y_s, s, alpha_bar, cond_fake)
    g = x0_fake - x0_real
    if normalize:
        norm = jnp.maximum(jnp.mean(jnp.abs(y - x0_real).reshape(y.shape[0], -1), axis=1), min_norm)
    else:
        norm = jnp.ones((y.shape[0],), y.dtype)
    g = g / _bcast(norm, y)
    if weight is not None:
        g = g * _bcast(weight, y)
    g = jax.lax.stop_gradient(jnp.nan_to_num(g))
    aux = {"y_s": y_s, "x0_real": jax.lax.stop_gradient(x0_real), "x0_fake": jax.lax.stop_gradient(x0_fake),
           "norm": jax.lax.stop_gradient(norm)}
    return g, aux


def dmd_surrogate(y: jax.Array, g: jax.Array, *, reduce: costs.Reduce = "sum") -> jax.Array:
    """``E_i 0.5 ||y_i - stop_grad(y_i - g_i)||^2`` (``reduce="mean"``: mean over features
    instead of the sum), whose gradient in ``y_i`` is ``g_i / B`` (``/ (B numel)`` for mean)."""
    _checks.same_shape("y", y, "g", g)
    target = jax.lax.stop_gradient(y - g)
    return jnp.mean(0.5 * _reduce_features(jnp.square(y - target), reduce))


def generator_loss(
    eps_real: EpsFn,
    eps_fake: EpsFn,
    y: jax.Array,
    noise: jax.Array,
    s: jax.Array,
    alpha_bar: jax.Array,
    *,
    cond_real: Any = None,
    cond_fake: Any = None,
    weight: jax.Array | None = None,
    normalize: bool = True,
    reduce: costs.Reduce = "sum",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DMD generator surrogate ``L_DMD`` at generator outputs ``y`` (differentiable in ``y``);
    arguments as ``dmd_direction`` and ``dmd_surrogate``. ``aux``: ``grad_norm`` (mean per-example
    ``||g||``), ``norm`` (mean DMD normaliser)."""
    g, d = dmd_direction(eps_real, eps_fake, y, noise, s, alpha_bar, cond_real=cond_real, cond_fake=cond_fake,
                         weight=weight, normalize=normalize)
    loss = dmd_surrogate(y, g, reduce=reduce)
    gn = jnp.sqrt(jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1))
    return loss, {"grad_norm": jnp.mean(gn), "norm": jnp.mean(d["norm"])}


def fake_loss(
    eps_fake: EpsFn,
    y: jax.Array,
    noise: jax.Array,
    s: jax.Array,
    alpha_bar: jax.Array,
    *,
    cond: Any = None,
    snr_gamma: float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L_fake = E || eps_fake(y_s, s) - eps ||^2`` on ``y = stop_grad(G(x))`` (the epsilon
    denoising loss of ``jot.losses.denoising``, mean over features and batch)."""
    _check_steps(y, noise, s, alpha_bar, None)
    loss = denoising.epsilon_loss(eps_fake, jax.lax.stop_gradient(y), noise, s, alpha_bar, cond=cond,
                                  snr_gamma=snr_gamma)
    return loss, {}


def rdmd_loss(
    G: Map,
    eps_real: EpsFn,
    eps_fake: EpsFn,
    x: jax.Array,
    noise: jax.Array,
    s: jax.Array,
    alpha_bar: jax.Array,
    *,
    lam: float,
    cond_real: Any = None,
    cond_fake: Any = None,
    weight: jax.Array | None = None,
    normalize: bool = True,
    reduce: costs.Reduce = "sum",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L_RDMD(G) = L_DMD(G(x)) + lam * E_x c(x, G(x))`` with ``c = ||x - y||^2`` summed
    (``reduce="sum"``) or averaged (``"mean"``) over features, the same reduction as the surrogate
    so that ``lam`` does not depend on resolution for images.

    Returns ``(loss, aux)``; ``aux``: ``y`` (the outputs ``G(x)``, for the fake-model step),
    ``dmd`` (the surrogate's value), ``cost`` (mean ``c``), ``grad_norm``, ``norm``.
    """
    _checks.batch_matrix("x", x)
    if isinstance(lam, (int, float)) and not lam >= 0:
        raise ValueError(f"lam={lam!r}; the transport cost weight must be >= 0.")
    y = G(x)
    _checks.same_shape("x", x, "G(x)", y)
    dmd, aux = generator_loss(eps_real, eps_fake, y, noise, s, alpha_bar, cond_real=cond_real, cond_fake=cond_fake,
                              weight=weight, normalize=normalize, reduce=reduce)
    cost = jnp.mean(costs.quadratic(x, y, reduce=reduce))
    return dmd + lam * cost, {**aux, "y": y, "dmd": dmd, "cost": cost}
