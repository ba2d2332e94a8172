"""Transport costs.

The quadratic cost is ``c(x, y) = tau * ||x - y||^2`` summed over features
(``reduce="sum"``, used for point clouds) or ``tau * mean((x - y)^2)`` over features
(``reduce="mean"``, used for images so that ``tau`` does not depend on resolution).
Either way it equals ``k * ||x - y||^2`` with the per-coordinate scale ``k`` returned by
:func:`quadratic_scale`; the HJB regulariser needs that ``k``.
"""
import math
from typing import Literal

import jax
import jax.numpy as jnp

Reduce = Literal["sum", "mean"]


def quadratic_scale(tau: float, shape: tuple[int, ...], reduce: Reduce = "sum") -> float:
    """Per-coordinate scale ``k`` with ``c(x, y) = k ||x - y||^2`` for points of ``shape``.

    ``shape`` is the shape of one point (no batch axis).
    """
    if reduce == "sum":
        return float(tau)
    if reduce == "mean":
        return float(tau) / math.prod(shape)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}.")


def quadratic(x: jax.Array, y: jax.Array, *, tau: float = 1.0, reduce: Reduce = "sum") -> jax.Array:
    """Per-example quadratic cost ``tau * ||x - y||^2`` (or its per-feature mean), shape ``[n]``."""
    if jnp.shape(x) != jnp.shape(y):
        raise ValueError(f"x and y must have the same shape, got {jnp.shape(x)} and {jnp.shape(y)}.")
    sq = jnp.square(x - y).reshape(x.shape[0], -1)
    if reduce == "sum":
        return tau * jnp.sum(sq, axis=-1)
    if reduce == "mean":
        return tau * jnp.mean(sq, axis=-1)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}.")
