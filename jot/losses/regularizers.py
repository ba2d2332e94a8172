"""Regularisers for potentials: the HJB residual of DIOTM and the R1 gradient penalty.

Potentials are callables on a batch that act row by row (no batch statistics), so the
gradient of ``sum_i v(z_i)`` with respect to ``z`` is the per-example gradient.
"""
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from jot.losses import _checks

Potential = Callable[[jax.Array], jax.Array]
TimePotential = Callable[[jax.Array, jax.Array], jax.Array]


def r1_penalty(v: Potential, y: jax.Array) -> jax.Array:
    """Per-example squared gradient norm ``||grad_y v(y)||^2``, shape ``[n]`` (Roth et al. 2017)."""
    _checks.batch_matrix("y", y)
    grad = jax.grad(lambda z: jnp.sum(v(z)))(y)
    return jnp.sum(jnp.square(grad).reshape(y.shape[0], -1), axis=-1)


def r1_regularizer(v: Potential, y: jax.Array) -> jax.Array:
    """The R1 regulariser, the one definition OTM and DIOTM share::

        R1(v; y) = (1/2) E_y ||grad_y v(y)||^2

    A loss adds ``weight * R1``, so ``weight`` is the ``gamma`` of Roth et al. (2017). OTM
    applies it to target samples ``y``; DIOTM's ``"r1"`` to the interpolants ``x_t``, ``y_t``
    with ``v = V(t, .)``, and ``"otm"`` to the real endpoints (``jot.losses.value_loss``).
    """
    return 0.5 * jnp.mean(r1_penalty(v, y))


def hjb_residual(V: TimePotential, t: jax.Array, z: jax.Array, *, scale: float) -> jax.Array:
    """Residual of the Hamilton-Jacobi-Bellman equation of the DIOTM value function.

    For the cost ``c(x, y) = k ||x - y||^2`` (``k = scale``, see
    ``jot.losses.costs.quadratic_scale``) the optimal time-dependent value function
    satisfies (DIOTM, Theorem 3.3 / Eq. 15)::

        d_t V(t, z) + ||grad_z V(t, z)||^2 / (4 k) = 0

    along the displacement interpolation, where ``grad_z V(t, x_t) = 2 k (T(x) - x)``.
    Returns the per-example residual, shape ``[n]``. Both derivatives come from one
    ``jax.vjp`` of ``sum_i V(t_i, z_i)`` (each row of ``V`` depends only on its own
    ``(t_i, z_i)``), no finite differences.
    """
    _checks.batch_matrix("z", z)
    _checks.times(t, z.shape[0])
    values, pullback = jax.vjp(V, t, z)
    _checks.per_example("V(t, z)", values, z.shape[0])
    d_t, d_z = pullback(jnp.ones_like(values))
    grad_sq = jnp.sum(jnp.square(d_z).reshape(z.shape[0], -1), axis=-1)
    return d_t + grad_sq / (4.0 * scale)


def hjb_penalty(
    V: TimePotential,
    t: jax.Array,
    z: jax.Array,
    *,
    scale: float,
    kind: Literal["square", "abs"] = "square",
) -> jax.Array:
    """HJB regulariser ``R_HJB`` (DIOTM Eq. 19), per example: ``residual^2`` or ``|residual|``.

    ``z`` are generated interpolants; the caller stops gradients through them (only ``V``
    is regularised). The regulariser is the mean of this over the batch.
    """
    r = hjb_residual(V, t, z, scale=scale)
    if kind == "square":
        return jnp.square(r)
    if kind == "abs":
        return jnp.abs(r)
    raise ValueError(f"kind must be 'square' or 'abs', got {kind!r}.")
