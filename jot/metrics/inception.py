"""InceptionV3 in its FID variant (the network of TTUR / pytorch-fid), Flax NNX, NHWC.

This is the network behind every published FID number: torchvision's ``Inception3`` with the
blocks patched as in pytorch-fid's ``fid_inception_v3`` (``FIDInceptionA``/``C`` average-pool
without counting the zero padding; ``FIDInceptionE_1`` the same; ``FIDInceptionE_2`` max-pools
in its pool branch), weights ``pt_inception-2015-12-05-6726825d.pth`` (the TensorFlow graph of
2015-12-05, ported). ``InceptionV3(x)`` maps ``(B, 299, 299, 3)`` images in ``[-1, 1]`` to the
``(B, 2048)`` pool3 features (the global average pool after ``Mixed_7c``); the 1008-class head is
not built. Resizing and scaling to ``[-1, 1]`` are in :mod:`jot.metrics.fid`.

Attribute names follow the PyTorch modules (``Conv2d_1a_3x3``, ``Mixed_5b.branch5x5_1``, each
``BasicConv2d`` a bias-free ``conv`` and an eval-mode ``bn`` with ``eps = 0.001``), so
``from_torch_state_dict`` maps a PyTorch state dict onto the module by renaming the leaves
(``conv.weight`` OIHW -> ``conv.kernel`` HWIO, ``bn.weight`` / ``bias`` / ``running_mean`` /
``running_var`` -> ``bn.scale`` / ``bias`` / ``mean`` / ``var``). BatchNorm is kept as it is
(not folded into the convolutions), so the arithmetic is PyTorch's.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jot.errors import UserError

BN_EPS = 1e-3
FEATURE_DIM = 2048
DEFAULT_PRECISION = jax.lax.Precision.HIGHEST


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def max_pool(x: jax.Array, *, stride: int, padding: int = 0) -> jax.Array:
    """``F.max_pool2d(x, 3, stride, padding)`` (padding counts as ``-inf``)."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pad)


def avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """``F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`` (TensorFlow's average pool)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    return total / count


class BasicConv2d(nnx.Module):
    """``relu(bn(conv(x)))``: a bias-free convolution and an eval-mode BatchNorm (``eps = 0.001``)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], *, stride: int = 1,
                 padding: int | tuple[int, int] = 0, precision=DEFAULT_PRECISION, rngs: nnx.Rngs):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(cin, cout, _pair(kernel), strides=stride, padding=((ph, ph), (pw, pw)),
                             use_bias=False, precision=precision, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, use_running_average=True, epsilon=BN_EPS, use_fast_variance=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


class InceptionA(nnx.Module):
    """``FIDInceptionA`` (``Mixed_5b/c/d``): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, cin: int, pool_features: int, *, precision, rngs: nnx.Rngs):
        c = {"precision": precision, "rngs": rngs}
        self.branch1x1 = BasicConv2d(cin, 64, 1, **c)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, **c)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, **c)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **c)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **c)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, **c)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, **c)

    def __call__(self, x: jax.Array) -> jax.Array:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(avg_pool_exclude_pad(x))
        return jnp.concatenate([self.branch1x1(x), b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    """torchvision's ``InceptionB`` (``Mixed_6a``): the 35 -> 17 grid reduction."""

    def __init__(self, cin: int, *, precision, rngs: nnx.Rngs):
        c = {"precision": precision, "rngs": rngs}
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, **c)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **c)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **c)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, **c)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), b3, max_pool(x, stride=2)], axis=-1)


class InceptionC(nnx.Module):
    """``FIDInceptionC`` (``Mixed_6b..e``): factorised 7x7 branches with ``c7`` channels."""

    def __init__(self, cin: int, c7: int, *, precision, rngs: nnx.Rngs):
        c = {"precision": precision, "rngs": rngs}
        self.branch1x1 = BasicConv2d(cin, 192, 1, **c)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, **c)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **c)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), **c)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, **c)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **c)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **c)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **c)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), **c)
        self.branch_pool = BasicConv2d(cin, 192, 1, **c)

    def __call__(self, x: jax.Array) -> jax.Array:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        bp = self.branch_pool(avg_pool_exclude_pad(x))
        return jnp.concatenate([self.branch1x1(x), b7, d, bp], axis=-1)


class InceptionD(nnx.Module):
    """torchvision's ``InceptionD`` (``Mixed_7a``): the 17 -> 8 grid reduction."""

    def __init__(self, cin: int, *, precision, rngs: nnx.Rngs):
        c = {"precision": precision, "rngs": rngs}
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, **c)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, **c)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, **c)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), **c)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), **c)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, **c)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, max_pool(x, stride=2)], axis=-1)


class InceptionE(nnx.Module):
    """``FIDInceptionE_1`` (``pool="avg"``, ``Mixed_7b``) or ``FIDInceptionE_2`` (``pool="max"``, ``Mixed_7c``)."""

    def __init__(self, cin: int, *, pool: str, precision, rngs: nnx.Rngs):
        if pool not in ("avg", "max"):
            raise ValueError(f"pool={pool!r}; expected 'avg' (FIDInceptionE_1) or 'max' (FIDInceptionE_2).")
        self.pool = pool
        c = {"precision": precision, "rngs": rngs}
        self.branch1x1 = BasicConv2d(cin, 320, 1, **c)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, **c)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **c)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **c)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, **c)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, **c)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **c)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **c)
        self.branch_pool = BasicConv2d(cin, 192, 1, **c)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = jnp.concatenate([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], axis=-1)
        pooled = avg_pool_exclude_pad(x) if self.pool == "avg" else max_pool(x, stride=1, padding=1)
        return jnp.concatenate([self.branch1x1(x), b3, d, self.branch_pool(pooled)], axis=-1)


class InceptionV3(nnx.Module):
    """The FID InceptionV3 up to pool3: ``(B, H, W, 3)`` in ``[-1, 1]`` -> ``(B, 2048)``.

    Made for ``H = W = 299`` (what the FID convention feeds it); being convolutional with a
    global pool, it runs on any size from 75 up.
    """

    def __init__(self, *, precision=DEFAULT_PRECISION, rngs: nnx.Rngs):
        c = {"precision": precision, "rngs": rngs}
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, **c)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, **c)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, **c)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, **c)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, **c)
        self.Mixed_5b = InceptionA(192, 32, **c)
        self.Mixed_5c = InceptionA(256, 64, **c)
        self.Mixed_5d = InceptionA(288, 64, **c)
        self.Mixed_6a = InceptionB(288, **c)
        self.Mixed_6b = InceptionC(768, 128, **c)
        self.Mixed_6c = InceptionC(768, 160, **c)
        self.Mixed_6d = InceptionC(768, 160, **c)
        self.Mixed_6e = InceptionC(768, 192, **c)
        self.Mixed_7a = InceptionD(768, **c)
        self.Mixed_7b = InceptionE(1280, pool="avg", **c)
        self.Mixed_7c = InceptionE(2048, pool="max", **c)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = max_pool(x, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = max_pool(x, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return jnp.mean(x, axis=(1, 2))


# --------------------------------------------------------------------------- PyTorch weights

# The PyTorch leaf -> the Flax leaf of the same ``BasicConv2d`` sub-module.
LEAVES = {"conv.weight": "conv.kernel", "bn.weight": "bn.scale", "bn.bias": "bn.bias",
          "bn.running_mean": "bn.mean", "bn.running_var": "bn.var"}
# State-dict entries that are not part of the pool3 network: the 1008-class head and BN's counters.
IGNORED_SUFFIXES = (".num_batches_tracked",)
IGNORED_KEYS = ("fc.weight", "fc.bias")

_MAX_LISTED = 20


def is_ignored(torch_name: str) -> bool:
    return torch_name in IGNORED_KEYS or torch_name.endswith(IGNORED_SUFFIXES)


def flax_name(torch_name: str) -> str | None:
    """``Mixed_5b.branch1x1.conv.weight`` -> ``Mixed_5b.branch1x1.conv.kernel``; None for an unknown leaf."""
    for torch_leaf, flax_leaf in LEAVES.items():
        if torch_name.endswith("." + torch_leaf):
            return torch_name[: -len(torch_leaf)] + flax_leaf
    return None


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], *, source: str,
                          precision=DEFAULT_PRECISION) -> InceptionV3:
    """An ``InceptionV3`` holding the tensors of a pytorch-fid ``fid_inception_v3().state_dict()``.

    ``state_dict`` maps PyTorch names to numpy arrays; ``fc.*`` and ``*.num_batches_tracked`` are
    skipped. Raises ``UserError`` (naming ``source``) listing every missing, unknown or mis-shaped
    tensor, so a file of some other network is refused as a whole.
    """
    abstract = nnx.eval_shape(lambda: InceptionV3(precision=precision, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    targets = nnx.traversals.flatten_mapping(state.to_pure_dict())
    by_name = {".".join(map(str, path)): path for path in targets}
    values: dict[tuple, jax.Array] = {}
    seen: set[tuple] = set()
    problems: list[str] = []
    for torch_name, array in state_dict.items():
        if is_ignored(torch_name):
            continue
        name = flax_name(torch_name)
        array = np.asarray(array)
        if name not in by_name:
            problems.append(f"unexpected tensor {torch_name!r} {tuple(array.shape)}")
            continue
        path = by_name[name]
        seen.add(path)
        target = targets[path]
        value = array.transpose(2, 3, 1, 0) if name.endswith(".kernel") and array.ndim == 4 else array
        if value.shape != tuple(target.shape):
            problems.append(f"{torch_name!r} has shape {tuple(array.shape)}; the FID InceptionV3 expects "
                            f"{tuple(target.shape)} (as {name!r})")
            continue
        values[path] = jnp.asarray(value, target.dtype)
    for name, path in by_name.items():
        if path not in seen:
            problems.append(f"missing tensor for {name!r} {tuple(targets[path].shape)}")
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise UserError(f"{source} is not a state dict of pytorch-fid's FID InceptionV3 ({len(problems)} problems); "
                        f"expected the tensors of pt_inception-2015-12-05-6726825d.pth:\n  {listed}{more}")
    state.replace_by_pure_dict(nnx.traversals.unflatten_mapping(values))
    return nnx.merge(graphdef, state)
