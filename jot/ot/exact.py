"""Exact discrete OT between equal-size uniform samples (the ground truth of the 2D tables).

With ``n`` points on each side and uniform weights, an optimal plan is a permutation
(Birkhoff), found exactly by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``).
These run on the host in float64; they are evaluation tools, not training-time ops.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment


def _points(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape [n, d...], got {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; exact OT needs finite points.")
    return a.reshape(a.shape[0], -1)


def sq_distances(x, y) -> np.ndarray:
    """Pairwise squared Euclidean distances ``||x_i - y_j||^2`` (float64)."""
    x, y = _points("x", x), _points("y", y)
    d = np.sum(x * x, 1)[:, None] + np.sum(y * y, 1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def assignment(x, y) -> np.ndarray:
    """Optimal permutation ``sigma`` minimising ``sum_i ||x_i - y_sigma(i)||^2`` (equal sizes)."""
    x, y = _points("x", x), _points("y", y)
    if x.shape != y.shape:
        raise ValueError(
            f"exact assignment needs two samples of the same size and dimension, got {x.shape} and {y.shape}; "
            "subsample the larger one."
        )
    rows, cols = linear_sum_assignment(sq_distances(x, y))
    sigma = np.empty(len(rows), dtype=np.int64)
    sigma[rows] = cols
    return sigma


def w2_squared(x, y) -> float:
    """``W2^2`` between the empirical measures of ``x`` and ``y`` (equal sizes, uniform weights)."""
    sigma = assignment(x, y)
    x, y = _points("x", x), _points("y", y)
    return float(np.mean(np.sum((x - y[sigma]) ** 2, axis=1)))


def l2_to_ot(x, tx, y) -> float:
    """``mean_i ||T(x_i) - y_sigma(i)||^2`` with ``sigma`` the exact OT assignment of ``x`` to ``y``.

    Measures how far a learned map ``T`` is from the discrete OT map on held-out samples
    (DIOTM Table 1, "L2").
    """
    sigma = assignment(x, y)
    tx, y = _points("T(x)", tx), _points("y", y)
    if tx.shape != y.shape:
        raise ValueError(f"T(x) and y must have the same shape, got {tx.shape} and {y.shape}.")
    return float(np.mean(np.sum((tx - y[sigma]) ** 2, axis=1)))
