"""Entropic OT on samples through ott-jax: Sinkhorn couplings and entropic maps.

The ground cost is ott's squared Euclidean ``||x - y||^2``. All functions are jit-able
(ott runs Sinkhorn iterations in ``lax.while_loop``/``fori_loop``); ``epsilon`` is absolute,
and ``epsilon=None`` uses ott's default, ``0.05`` times the standard deviation of the cost matrix.
``entropic_map`` is the plain out-of-sample map, a convex combination of the target samples; in
high dimension with few samples it collapses onto them or shrinks towards their mean (see
``jot.ot.maps`` for the latent map built on it and ``jot.metrics.transport`` for the checks).
"""
from typing import Callable

import jax
import jax.numpy as jnp
from ott.geometry import pointcloud
from ott.solvers import linear


def _flat(name: str, a: jax.Array) -> jax.Array:
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape [n, d...], got {a.shape}.")
    return a.reshape(a.shape[0], -1)


def solve(
    x: jax.Array,
    y: jax.Array,
    *,
    epsilon: float | None = None,
    a: jax.Array | None = None,
    b: jax.Array | None = None,
    max_iterations: int = 2000,
    threshold: float = 1e-3,
):
    """Runs Sinkhorn between the point clouds ``x`` and ``y``; returns ott's ``SinkhornOutput``.

    ``a``, ``b``: optional weights (uniform by default). Points of any shape are flattened.
    """
    x, y = _flat("x", x), _flat("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}.")
    geom = pointcloud.PointCloud(x, y, epsilon=epsilon)
    return linear.solve(geom, a=a, b=b, max_iterations=max_iterations, threshold=threshold)


def coupling(x: jax.Array, y: jax.Array, *, epsilon: float | None = None, **kwargs) -> jax.Array:
    """Entropic OT plan ``P`` (``[n, m]``, entries sum to 1) between ``x`` and ``y``."""
    return solve(x, y, epsilon=epsilon, **kwargs).matrix


def entropic_map(
    x: jax.Array, y: jax.Array, *, epsilon: float | None = None, **kwargs
) -> Callable[[jax.Array], jax.Array]:
    """Out-of-sample entropic OT map fitted on samples ``x -> y`` (Pooladian & Niles-Weed).

    Returns ``M`` with ``M(z) = sum_j softmax_j((g_j - ||z - y_j||^2) / eps) y_j`` built from
    the Sinkhorn dual potentials (ott's ``to_dual_potentials().transport``). ``M`` accepts
    points of the shape ``x`` had (without the batch axis) and returns the same shape.
    """
    shape = x.shape[1:]
    potentials = solve(x, y, epsilon=epsilon, **kwargs).to_dual_potentials()

    def transport(z: jax.Array) -> jax.Array:
        if z.shape[1:] != shape:
            raise ValueError(f"the map was fitted on points of shape {shape}, got {z.shape[1:]}.")
        return potentials.transport(z.reshape(z.shape[0], -1)).reshape(z.shape)

    return transport


def barycentric_projection(x: jax.Array, y: jax.Array, *, epsilon: float | None = None, **kwargs) -> jax.Array:
    """In-sample map ``x_i -> n * sum_j P_ij y_j`` from the entropic coupling."""
    p = coupling(x, y, epsilon=epsilon, **kwargs)
    yf = _flat("y", y)
    return ((p / jnp.sum(p, axis=1, keepdims=True)) @ yf).reshape(x.shape[:1] + y.shape[1:])


def w2_squared(x: jax.Array, y: jax.Array, *, epsilon: float | None = None, **kwargs) -> jax.Array:
    """Transport cost ``<P, C>`` of the entropic plan: an estimate of ``W2^2`` (biased up by ``eps``)."""
    out = solve(x, y, epsilon=epsilon, **kwargs)
    return jnp.sum(out.matrix * out.geom.cost_matrix)
