"""Distribution-level checks of a transport map on held-out samples, in high dimension.

The sample ``W2^2`` between two ``n``-point clouds in ``d`` dimensions is far above the
population ``W2^2`` when ``n`` is not exponentially larger than ``d``: for two independent
samples of ``N(0, I_d)``, ``W2^2 / d`` is ~1.66 at ``n = 300``, ``d = 256`` although the laws are
equal. A map that only shrinks, ``x -> c x + m`` with ``c < 1``, lowers that number (at ``c = 0``
every point sits at the mean and ``W2^2 / d`` drops to 1), so a small sample ``W2^2`` says nothing
on its own. Every number here is therefore reported with its two-sample floor (the same
statistic between two independent samples of the target of the same sizes), next to statistics
that a shrinking map cannot improve:

- ``marginal_w2_squared``: ``sum_k W2^2(x_k, y_k)`` over the coordinates' 1-D marginals (exact,
  by sorting). A lower bound of ``W2^2`` (a coupling of the joint laws couples each marginal) that
  converges at 1-D rates, so its floor is small and shrinking moves it up: ``(1 - c)^2`` per
  coordinate for ``N(m, I)``.
- ``variance_ratio``: ``var(x_k) / var(y_k)`` per coordinate; 1 for a map with the right law,
  ``c^2`` for the shrinking map.
- ``gaussian_w2_squared``: the Bures-Wasserstein (Frechet) ``W2^2`` between Gaussians fitted to
  the two clouds, ``||m1 - m2||^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})``; with
  ``diagonal=True``, the same with diagonal covariances, ``sum_k (m1_k - m2_k)^2 + (s1_k - s2_k)^2``.
  The full version needs ``n >> d``: with sample covariances the cross term is biased low, its
  minimiser over ``c`` is below 1, and at ``n ~ d`` a mild shrink (``c ~ 0.75``) beats the truth.
- ``nearest_sample_fraction``: the share of mapped points sitting on fitted target samples,
  i.e. closer to one than ``rel`` times the median nearest-neighbour distance among them (a map
  that memorises its fitting set; exact copies of the fitted targets score 1).

``held_out`` assembles all of these into one dict. Host-side float64 numpy throughout.
"""
from __future__ import annotations

import numpy as np

from jot.metrics.frechet import frechet_from_moments
from jot.ot import exact


def _flat(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must have shape [n, d...] with n >= 2, got {a.shape}.")
    return a.reshape(a.shape[0], -1)


def gaussian_w2_squared(x, y, *, diagonal: bool = False) -> float:
    """Bures-Wasserstein ``W2^2`` between ``N(mean x, cov x)`` and ``N(mean y, cov y)`` (see the
    module docstring; sample covariances with ``n - 1``; ``diagonal``: per-coordinate variances only)."""
    x, y = _flat("x", x), _flat("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}.")
    if diagonal:
        return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.sum((x.std(0, ddof=1) - y.std(0, ddof=1)) ** 2))
    cx, cy = np.cov(x, rowvar=False).reshape(x.shape[1], -1), np.cov(y, rowvar=False).reshape(y.shape[1], -1)
    return max(frechet_from_moments(x.mean(0), cx, y.mean(0), cy), 0.0)


def marginal_w2_squared(x, y) -> float:
    """``sum_k W2^2`` between the 1-D coordinate marginals of ``x`` and ``y`` (equal sizes; the
    sorted samples are the 1-D optimal coupling)."""
    x, y = _flat("x", x), _flat("y", y)
    if x.shape != y.shape:
        raise ValueError(f"marginal W2 needs two samples of the same size and dimension, got {x.shape} and {y.shape}.")
    return float(np.sum(np.mean((np.sort(x, axis=0) - np.sort(y, axis=0)) ** 2, axis=0)))


def variance_ratio(x, y) -> np.ndarray:
    """Per-coordinate ``var(x_k) / var(y_k)`` (``[d]``)."""
    x, y = _flat("x", x), _flat("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}.")
    return x.var(0, ddof=1) / np.maximum(y.var(0, ddof=1), np.finfo(np.float64).tiny)


def nearest_sample_fraction(mapped, samples, *, rel: float = 1e-2) -> float:
    """Fraction of ``mapped`` points whose nearest point of ``samples`` is closer than ``rel`` times
    the median nearest-neighbour distance among ``samples``."""
    mapped, samples = _flat("mapped", mapped), _flat("samples", samples)
    within = exact.sq_distances(samples, samples)
    np.fill_diagonal(within, np.inf)
    scale = np.median(np.sqrt(within.min(1)))
    nearest = np.sqrt(exact.sq_distances(mapped, samples).min(1))
    return float(np.mean(nearest < rel * scale))


def held_out(mapped, target, *, source=None, fitted_target=None) -> dict[str, float]:
    """Per-coordinate statistics of held-out mapped points against held-out target points.

    With ``k = min(len(mapped), len(target) // 2)``, ``mapped[:k]`` is compared with
    ``target[k:2k]``, and the floor is ``target[:k]`` against ``target[k:2k]`` (two independent
    samples of the target, the sizes of the comparison). Index ``i`` of ``mapped`` and of
    ``target`` may be paired (twins), they are never compared with each other. Returns (each
    ``W2^2`` divided by the dimension ``d``):

    - ``w2sq_after`` / ``w2sq_floor``: exact ``W2^2`` (``jot.ot.exact``); ``w2sq_before`` the same
      for ``source[:k]`` (the unmapped points) when ``source`` is given;
    - ``marginal_w2sq_after`` / ``marginal_w2sq_floor`` (``_before``): ``marginal_w2_squared``;
    - ``bures_w2sq_after`` / ``bures_w2sq_floor`` (``_before``): ``gaussian_w2_squared``, full
      covariances (biased when ``k`` is not much larger than ``d``);
    - ``diag_bures_w2sq_after`` / ``diag_bures_w2sq_floor``: diagonal covariances;
    - ``var_ratio_mean`` / ``var_ratio_std``: mean and spread over coordinates of
      ``var(mapped) / var(target)`` (``var_ratio_floor_std``: the spread between the two target
      samples, for scale); ``var_ratio_total``: ``sum_k var(mapped_k) / sum_k var(target_k)``
      (not dominated by near-constant coordinates, such as the empty borders of images);
    - ``collapse_fraction``: ``nearest_sample_fraction(mapped, fitted_target)`` when
      ``fitted_target`` (the target samples the map was fitted on) is given;
    - ``num_eval``: ``k``.
    """
    mapped, target = _flat("mapped", mapped), _flat("target", target)
    k = min(len(mapped), len(target) // 2)
    if k < 2:
        raise ValueError(f"need >= 2 mapped points and >= 4 target points, got {len(mapped)} and {len(target)}.")
    d = mapped.shape[1]
    a, ref, tgt = mapped[:k], target[:k], target[k:2 * k]
    pairs = {"after": a, "floor": ref}
    if source is not None:
        pairs["before"] = _flat("source", source)[:k]
    out: dict[str, float] = {}
    for tag, pts in pairs.items():
        out[f"w2sq_{tag}"] = exact.w2_squared(pts, tgt) / d
        out[f"marginal_w2sq_{tag}"] = marginal_w2_squared(pts, tgt) / d
        out[f"bures_w2sq_{tag}"] = gaussian_w2_squared(pts, tgt) / d
        out[f"diag_bures_w2sq_{tag}"] = gaussian_w2_squared(pts, tgt, diagonal=True) / d
    ratio = variance_ratio(a, tgt)
    out["var_ratio_mean"], out["var_ratio_std"] = float(ratio.mean()), float(ratio.std())
    out["var_ratio_floor_std"] = float(variance_ratio(ref, tgt).std())
    out["var_ratio_total"] = float(a.var(0, ddof=1).sum() / max(tgt.var(0, ddof=1).sum(), np.finfo(np.float64).tiny))
    if fitted_target is not None:
        out["collapse_fraction"] = nearest_sample_fraction(a, fitted_target)
    out["num_eval"] = k
    return out
