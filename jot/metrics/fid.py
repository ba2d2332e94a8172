"""FID and KID in the features of the FID InceptionV3, computed as pytorch-fid computes them.

Weights, once (needs PyTorch; reads the ``.pth`` with ``torch.load(weights_only=True)``, so
nothing is unpickled beyond tensors)::

    wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    python -m jot.metrics.fid convert --src pt_inception-2015-12-05-6726825d.pth \\
        --dst ~/.cache/jot/inception_fid.safetensors

Then, with NHWC images in ``[-1, 1]`` (jot's convention; ``value_range=(0, 1)`` for ``[0, 1]``)::

    from jot.metrics.fid import FID
    FID("~/.cache/jot/inception_fid.safetensors")(images_a, images_b)  # {"fid", "kid", "kid_std"}

The pieces, each matching its reference:

- ``preprocess``: to ``[0, 1]``, grey (C = 1) repeated to RGB, bilinear resize to 299 x 299 as
  ``F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)`` (no antialiasing, up
  or down), then ``2 x - 1``: pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``;
- ``features``: the 2048-d pool3 features (``jot.metrics.inception``), batched, float64;
- ``frechet_distance`` / ``fid``: pytorch-fid's ``calculate_frechet_distance`` (``scipy.linalg.sqrtm``
  of ``S1 S2``, the ``eps`` retry for a singular product, the imaginary-part check) on the
  features' means and ``np.cov`` covariances;
- ``kid``: the unbiased MMD^2 with the cubic kernel ``(x.y / d + 1)^3`` (Binkowski et al. 2018)
  over random subsets, mean and std, as torch-fidelity computes it (``RandomState(seed)``, subsets
  drawn without replacement, first set then second).

This FD differs from ``jot.metrics.frechet`` only in its feature space and its matrix square root:
that one works on small random-feature covariances with a symmetric eigendecomposition, this one
reproduces pytorch-fid's numbers (``sqrtm`` of the non-symmetric product) on 2048-d Inception features.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import scipy.linalg
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jot import files
from jot.errors import UserError, UserFileNotFoundError
from jot.metrics import inception

TORCH_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
TORCH_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{TORCH_WEIGHTS}"
DEFAULT_WEIGHTS = "~/.cache/jot/inception_fid.safetensors"
SIZE = 299


# --------------------------------------------------------------------------- weights


def _convert_command(dst: str) -> str:
    return f"python -m jot.metrics.fid convert --src {TORCH_WEIGHTS} --dst {dst}"


def load_inception(path: str | None = None, *, precision=inception.DEFAULT_PRECISION) -> inception.InceptionV3:
    """The FID InceptionV3 with the weights of the safetensors file ``path`` (default ``DEFAULT_WEIGHTS``).

    Raises ``UserFileNotFoundError`` naming the file, where to get the PyTorch weights and the
    one-time conversion command when it is missing; ``UserError`` when it is not the FID network.
    """
    path = os.path.expanduser(path or DEFAULT_WEIGHTS)
    if not os.path.isfile(path):
        raise UserFileNotFoundError(
            f"FID Inception weights not found: {path}. Download pytorch-fid's FID weights {TORCH_WEIGHTS} "
            f"(the pytorch-fid release: {TORCH_WEIGHTS_URL}) and convert them once to safetensors (needs torch): "
            f"{_convert_command(path)}"
        )
    if path.endswith((".pth", ".pt", ".bin", ".ckpt")):
        raise UserError(f"{path} is a pickled PyTorch file; jot reads safetensors only. Convert it once: "
                        f"python -m jot.metrics.fid convert --src {path} --dst inception_fid.safetensors")
    try:
        tensors = safetensors.numpy.load_file(path)
    except Exception as e:  # safetensors raises its own error types for a bad header or a truncated file
        raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); recreate it with "
                        f"{_convert_command(path)}") from e
    return inception.from_torch_state_dict(tensors, source=path, precision=precision)


def convert(src: str, dst: str) -> None:
    """Writes the FID InceptionV3 tensors of the PyTorch state dict ``src`` (pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth``) to the safetensors file ``dst``, atomically.

    ``src`` is read with ``torch.load(map_location="cpu", weights_only=True)`` only. The 1008-class
    head and BatchNorm's ``num_batches_tracked`` are dropped; the rest must be exactly the network's
    tensors (checked against ``InceptionV3`` before anything is written), else ``UserError``.
    """
    src = os.path.expanduser(src)
    dst = os.path.expanduser(dst)
    if not os.path.isfile(src):
        raise UserFileNotFoundError(f"{src} not found; download {TORCH_WEIGHTS} from {TORCH_WEIGHTS_URL}.")
    try:
        import torch
    except ImportError as e:
        raise UserError("converting the .pth weights needs PyTorch (pip install torch); the conversion is "
                        "done once, jot itself reads the safetensors file.") from e
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError for refused objects, RuntimeError/EOFError for other files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{src} could not be read as a PyTorch state dict with torch.load(weights_only=True) "
                        f"({type(e).__name__}: {first}); expected {TORCH_WEIGHTS}.") from e
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise UserError(f"{src} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors); "
                        f"expected {TORCH_WEIGHTS}.")
    tensors = {k: v.detach().to(torch.float32).contiguous().numpy() for k, v in obj.items()
               if not inception.is_ignored(k)}
    inception.from_torch_state_dict(tensors, source=src)  # raises on a missing, unknown or mis-shaped tensor
    files.write_bytes(dst, safetensors.numpy.save(tensors, metadata={"source": os.path.basename(src)}))


# --------------------------------------------------------------------------- preprocessing


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of torch's bilinear ``align_corners=False`` along one axis, in
    float32 as PyTorch's CPU kernel computes them: ``scale = float32(n_in) / n_out``, the source
    position ``max(scale (i + 0.5) - 0.5, 0)`` rounded once (a fused multiply-add), two taps."""
    scale = np.float32(n_in) / np.float32(n_out)
    half = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    src = np.maximum((np.float64(scale) * half.astype(np.float64) - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, (np.float32(1) - w1), w1


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
    """``F.interpolate(x, (height, width), mode="bilinear", align_corners=False)`` for NHWC ``x``:
    two taps per axis at half-pixel centres, no antialiasing (``jax.image.resize`` antialiases when
    it shrinks, so it differs from PyTorch for downsampling)."""
    h0, h1, hw0, hw1 = _linear_taps(x.shape[1], height)
    w0, w1, ww0, ww1 = _linear_taps(x.shape[2], width)
    x = x[:, :, w0] * ww0[:, None] + x[:, :, w1] * ww1[:, None]
    return x[:, h0] * hw0[:, None, None] + x[:, h1] * hw1[:, None, None]


@functools.partial(jax.jit, static_argnames=("value_range",))
def preprocess(images: jax.Array, value_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
    """NHWC images with values in ``value_range`` (1 or 3 channels, any size) -> ``(B, 299, 299, 3)``
    in ``[-1, 1]``, exactly as pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``
    treats ``[0, 1]`` input: scale to ``[0, 1]``, resize, ``2 x - 1``."""
    lo, hi = value_range
    x = jnp.asarray(images, jnp.float32)
    if (lo, hi) != (0, 1):
        x = (x - lo) / (hi - lo)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (SIZE, SIZE):
        x = resize_bilinear(x, SIZE, SIZE)
    return 2 * x - 1


# --------------------------------------------------------------------------- features


@functools.partial(jax.jit, static_argnums=0)
def _pool3(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)


def features(images: np.ndarray, net: inception.InceptionV3, *, batch_size: int = 50,
             value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """The ``(N, 2048)`` float64 pool3 features of NHWC ``images`` (see ``preprocess``).

    Runs in batches of ``min(batch_size, N)`` images (the last one padded, so one compiled
    function serves a set); a batch is split over this process's devices when their number
    divides it, with the network replicated. Each process embeds the images it is given.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images of shape {images.shape}; expected NHWC with 1 or 3 channels.")
    n = len(images)
    if n == 0:
        return np.zeros((0, inception.FEATURE_DIM), np.float64)
    value_range = tuple(float(v) for v in value_range)
    if len(value_range) != 2 or not value_range[1] > value_range[0]:
        raise ValueError(f"value_range={value_range}; expected (low, high) with high > low, e.g. (-1, 1) or (0, 1).")
    bs = max(1, min(int(batch_size), n))
    graphdef, state = nnx.split(net)
    devices = jax.local_devices()
    batch_sharding = None
    if len(devices) > 1 and bs % len(devices) == 0:
        mesh = Mesh(np.asarray(devices), ("data",))
        batch_sharding = NamedSharding(mesh, P("data"))
        state = jax.device_put(state, NamedSharding(mesh, P()))
    out = []
    for start in range(0, n, bs):
        batch = images[start: start + bs]
        if len(batch) < bs:
            batch = np.concatenate([batch, np.zeros((bs - len(batch),) + batch.shape[1:], batch.dtype)])
        x = preprocess(jax.device_put(batch, batch_sharding), value_range=value_range)
        out.append(_pool3(graphdef, state, x))
    return np.concatenate([np.asarray(f, np.float64) for f in out])[:n]


# --------------------------------------------------------------------------- distances


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """``||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))``, as pytorch-fid's ``calculate_frechet_distance``.

    When ``sqrtm(S1 S2)`` is not finite (a singular product) it is retried with ``eps`` added to both
    diagonals (with a warning); an imaginary part is dropped when the diagonal's is below ``1e-3``,
    else ``ValueError``.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"moments of different sizes: means {mu1.shape} and {mu2.shape}, covariances "
                         f"{sigma1.shape} and {sigma2.shape}.")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: the covariance product is singular; adding {eps} to the diagonals.", RuntimeWarning,
                      stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm(S1 S2) has an imaginary component of {np.max(np.abs(covmean.imag))}.")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _as_features(f: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(f, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"{name} has shape {f.shape}; expected (N, D) features with N >= 2.")
    return f


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two ``(N, D)`` feature sets: ``frechet_distance`` of their means and ``np.cov`` covariances."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def kid(feats_a: np.ndarray, feats_b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 2020) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` random subset pairs of the unbiased MMD^2 with the kernel
    ``k(x, y) = (x.y / d + 1)^3``, as torch-fidelity's ``kid_features_to_metric`` (its default seed).

    Each subset pair draws ``m = min(subset_size, N_a, N_b)`` rows of ``feats_a`` then of ``feats_b``
    without replacement from ``np.random.RandomState(seed)``. With ``m`` below ``subset_size`` (small
    sets) the value is still unbiased but noisier, and comparable only at the same ``m``.
    """
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}.")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"subsets={subsets}, subset_size={subset_size}; expected >= 1 and >= 2.")
    m, d = min(subset_size, len(a), len(b)), a.shape[1]
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
        mmds[i] = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    return float(mmds.mean()), float(mmds.std())


class FID:
    """FID and KID between image sets with the weights ``weights`` (a safetensors file, see ``load_inception``)::

        FID("inception_fid.safetensors")(images_a, images_b)  # {"fid": ..., "kid": ..., "kid_std": ...}

    Images are NHWC with values in ``value_range``; ``kid_*`` are ``kid``'s arguments.
    """

    def __init__(self, weights: str | None = None, *, batch_size: int = 50,
                 value_range: tuple[float, float] = (-1.0, 1.0), kid_subsets: int = 100,
                 kid_subset_size: int = 1000, seed: int = 2020):
        self.net = load_inception(weights)
        self.batch_size, self.value_range = batch_size, tuple(value_range)
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed

    def features(self, images: np.ndarray) -> np.ndarray:
        return features(images, self.net, batch_size=self.batch_size, value_range=self.value_range)

    def __call__(self, images_a: np.ndarray, images_b: np.ndarray) -> dict[str, float]:
        fa, fb = self.features(images_a), self.features(images_b)
        k, k_std = kid(fa, fb, subsets=self.kid_subsets, subset_size=self.kid_subset_size, seed=self.seed)
        return {"fid": fid(fa, fb), "kid": k, "kid_std": k_std}


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jot.metrics.fid", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help=f"convert pytorch-fid's {TORCH_WEIGHTS} to safetensors (once)")
    conv.add_argument("--src", required=True, help=f"the PyTorch state dict, {TORCH_WEIGHTS} ({TORCH_WEIGHTS_URL})")
    conv.add_argument("--dst", default=DEFAULT_WEIGHTS,
                      help=f"the safetensors file to write (default {DEFAULT_WEIGHTS})")
    args = parser.parse_args(argv)
    try:
        convert(args.src, args.dst)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = os.path.getsize(os.path.expanduser(args.dst))
    print(f"wrote {os.path.expanduser(args.dst)} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
