"""Frechet distance between image sets in a fixed, offline feature space.

``FD(X, Y) = ||mu_X - mu_Y||^2 + tr(S_X + S_Y - 2 (S_X^{1/2} S_Y S_X^{1/2})^{1/2})``: the squared
W2 distance between the Gaussians with the feature means/covariances of the two sets (the FID
formula). With a pluggable ``feature_fn``; the default ``random_features`` needs no weights:

    phi(x) = P^T avgpool_4x4( relu( conv3x3_K( resize(x, 32x32, grey) ) ) ) / sqrt(2048)

with ``K`` (``3x3x1x32``) and ``P`` (``2048 x 64``) drawn once from ``N(0, 1)`` with
``jax.random.PRNGKey(0)`` (threefry: the same numbers on every platform). So the space is
fixed, 64-dimensional, sees local stroke structure, and makes FD comparable across runs of
this library (not with Inception-FID numbers).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 64


@jax.jit
def random_features(x: jax.Array) -> jax.Array:
    """The fixed random-conv features above for NHWC images in ``[-1, 1]`` (any size, 1 or 3 channels)."""
    grey = jnp.mean(x, axis=-1, keepdims=True)
    grey = jax.image.resize(grey, (x.shape[0], 32, 32, 1), "linear")
    k_conv, k_proj = jax.random.split(jax.random.PRNGKey(0))
    kernel = jax.random.normal(k_conv, (3, 3, 1, 32)) / 3.0
    proj = jax.random.normal(k_proj, (8 * 8 * 32, FEATURE_DIM))
    h = jax.nn.relu(jax.lax.conv_general_dilated(grey, kernel, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                 precision=jax.lax.Precision.HIGHEST))
    h = h.reshape(x.shape[0], 8, 4, 8, 4, 32).mean(axis=(2, 4)).reshape(x.shape[0], -1)
    return jnp.dot(h, proj, precision=jax.lax.Precision.HIGHEST) / np.sqrt(h.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2})`` in float64."""
    r1 = _psd_sqrt(np.asarray(cov1, np.float64))
    cross = np.linalg.eigvalsh(r1 @ np.asarray(cov2, np.float64) @ r1)
    tr_sqrt = np.sum(np.sqrt(np.clip(cross, 0, None)))
    return float(np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def frechet_distance(
    x: np.ndarray, y: np.ndarray, *, feature_fn: Callable[[jax.Array], jax.Array] | None = random_features
) -> float:
    """FD between image (or, with ``feature_fn=None``, feature) sets ``x`` and ``y`` (needs >= 2 each)."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Frechet distance needs at least 2 samples per set; got {len(x)} and {len(y)}.")
    fx = np.asarray(feature_fn(jnp.asarray(x)) if feature_fn else x, np.float64).reshape(len(x), -1)
    fy = np.asarray(feature_fn(jnp.asarray(y)) if feature_fn else y, np.float64).reshape(len(y), -1)
    return frechet_from_moments(fx.mean(0), np.cov(fx, rowvar=False), fy.mean(0), np.cov(fy, rowvar=False))
