"""Point-cloud datasets: the 2D benchmarks of DIOTM and user point clouds from ``.npz`` files.

=============  ===================  =================================================
name           source               target
=============  ===================  =================================================
``g8g``        N(0, I)              8 Gaussians on a circle of radius 12, cov 0.4 I
``g25g``       N(0, I)              25 Gaussians on {-6,-3,0,3,6}^2, cov 0.005 I
``moon_spiral`` two moons (x10, centred, noise 0.5)  spiral: theta = 3 pi sqrt(U) - pi/2,
                                    r = theta + pi, noise 0.25
``g_circles``  N(0, I)              circles of radius 4 and 8 (equal mass), noise 0.2
``gaussians``  N(source_mean, I)    N(target_mean, target_std^2 I) (dimension from the means)
``points``     ``npz:PATH``         ``npz:PATH`` (array under key ``x``, or the file's only array)
=============  ===================  =================================================

Samplers draw fresh points for every step from ``numpy.random.default_rng([seed, step,
stream])``, so a batch is a pure function of the step (exact resume) and the same for any
number of processes (each keeps its slice). Finite
point clouds hold out ``eval_size`` points of each side for evaluation and sample training
batches with replacement from the rest.
"""
import os
from typing import Callable

import ml_collections
import numpy as np

Sampler = Callable[[np.random.Generator, int], np.ndarray]

_TRAIN, _EVAL = 0, 1


def standard_normal(dim: int = 2) -> Sampler:
    return lambda rng, n: rng.standard_normal((n, dim))


def gaussian_mixture(centers: np.ndarray, std: float) -> Sampler:
    centers = np.asarray(centers, dtype=np.float64)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        idx = rng.integers(0, len(centers), size=n)
        return centers[idx] + std * rng.standard_normal((n, centers.shape[1]))

    return sample


def eight_gaussians(radius: float = 12.0, var: float = 0.4) -> Sampler:
    angles = 2 * np.pi * np.arange(8) / 8
    return gaussian_mixture(radius * np.stack([np.cos(angles), np.sin(angles)], 1), np.sqrt(var))


def grid_gaussians(values=(-6.0, -3.0, 0.0, 3.0, 6.0), var: float = 0.005) -> Sampler:
    gx, gy = np.meshgrid(values, values, indexing="ij")
    return gaussian_mixture(np.stack([gx.ravel(), gy.ravel()], 1), np.sqrt(var))


def two_moons(scale: float = 10.0, noise: float = 0.5) -> Sampler:
    """Two interleaved half circles (unit radius, as scikit-learn draws them), scaled and
    centred at the origin, plus Gaussian noise of std ``noise`` after scaling."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        upper = rng.random(n) < 0.5
        a = np.pi * rng.random(n)
        pts = np.where(
            upper[:, None],
            np.stack([np.cos(a), np.sin(a)], 1),
            np.stack([1.0 - np.cos(a), 0.5 - np.sin(a)], 1),
        )
        pts = scale * (pts - np.array([0.5, 0.25]))
        return pts + noise * rng.standard_normal((n, 2))

    return sample


def spiral(noise: float = 0.25) -> Sampler:
    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        theta = np.sqrt(rng.random(n)) * 3 * np.pi - np.pi / 2
        r = theta + np.pi
        pts = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
        return pts + noise * rng.standard_normal((n, 2))

    return sample


def circles(radii=(4.0, 8.0), noise: float = 0.2) -> Sampler:
    radii = np.asarray(radii, dtype=np.float64)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        r = radii[rng.integers(0, len(radii), size=n)]
        a = 2 * np.pi * rng.random(n)
        pts = r[:, None] * np.stack([np.cos(a), np.sin(a)], 1)
        return pts + noise * rng.standard_normal((n, 2))

    return sample


def gaussian(mean, std: float = 1.0) -> Sampler:
    mean = np.asarray(mean, dtype=np.float64)
    return lambda rng, n: mean + std * rng.standard_normal((n, mean.shape[0]))


BENCHMARKS: dict[str, tuple[Callable[[], Sampler], Callable[[], Sampler]]] = {
    "g8g": (standard_normal, eight_gaussians),
    "g25g": (standard_normal, grid_gaussians),
    "moon_spiral": (two_moons, spiral),
    "g_circles": (standard_normal, circles),
}


def load_points(spec: str, *, role: str) -> np.ndarray:
    """Reads ``npz:PATH``: the array under key ``x``, or the file's only array, shape ``[n, d]``.

    Raises ``jot.errors.UserError`` naming the file for anything but a real ``.npz`` archive
    (e.g. an ``.npy`` file renamed) and for points that are not real numbers, are not finite
    or do not fit in float32 (the dtype the models see)."""
    from jot.errors import UserError, UserFileNotFoundError

    if not isinstance(spec, str) or not spec.startswith("npz:"):
        raise UserError(
            f"config.data.{role}={spec!r} is not a point-cloud spec; expected 'npz:/path/to/file.npz' "
            "holding an array of shape [n, d] under key 'x' (or as the file's only array)."
        )
    path = spec[len("npz:"):]
    if not os.path.isfile(path):
        raise UserFileNotFoundError(
            f"config.data.{role}: no file at {path!r}; expected an .npz with an [n, d] array under key 'x' "
            "(np.savez(path, x=points))."
        )
    how = "save the points with np.savez(path, x=points)"
    try:
        f = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"config.data.{role}: {path} is not a readable .npz archive ({e}); {how}.") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise UserError(
            f"config.data.{role}: {path} is a single .npy array, not an .npz archive; {how} "
            "(np.save writes .npy, np.savez writes .npz)."
        )
    try:
        with f:
            keys = list(f.keys())
            if "x" in keys:
                arr = f["x"]
            elif len(keys) == 1:
                arr = f[keys[0]]
            else:
                raise UserError(
                    f"{path}: found arrays {keys} but none named 'x'; save the points under key 'x' "
                    "or keep a single array in the file."
                )
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"config.data.{role}: cannot read the arrays of {path} ({e}); {how}.") from e
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise UserError(f"{path}: points must have shape [n, d] with n >= 2, got {arr.shape}.")
    if np.iscomplexobj(arr):
        raise UserError(
            f"{path}: points are complex ({arr.dtype}); expected real numbers. Save the real and imaginary "
            "parts as separate coordinates if both matter."
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{path}: points must be numeric, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    bad = ~np.all(np.isfinite(arr), axis=1)
    if bad.any():
        raise UserError(
            f"{path}: {int(bad.sum())} of {len(arr)} points contain NaN or inf (first at row "
            f"{int(np.argmax(bad))}); remove or impute them before training."
        )
    big = np.any(np.abs(arr) > np.finfo(np.float32).max, axis=1)
    if big.any():
        raise UserError(
            f"{path}: {int(big.sum())} of {len(arr)} points have coordinates beyond the float32 range "
            f"(|x| > {np.finfo(np.float32).max:.3g}, first at row {int(np.argmax(big))}); they would become inf. "
            "Rescale the points (e.g. standardise each coordinate) before training."
        )
    return arr


def finite_sampler(points: np.ndarray) -> Sampler:
    return lambda rng, n: points[rng.integers(0, len(points), size=n)]


class PointClouds:
    """Unpaired source/target point clouds (``jot.data.base.Dataset``): keys ``x`` and ``y``."""

    def __init__(
        self,
        source: Sampler,
        target: Sampler,
        *,
        batch_size: int,
        seed: int,
        eval_size: int,
        eval_source: np.ndarray | None = None,
        eval_target: np.ndarray | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if batch_size % process_count:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the number of processes ({process_count})."
            )
        self.source, self.target = source, target
        self.batch_size, self.local_batch = batch_size, batch_size // process_count
        self.seed, self.eval_size = int(seed), int(eval_size)
        self.process_index = process_index
        self._eval = None
        if eval_source is not None:
            self._eval = {"x": eval_source.astype(np.float32), "y": eval_target.astype(np.float32)}
        probe = self.source(np.random.default_rng(0), 2)
        self.dim = probe.shape[1]
        if self.target(np.random.default_rng(0), 2).shape[1] != self.dim:
            raise ValueError(
                f"source points have dimension {self.dim} but target points have dimension "
                f"{self.target(np.random.default_rng(0), 2).shape[1]}; source and target must live in the same space."
            )

    def train_batch(self, step: int, keys=("x", "y")) -> dict[str, np.ndarray]:
        """This process's slice of fresh ``x`` (source) and ``y`` (target) points for ``step``.

        Each key has its own random stream, so drawing only some ``keys`` leaves the others
        unchanged. Points are cheap, so every process draws the global batch and keeps its
        slice: the global batch is the same whatever the number of processes."""
        out = {}
        lo = self.process_index * self.local_batch
        for key in keys:
            sampler, stream = {"x": (self.source, 0), "y": (self.target, 1)}[key]
            rng = np.random.default_rng([self.seed, _TRAIN, int(step), 0, stream])
            out[key] = sampler(rng, self.batch_size)[lo:lo + self.local_batch].astype(np.float32)
        return out

    def eval_data(self) -> dict[str, np.ndarray]:
        if self._eval is None:
            rng = np.random.default_rng([self.seed, _EVAL])
            self._eval = {
                "x": self.source(rng, self.eval_size).astype(np.float32),
                "y": self.target(rng, self.eval_size).astype(np.float32),
            }
        return self._eval


def _split(points: np.ndarray, eval_size: int, seed: int, role: str) -> tuple[np.ndarray, np.ndarray]:
    n_eval = min(eval_size, len(points) // 5)
    if n_eval < 1 or len(points) - n_eval < 1:
        raise ValueError(f"config.data.{role} has only {len(points)} points; need at least 5 (train + held out).")
    perm = np.random.default_rng([seed, _EVAL]).permutation(len(points))
    return points[perm[n_eval:]], points[perm[:n_eval]]


def build(config: ml_collections.ConfigDict, *, process_index: int | None = None, process_count: int | None = None):
    """Builds the point-cloud dataset named by ``config.data.name``."""
    import jax

    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    d = config.data
    common = dict(batch_size=config.train.batch_size, seed=config.seed, eval_size=d.eval_size,
                  process_index=pi, process_count=pc)
    if d.name in BENCHMARKS:
        make_src, make_tgt = BENCHMARKS[d.name]
        return PointClouds(make_src(), make_tgt(), **common)
    if d.name == "gaussians":
        return PointClouds(gaussian(d.source_mean, d.source_std), gaussian(d.target_mean, d.target_std), **common)
    if d.name == "points":
        src = load_points(d.source, role="source")
        tgt = load_points(d.target, role="target")
        if src.shape[1] != tgt.shape[1]:
            raise ValueError(
                f"source points ({d.source}) have dimension {src.shape[1]} but target points ({d.target}) "
                f"have dimension {tgt.shape[1]}; both clouds must live in the same space."
            )
        src_train, src_eval = _split(src, d.eval_size, config.seed, "source")
        tgt_train, tgt_eval = _split(tgt, d.eval_size, config.seed, "target")
        n = min(len(src_eval), len(tgt_eval))
        return PointClouds(finite_sampler(src_train), finite_sampler(tgt_train), eval_source=src_eval[:n],
                           eval_target=tgt_eval[:n], **common)
    raise ValueError(f"jot.data.toy has no dataset {d.name!r}; expected one of {sorted(BENCHMARKS)} or 'gaussians', 'points'.")
