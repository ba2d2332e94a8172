"""Evaluation metrics: Frechet distance in a fixed feature space, Inception FID/KID, PSNR, held-out transport checks.

- ``frechet``: FD between image sets in fixed random-conv features;
- ``fid``: FID and KID in the features of the FID InceptionV3 (``inception``), as pytorch-fid
  and torch-fidelity compute them, from a local safetensors copy of pytorch-fid's weights;
- ``image``: PSNR;
- ``transport``: a map's pushforward against a target sample in high dimension, each number
  next to its two-sample floor: exact, marginal (per-coordinate) and Bures ``W2^2``, the
  per-coordinate variance ratio, the share of points sitting on fitted samples.

Exact ``W2^2`` and the L2 to the discrete OT map are in ``jot.ot.exact``.
"""
import importlib

from jot.metrics import frechet, image, transport
from jot.metrics.frechet import frechet_distance, random_features
from jot.metrics.image import psnr
from jot.metrics.transport import gaussian_w2_squared, held_out, marginal_w2_squared, variance_ratio

# Imported on first use, so that ``python -m jot.metrics.fid`` runs a module not yet imported:
# public name -> (module, attribute; None for the module itself).
_LAZY = {"fid": ("jot.metrics.fid", None), "inception": ("jot.metrics.inception", None),
         "FID": ("jot.metrics.fid", "FID"), "load_inception": ("jot.metrics.fid", "load_inception"),
         "inception_features": ("jot.metrics.fid", "features"), "kid": ("jot.metrics.fid", "kid")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jot.metrics' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    globals()[name] = value = module if attr is None else getattr(module, attr)
    return value


__all__ = ["FID", "fid", "frechet", "frechet_distance", "gaussian_w2_squared", "held_out", "image", "inception",
           "inception_features", "kid", "load_inception", "marginal_w2_squared", "psnr", "random_features",
           "transport", "variance_ratio"]
