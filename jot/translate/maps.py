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
- ``GaussianMap``: the closed-form (Bures / Monge) OT map between Gaussians fitted to the two
  clouds by mean and shrunk covariance, ``M(z) = m2 + A (z - m1)`` with
  ``A = S1^{-1/2} (S1^{1/2} S2 S1^{1/2})^{1/2} S1^{-1/2}`` (symmetric positive definite). Exact
  when both laws are Gaussian; affine, so it moves every latent by the same linear rule and
  keeps each image's own latent instead of averaging towards fitted target samples. The
  covariances are shrunk towards ``(tr S / d) I`` by ``shrinkage`` (needed when ``n`` is not
  much larger than ``d``).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import pointcloud
from ott.solvers import linear

from jot.ot import semidiscrete

METHODS = ("entropic", "semidiscrete", "gaussian")


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


@flax.struct.dataclass
class GaussianMap:
    """Affine OT map ``m2 + A (z - m1)`` between fitted Gaussians (see the module docstring)."""

    m1: jax.Array  # [d]
    m2: jax.Array  # [d]
    a: jax.Array  # [d, d], symmetric

    def __call__(self, z: jax.Array) -> jax.Array:
        flat = z.reshape(z.shape[0], -1)
        return (self.m2 + (flat - self.m1) @ self.a).reshape(z.shape)


def _shrunk_cov(x: np.ndarray, shrinkage: float) -> np.ndarray:
    c = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    return (1.0 - shrinkage) * c + shrinkage * (np.trace(c) / c.shape[0]) * np.eye(c.shape[0])


def _sqrtm(c: np.ndarray, power: float = 0.5) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (c + c.T))
    return (v * np.clip(w, 1e-12, None) ** power) @ v.T


def gaussian_map(x: jax.Array, y: jax.Array, shrinkage: float = 0.1) -> GaussianMap:
    """The closed-form OT map between ``N(mean x, cov x)`` and ``N(mean y, cov y)`` (``[n, d]``
    and ``[m, d]``; covariances shrunk by ``shrinkage`` in ``[0, 1]``), computed in float64."""
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage={shrinkage} must lie in [0, 1].")
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    s1, s2 = _shrunk_cov(x64, shrinkage), _shrunk_cov(y64, shrinkage)
    r1, r1_inv = _sqrtm(s1), _sqrtm(s1, -0.5)
    a = r1_inv @ _sqrtm(r1 @ s2 @ r1) @ r1_inv
    dtype = jnp.asarray(x).dtype
    return GaussianMap(jnp.asarray(x64.mean(0), dtype), jnp.asarray(y64.mean(0), dtype),
                       jnp.asarray(0.5 * (a + a.T), dtype))


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
    shrinkage: float = 0.1,
):
    """Fits an OT map ``source -> target`` (arrays ``[n, ...]`` and ``[m, ...]`` of equal sample shape).

    ``epsilon``: entropic regularisation as a fraction of the mean pairwise cost (``entropic``),
    or the soft-min temperature in per-coordinate cost units (``semidiscrete``; 0 = hard cells).
    ``shrinkage``: covariance shrinkage of the ``gaussian`` map.
    """
    if method not in METHODS:
        raise ValueError(f"unknown OT map method {method!r}; expected one of {list(METHODS)}.")
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"source samples have shape {source.shape[1:]} but target samples {target.shape[1:]}.")
    x, y = source.reshape(source.shape[0], -1), target.reshape(target.shape[0], -1)
    if method == "entropic":
        return EntropicMap(_sinkhorn(x, y, epsilon, max_iterations))
    if method == "gaussian":
        return gaussian_map(x, y, shrinkage)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    sd = semidiscrete.fit(x, y, rng, steps=semidiscrete_steps, lr=semidiscrete_lr, epsilon=epsilon)
    return ShapedMap(sd)


def _sinkhorn(x: jax.Array, y: jax.Array, epsilon: float, max_iterations: int):
    geom = pointcloud.PointCloud(x, y, epsilon=epsilon, relative_epsilon="mean")
    return jax.jit(lambda g: linear.solve(g, max_iterations=max_iterations, threshold=1e-3))(geom)
