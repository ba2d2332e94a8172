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

``config.data.sampler`` picks where training batches are drawn: ``"host"`` (the numpy samplers
above, the original stream) or ``"device"`` (``DEVICE_SAMPLERS``: the same distributions written
with ``jax.random``, drawn inside the jitted train step by ``PointClouds.device_batch``; a
different random stream, so the field changes results). The key of a step is
``fold_in(fold_in(fold_in(PRNGKey(seed), TRAIN), step), stream)``; the draw has the global
batch's shape, so the batch is the same for any number of processes and devices, and under the
loop's sharding each device computes only its own rows (``jax_threefry_partitionable``). ``points``
(finite clouds from files) has no device sampler and is always drawn on the host. Evaluation
data is always the numpy draw.
"""
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Sampler = Callable[[np.random.Generator, int], np.ndarray]
DeviceSampler = Callable[[jax.Array, int], jax.Array]  # (key, n) -> float32 [n, d]

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


# --------------------------------------------------------------------------- device samplers
# The numpy samplers above written with jax.random: same distributions, different streams.


def device_standard_normal(dim: int = 2) -> DeviceSampler:
    return lambda key, n: jax.random.normal(key, (n, dim), jnp.float32)


def device_gaussian_mixture(centers: np.ndarray, std: float) -> DeviceSampler:
    centers = np.asarray(centers, dtype=np.float32)

    def sample(key: jax.Array, n: int) -> jax.Array:
        k_idx, k_noise = jax.random.split(key)
        idx = jax.random.randint(k_idx, (n,), 0, len(centers))
        return jnp.asarray(centers)[idx] + np.float32(std) * jax.random.normal(k_noise, (n, centers.shape[1]))

    return sample


def device_eight_gaussians(radius: float = 12.0, var: float = 0.4) -> DeviceSampler:
    angles = 2 * np.pi * np.arange(8) / 8
    return device_gaussian_mixture(radius * np.stack([np.cos(angles), np.sin(angles)], 1), np.sqrt(var))


def device_grid_gaussians(values=(-6.0, -3.0, 0.0, 3.0, 6.0), var: float = 0.005) -> DeviceSampler:
    gx, gy = np.meshgrid(values, values, indexing="ij")
    return device_gaussian_mixture(np.stack([gx.ravel(), gy.ravel()], 1), np.sqrt(var))


def device_two_moons(scale: float = 10.0, noise: float = 0.5) -> DeviceSampler:
    def sample(key: jax.Array, n: int) -> jax.Array:
        k_side, k_angle, k_noise = jax.random.split(key, 3)
        upper = jax.random.uniform(k_side, (n,)) < 0.5
        a = jnp.pi * jax.random.uniform(k_angle, (n,))
        c, s = jnp.cos(a), jnp.sin(a)
        pts = jnp.where(upper[:, None], jnp.stack([c, s], 1), jnp.stack([1.0 - c, 0.5 - s], 1))
        pts = scale * (pts - jnp.array([0.5, 0.25], jnp.float32))
        return pts + noise * jax.random.normal(k_noise, (n, 2))

    return sample


def device_spiral(noise: float = 0.25) -> DeviceSampler:
    def sample(key: jax.Array, n: int) -> jax.Array:
        k_u, k_noise = jax.random.split(key)
        theta = jnp.sqrt(jax.random.uniform(k_u, (n,))) * 3 * jnp.pi - jnp.pi / 2
        r = theta + jnp.pi
        pts = jnp.stack([r * jnp.cos(theta), r * jnp.sin(theta)], 1)
        return pts + noise * jax.random.normal(k_noise, (n, 2))

    return sample


def device_circles(radii=(4.0, 8.0), noise: float = 0.2) -> DeviceSampler:
    radii = np.asarray(radii, dtype=np.float32)

    def sample(key: jax.Array, n: int) -> jax.Array:
        k_idx, k_angle, k_noise = jax.random.split(key, 3)
        r = jnp.asarray(radii)[jax.random.randint(k_idx, (n,), 0, len(radii))]
        a = 2 * jnp.pi * jax.random.uniform(k_angle, (n,))
        pts = r[:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], 1)
        return pts + noise * jax.random.normal(k_noise, (n, 2))

    return sample


def device_gaussian(mean, std: float = 1.0) -> DeviceSampler:
    mean = np.asarray(mean, dtype=np.float32)
    return lambda key, n: jnp.asarray(mean) + np.float32(std) * jax.random.normal(key, (n, mean.shape[0]))


DEVICE_SAMPLERS: dict[str, tuple[Callable[[], DeviceSampler], Callable[[], DeviceSampler]]] = {
    "g8g": (device_standard_normal, device_eight_gaussians),
    "g25g": (device_standard_normal, device_grid_gaussians),
    "moon_spiral": (device_two_moons, device_spiral),
    "g_circles": (device_standard_normal, device_circles),
}

SAMPLERS = ("host", "device")


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
        device_source: DeviceSampler | None = None,
        device_target: DeviceSampler | None = None,
    ):
        if batch_size % process_count:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the number of processes ({process_count})."
            )
        self.source, self.target = source, target
        self.batch_size, self.local_batch = batch_size, batch_size // process_count
        self.seed, self.eval_size = int(seed), int(eval_size)
        self.process_index = process_index
        self.device_source, self.device_target = device_source, device_target
        self._jit_device_batch = None
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

    @property
    def device_sampling(self) -> bool:
        """Whether training batches are drawn on device (``config.data.sampler="device"``)."""
        return self.device_source is not None

    def device_batch(self, step, keys=("x", "y")) -> dict[str, jax.Array]:
        """The global batch of ``step`` drawn with ``jax.random`` (traceable; ``step`` may be
        a traced integer): ``{key: float32 [batch_size, d]}``, each key from its own stream
        ``fold_in(fold_in(fold_in(PRNGKey(seed), TRAIN), step), stream)``. Only for datasets
        built with ``sampler="device"``."""
        if not self.device_sampling:
            raise ValueError("this dataset draws its batches on the host (config.data.sampler='host').")
        base = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.seed), _TRAIN), step)
        out = {}
        for key in keys:
            sampler, stream = {"x": (self.device_source, 0), "y": (self.device_target, 1)}[key]
            out[key] = sampler(jax.random.fold_in(base, stream), self.batch_size).astype(jnp.float32)
        return out

    def train_batch(self, step: int, keys=("x", "y")) -> dict[str, np.ndarray]:
        """This process's slice of fresh ``x`` (source) and ``y`` (target) points for ``step``.

        Each key has its own random stream, so drawing only some ``keys`` leaves the others
        unchanged. Points are cheap, so every process draws the global batch and keeps its
        slice: the global batch is the same whatever the number of processes. With device
        sampling this is ``device_batch(step)`` drawn by its own jitted program and brought to
        the host (equal to the loop's draw up to the rounding of the float transforms)."""
        out = {}
        lo = self.process_index * self.local_batch
        if self.device_sampling:
            if self._jit_device_batch is None:
                self._jit_device_batch = jax.jit(self.device_batch, static_argnums=1)
            drawn = self._jit_device_batch(np.int32(step), tuple(keys))
            return {k: np.asarray(v)[lo:lo + self.local_batch] for k, v in drawn.items()}
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
    """Builds the point-cloud dataset named by ``config.data.name``; ``config.data.sampler``
    (default ``"host"``) picks the numpy or the ``jax.random`` samplers for training batches."""
    from jot.errors import UserError

    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    d = config.data
    sampler = d.get("sampler", "host")
    if sampler not in SAMPLERS:
        raise UserError(f"config.data.sampler={sampler!r}: expected one of {list(SAMPLERS)}.")
    device = sampler == "device"
    common = dict(batch_size=config.train.batch_size, seed=config.seed, eval_size=d.eval_size,
                  process_index=pi, process_count=pc)
    if d.name in BENCHMARKS:
        make_src, make_tgt = BENCHMARKS[d.name]
        if device:
            dev_src, dev_tgt = DEVICE_SAMPLERS[d.name]
            common.update(device_source=dev_src(), device_target=dev_tgt())
        return PointClouds(make_src(), make_tgt(), **common)
    if d.name == "gaussians":
        if device:
            common.update(device_source=device_gaussian(d.source_mean, d.source_std),
                          device_target=device_gaussian(d.target_mean, d.target_std))
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
