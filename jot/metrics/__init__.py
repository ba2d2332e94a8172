"""Evaluation metrics: Frechet distance in a fixed feature space, PSNR, held-out transport checks.

- ``frechet``: FD between image sets in fixed random-conv features;
- ``image``: PSNR;
- ``transport``: a map's pushforward against a target sample in high dimension, each number
  next to its two-sample floor: exact, marginal (per-coordinate) and Bures ``W2^2``, the
  per-coordinate variance ratio, the share of points sitting on fitted samples.

Exact ``W2^2`` and the L2 to the discrete OT map are in ``jot.ot.exact``.
"""
from jot.metrics import frechet, image, transport
from jot.metrics.frechet import frechet_distance, random_features
from jot.metrics.image import psnr
from jot.metrics.transport import gaussian_w2_squared, held_out, marginal_w2_squared, variance_ratio

__all__ = ["frechet", "frechet_distance", "gaussian_w2_squared", "held_out", "image", "marginal_w2_squared", "psnr",
           "random_features", "transport", "variance_ratio"]
