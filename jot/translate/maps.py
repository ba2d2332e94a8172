"""OT maps between two sets of latents, fitted from samples (used by OT-ALD and prior-OT).

Both map types are pytrees, so a fitted map is an ordinary argument of a jitted translator,
and both accept arrays ``[n, ...]`` of the shape they were fitted on:

- ``EntropicMap`` (default): Sinkhorn between the point clouds with ott-jax (squared Euclidean
  cost ``||z - z'||^2``, ``epsilon`` relative to the mean cost), then the out-of-sample
  entropic map of Pooladian & Niles-Weed from the dual potentials,
  ``M(z) = sum_j softmax_j((g_j - ||z - y_j||^2) / eps) y_j``
  (ott's ``SinkhornOutput.to_dual_potentials().transport``).
- ``jot.ot.semidiscrete.SemidiscreteMap``: semi-discrete OT onto the target samples (each
  ``z`` goes to the target sample of its Laguerre cell).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
from ott.geometry import pointcloud
from ott.solvers import linear

from jot.ot import semidiscrete

METHODS = ("entropic", "semidiscrete")


@flax.struct.dataclass
class EntropicMap:
    """Entropic OT map from Sinkhorn dual potentials (see the module docstring)."""

    sinkhorn: Any  # ott SinkhornOutput, a pytree

    def __call__(self, z: jax.Array) -> jax.Array:
        flat = z.reshape(z.shape[0], -1)
        return self.sinkhorn.to_dual_potentials().transport(flat).reshape(z.shape)


@flax.struct.dataclass
class ShapedMap:
    """Applies a map on flat ``[n, d]`` points to arrays ``[n, ...]`` (keeps the shape)."""

    flat_map: Any

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.flat_map(z.reshape(z.shape[0], -1)).reshape(z.shape)


def fit(
    source: jax.Array,
    target: jax.Array,
    *,
    method: str = "entropic",
    epsilon: float = 0.01,
    rng: jax.Array | None = None,
    max_iterations: int = 2000,
    semidiscrete_steps: int = 2000,
    semidiscrete_lr: float = 1e-2,
):
    """Fits an OT map ``source -> target`` (arrays ``[n, ...]`` and ``[m, ...]`` of equal sample shape).

    ``epsilon``: entropic regularisation as a fraction of the mean pairwise cost (``entropic``),
    or the soft-min temperature in per-coordinate cost units (``semidiscrete``; 0 = hard cells).
    """
    if method not in METHODS:
        raise ValueError(f"unknown OT map method {method!r}; expected one of {list(METHODS)}.")
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"source samples have shape {source.shape[1:]} but target samples {target.shape[1:]}.")
    x, y = source.reshape(source.shape[0], -1), target.reshape(target.shape[0], -1)
    if method == "entropic":
        return EntropicMap(_sinkhorn(x, y, epsilon, max_iterations))
    rng = jax.random.PRNGKey(0) if rng is None else rng
    sd = semidiscrete.fit(x, y, rng, steps=semidiscrete_steps, lr=semidiscrete_lr, epsilon=epsilon)
    return ShapedMap(sd)


def _sinkhorn(x: jax.Array, y: jax.Array, epsilon: float, max_iterations: int):
    geom = pointcloud.PointCloud(x, y, epsilon=epsilon, relative_epsilon="mean")
    return jax.jit(lambda g: linear.solve(g, max_iterations=max_iterations, threshold=1e-3))(geom)
