"""OT maps between two sets of latents, fitted from samples (used by OT-ALD and prior-OT).

``DEFAULT_LATENT_MAP`` (``"gaussian"``) is the map ``fit``, ``jot.translate.otald.fit``,
``jot.translate.prior_ot.fit``, the translate config and the benchmarks use unless told
otherwise. All maps are pytrees, so a fitted map is an ordinary argument of a jitted translator,
and all accept arrays ``[n, ...]`` of the shape they were fitted on:

- ``GaussianMap`` (``"gaussian"``): the closed-form (Bures / Monge) OT map between Gaussians
  fitted to the two clouds by mean and shrunk covariance, ``M(z) = m2 + A (z - m1)`` with
  ``A = S1^{-1/2} (S1^{1/2} S2 S1^{1/2})^{1/2} S1^{-1/2}`` (symmetric positive definite). Exact
  when both laws are Gaussian; affine, so it moves every latent by the same linear rule and
  keeps each image's own latent instead of averaging towards fitted target samples. The
  covariances are shrunk towards their diagonals, ``(1 - s) S + s diag(S)``; ``shrinkage="auto"``
  (the default) takes ``s`` per cloud from the Ledoit-Wolf estimate. ``A S1 A = S2`` holds on the
  fitted points only: ``S1^{-1/2}`` amplifies the directions in which the sample covariance
  underestimates the source's, so with a small fixed ``s`` the pushed variance on held-out points
  is too large when ``n ~ d``. Held-out ``var(M z) / var(y)`` per coordinate, ``d = 256``,
  ``N(0, I) -> N(m, C)``: ``s = 0.05`` gives 2.5 (``n = 300``) and 1.4 (``n = 718``) for
  ``C = I``, 2.5 / 1.4 for a diagonal ``C`` and 2.2 / 1.3 for a rotated one; ``"auto"`` gives
  1.01 in all six cases (``jot.metrics.transport``; ``tests/test_translate.py``).
- ``EntropicMap`` (``"entropic"``): a diagonal affine map followed by a debiased entropic
  correction (Pooladian, Cuturi & Niles-Weed 2022, "Debiaser beware: pitfalls of centering
  regularized transport maps"). With the per-coordinate means and standard
  deviations of the two clouds, ``B(z) = m2 + (s2 / s1) (z - m1)`` (the OT map between the
  fitted diagonal Gaussians), ``u_i = B(x_i)`` and Sinkhorn potentials ``g`` of ``u -> y`` and
  ``h`` of ``u -> u`` (the self-transport), both with the same ``eps``:

      M(z) = B(z) + sum_j softmax_j((g_j - ||B(z) - y_j||^2) / eps) y_j
                  - sum_i softmax_i((h_i - ||B(z) - u_i||^2) / eps) u_i.

  The second term is the out-of-sample entropic map of Pooladian & Niles-Weed (ott's
  ``to_dual_potentials().transport``) and the third the same map of ``u`` onto itself. The plain
  entropic map is a convex combination of the fitted targets: with a few hundred samples in
  ``d ~ 256`` it either sits on single fitted targets (small ``eps``) or averages many of them
  and shrinks towards their mean (large ``eps``; ``var(M z) / var(y)`` ~0.4 per coordinate at
  ``eps = 0.01`` of the mean cost for ``N(0, I) -> N(m, I)``, ``n = 300``, ``d = 256``), and its
  held-out sample ``W2^2`` then looks *better* than that of the true map. The subtracted self-map carries the same bias, so as ``eps`` grows ``M``
  tends to ``B`` instead of to the target mean, and on the fitted points with ``eps -> 0`` it is
  the discrete OT assignment. ``eps``: by default set so that the rows of the Gibbs kernel
  ``softmax_j(-||u_i - y_j||^2 / eps)`` have a median Kish effective sample size
  ``1 / sum_j w_ij^2`` of ``neighbours`` (``kernel_epsilon``): the correction is then an average
  over ~``neighbours`` fitted targets, local in 2-D with thousands of points and smooth in high
  dimension, where the discrete OT pairing of two clouds is mostly sampling noise (averaging
  ``k`` such displacements divides that noise's variance by ~``k``). An explicit ``epsilon`` is a
  fraction of the mean cost ``mean_ij ||u_i - y_j||^2`` instead. In low dimension with many
  samples and a map far from diagonal, the plain entropic map ``jot.ot.sinkhorn.entropic_map``
  is the more accurate of the two.
- ``jot.ot.semidiscrete.SemidiscreteMap`` (``"semidiscrete"``): semi-discrete OT onto the target
  samples (each ``z`` goes to the target sample of its Laguerre cell, or with ``epsilon > 0`` to
  a softmax average of them): by construction its outputs are (averages of) fitted targets.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jot.ot import semidiscrete, sinkhorn

METHODS = ("gaussian", "entropic", "semidiscrete")
DEFAULT_LATENT_MAP = "gaussian"
DEFAULT_NEIGHBOURS = 30  # entropic map: Kish effective sample size of the kernel rows (sets eps)
SEMIDISCRETE_EPSILON = 0.01  # semidiscrete map: soft-min temperature when ``epsilon`` is None

# ``sinkhorn.solve`` compiled once per shape, with the absolute ``epsilon`` a traced argument.
_solve = jax.jit(sinkhorn.solve, static_argnames=("max_iterations", "threshold"))


def _sq_cost(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[n, m]`` squared distances ``||a_i - b_j||^2``."""
    cross = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * cross


@flax.struct.dataclass
class EntropicMap:
    """Diagonal affine map plus debiased entropic correction (see the module docstring)."""

    m1: jax.Array  # [d] source mean
    scale: jax.Array  # [d] s2 / s1
    m2: jax.Array  # [d] target mean
    y: jax.Array  # [m, d] fitted targets
    g: jax.Array  # [m] target potential of Sinkhorn(u -> y)
    u: jax.Array  # [n, d] B(fitted sources)
    h: jax.Array  # [n] target potential of Sinkhorn(u -> u)
    epsilon: jax.Array  # [] absolute entropic regularisation

    def base(self, z: jax.Array) -> jax.Array:
        """``B(z) = m2 + (s2 / s1) (z - m1)`` on flat ``[n, d]`` points."""
        return self.m2 + self.scale * (z - self.m1)

    def __call__(self, z: jax.Array) -> jax.Array:
        b = self.base(z.reshape(z.shape[0], -1))
        w = jax.nn.softmax((self.g[None, :] - _sq_cost(b, self.y)) / self.epsilon, axis=1)
        v = jax.nn.softmax((self.h[None, :] - _sq_cost(b, self.u)) / self.epsilon, axis=1)
        hi = jax.lax.Precision.HIGHEST
        return (b + jnp.dot(w, self.y, precision=hi) - jnp.dot(v, self.u, precision=hi)).reshape(z.shape)


def kernel_epsilon(u: np.ndarray, y: np.ndarray, neighbours: float, max_rows: int = 1024) -> float:
    """``eps`` at which the rows of the Gibbs kernel ``softmax_j(-||u_i - y_j||^2 / eps)`` have a
    median Kish effective sample size ``1 / sum_j w_ij^2`` of ``neighbours`` (bisection on
    ``log eps``; the median over at most ``max_rows`` rows)."""
    u, y = np.asarray(u, np.float64)[:max_rows], np.asarray(y, np.float64)
    if not 1.0 <= neighbours < len(y):
        raise ValueError(f"neighbours={neighbours} must lie in [1, {len(y)}) (the number of target samples).")
    cost = np.sum(u * u, 1)[:, None] + np.sum(y * y, 1)[None, :] - 2.0 * u @ y.T
    cost -= cost.min(1, keepdims=True)
    spread = float(np.mean(cost)) or 1.0

    def ess(log_eps: float) -> float:
        w = np.exp(-cost / np.exp(log_eps))
        w /= w.sum(1, keepdims=True)
        return float(np.median(1.0 / np.sum(w * w, 1)))

    lo, hi = np.log(spread) - 25.0, np.log(spread) + 25.0  # the ESS increases with eps
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ess(mid) < neighbours else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def entropic_map(
    x: jax.Array,
    y: jax.Array,
    *,
    epsilon: float | None = None,
    neighbours: float = DEFAULT_NEIGHBOURS,
    max_iterations: int = 2000,
) -> EntropicMap:
    """Fits the ``entropic`` map ``x -> y`` (``[n, d]`` and ``[m, d]``; see the module docstring).

    ``epsilon``: None sets ``eps`` from ``neighbours`` (``kernel_epsilon``); a float is a fraction of
    the mean cost ``mean_ij ||B(x_i) - y_j||^2``.
    """
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m1, m2 = x64.mean(0), y64.mean(0)
    s1, s2 = x64.std(0), y64.std(0)
    scale = np.where(s1 > 0, s2 / np.where(s1 > 0, s1, 1.0), 1.0)
    u64 = m2 + scale * (x64 - m1)
    if epsilon is None:
        eps = kernel_epsilon(u64, y64, neighbours)
    else:
        mean_cost = np.mean(np.sum(u64**2, 1)) + np.mean(np.sum(y64**2, 1)) - 2.0 * u64.mean(0) @ m2
        eps = float(epsilon) * float(mean_cost)
    dtype = jnp.asarray(x).dtype
    u, yj = jnp.asarray(u64, dtype), jnp.asarray(y64, dtype)
    g = _solve(u, yj, epsilon=eps, max_iterations=max_iterations).g
    h = _solve(u, u, epsilon=eps, max_iterations=max_iterations).g
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return EntropicMap(cast(m1), cast(scale), cast(m2), yj, g, u, h, cast(eps))


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


def shrinkage_intensity(x: np.ndarray, shrinkage: float | str) -> float:
    """``shrinkage`` as a number in ``[0, 1]``: ``"auto"`` is the Ledoit-Wolf intensity of
    the cloud ``x`` (``sklearn.covariance.ledoit_wolf_shrinkage``); a float or a string that
    parses as one is used as given."""
    if isinstance(shrinkage, str) and shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        return float(ledoit_wolf_shrinkage(x))
    try:
        value = float(shrinkage)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"shrinkage={shrinkage!r}; expected 'auto' (Ledoit-Wolf) or a number in [0, 1].")
    return value


def _shrunk_cov(x: np.ndarray, shrinkage: float | str) -> np.ndarray:
    """``(1 - s) S + s diag(S)``: the sample covariance shrunk towards its diagonal, ``s`` from
    ``shrinkage_intensity`` (each cloud its own ``s`` under ``"auto"``)."""
    c = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    s = shrinkage_intensity(x, shrinkage)
    return (1.0 - s) * c + s * np.diag(np.diag(c))


def _sqrtm(c: np.ndarray, power: float = 0.5) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (c + c.T))
    return (v * np.clip(w, 1e-12, None) ** power) @ v.T


def gaussian_map(x: jax.Array, y: jax.Array, shrinkage: float | str = "auto") -> GaussianMap:
    """The closed-form OT map between ``N(mean x, cov x)`` and ``N(mean y, cov y)`` (``[n, d]``
    and ``[m, d]``; covariances shrunk towards their diagonals by ``shrinkage``, ``"auto"`` or a
    number in ``[0, 1]``), computed in float64."""
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
    method: str = DEFAULT_LATENT_MAP,
    epsilon: float | None = None,
    neighbours: float = DEFAULT_NEIGHBOURS,
    rng: jax.Array | None = None,
    max_iterations: int = 2000,
    semidiscrete_steps: int = 2000,
    semidiscrete_lr: float = 1e-2,
    shrinkage: float | str = "auto",
):
    """Fits an OT map ``source -> target`` (arrays ``[n, ...]`` and ``[m, ...]`` of equal sample shape).

    ``epsilon``: ``entropic``: None sets ``eps`` from ``neighbours``, a float is a fraction of the
    mean cost; ``semidiscrete``: the soft-min temperature in per-coordinate cost units (0 = hard
    cells, None = ``SEMIDISCRETE_EPSILON``). ``shrinkage``: covariance shrinkage of ``gaussian``
    (``"auto"``: Ledoit-Wolf per cloud).
    """
    if method not in METHODS:
        raise ValueError(f"unknown OT map method {method!r}; expected one of {list(METHODS)}.")
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"source samples have shape {source.shape[1:]} but target samples {target.shape[1:]}.")
    x, y = source.reshape(source.shape[0], -1), target.reshape(target.shape[0], -1)
    if method == "entropic":
        return entropic_map(x, y, epsilon=epsilon, neighbours=neighbours, max_iterations=max_iterations)
    if method == "gaussian":
        return gaussian_map(x, y, shrinkage)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    eps = SEMIDISCRETE_EPSILON if epsilon is None else epsilon
    sd = semidiscrete.fit(x, y, rng, steps=semidiscrete_steps, lr=semidiscrete_lr, epsilon=eps)
    return ShapedMap(sd)
