"""Evaluation metrics: Frechet distance in a fixed feature space, PSNR.

Transport metrics on point clouds (W2, L2 to the discrete OT map) live in ``jot.ot.exact``.
"""
from jot.metrics import frechet, image
from jot.metrics.frechet import frechet_distance, random_features
from jot.metrics.image import psnr

__all__ = ["frechet", "frechet_distance", "image", "psnr", "random_features"]
