"""Per-image fidelity metrics for images in ``[-1, 1]``."""
from __future__ import annotations

import numpy as np


def psnr(x: np.ndarray, y: np.ndarray, *, data_range: float = 2.0) -> np.ndarray:
    """Per-image PSNR ``10 log10(data_range^2 / mean((x - y)^2))`` in dB (``data_range=2`` for ``[-1, 1]``).

    ``x`` and ``y`` are ``[B, ...]`` of the same shape; returns ``[B]`` (``inf`` where equal).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"psnr needs images of the same shape; got {x.shape} and {y.shape}.")
    mse = np.mean((x - y).reshape(len(x), -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)
