"""Offline thin -> thick digits: an unpaired translation benchmark with ground truth.

Built from scikit-learn's ``load_digits`` (1797 8x8 images, 17 grey levels, 10 classes; no
download): each image is upsampled to ``size x size`` (bilinear, ``scipy.ndimage.zoom``) and
mapped to ``[-1, 1]``: that is the *thin* domain. Its *thick* twin is a grey dilation of the
upsampled image with a square footprint of side ``1 + 2 round(thickness * size / 16)``
(``thickness`` in original 8x8 pixels).

The underlying images are split once (``config.data.split_seed``) into three disjoint parts:
source training images (thin only), target training images (thick only) and a test set that
keeps each thin image's true thick twin and class label. So the training sets are unpaired
(no underlying image in both), and translations can be scored against the true twin (PSNR),
by class (a classifier fit on the target training set) and in distribution.

``train_batch(step)`` gives ``{"x": thin, "y": thick}`` (shape ``(B, size, size, 1)``);
``eval_data()`` gives ``{"x": thin test, "y": thick twins, "label": classes}``.
"""
from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits

from jot.data.images import index_batch, shuffled_indices


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
    """The fixed split (arrays NHWC float32 in ``[-1, 1]``, labels int32, and the indices of the
    underlying ``load_digits`` images in each part)."""

    source_train: np.ndarray
    source_labels: np.ndarray
    target_train: np.ndarray
    target_labels: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_labels: np.ndarray
    indices: tuple[np.ndarray, np.ndarray, np.ndarray]


def thin_and_thick(size: int = 32, thickness: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 1797 digits as ``(thin, thick, labels)``, images ``(N, size, size, 1)`` in ``[-1, 1]``."""
    if size < 8 or size % 8:
        raise ValueError(f"config.data.size={size}; the digits benchmark needs a multiple of 8 (e.g. 16 or 32).")
    digits = load_digits()
    up = np.stack([ndimage.zoom(img, size / 8, order=1) for img in digits.images.astype(np.float64)])
    thin = np.clip(up / 16.0, 0.0, 1.0) * 2.0 - 1.0
    side = 1 + 2 * int(round(thickness * size / 16))
    thick = ndimage.grey_dilation(thin, size=(1, side, side))
    return thin[..., None].astype(np.float32), thick[..., None].astype(np.float32), digits.target.astype(np.int32)


def split(size: int = 32, thickness: float = 1.0, split_seed: int = 0,
          fractions: tuple[float, float] = (0.4, 0.4)) -> DigitsSplit:
    """Splits the underlying images into source-train / target-train / test (disjoint)."""
    thin, thick, labels = thin_and_thick(size, thickness)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    n_src, n_tgt = int(fractions[0] * len(order)), int(fractions[1] * len(order))
    src, tgt, test = order[:n_src], order[n_src:n_src + n_tgt], order[n_src + n_tgt:]
    return DigitsSplit(thin[src], labels[src], thick[tgt], labels[tgt], thin[test], thick[test], labels[test],
                      (src, tgt, test))


class DigitsDataset:
    """Unpaired thin/thick batches over a ``DigitsSplit`` (see the module docstring)."""

    paired = True  # eval_data()["y"][i] is the thick twin of eval_data()["x"][i]

    def __init__(self, data: DigitsSplit, *, batch_size: int, seed: int):
        self.split, self.batch_size = data, batch_size
        self._x = shuffled_indices(len(data.source_train), seed)
        self._y = shuffled_indices(len(data.target_train), seed + 1)

    def train_batch(self, step: int, keys=("x", "y")) -> dict[str, np.ndarray]:
        pools = {"x": (self.split.source_train, self._x), "y": (self.split.target_train, self._y)}
        return {k: pools[k][0][index_batch(pools[k][1], step, self.batch_size)] for k in keys}

    def eval_data(self) -> dict[str, np.ndarray]:
        return {"x": self.split.test_x, "y": self.split.test_y, "label": self.split.test_labels}


def build(config: ml_collections.ConfigDict) -> DigitsDataset:
    """``config.data``: ``size`` (32), ``thickness`` (1.0), ``split_seed`` (0)."""
    data = config.data
    digits = split(data.get("size", 32), data.get("thickness", 1.0), data.get("split_seed", 0))
    return DigitsDataset(digits, batch_size=config.train.batch_size // jax.process_count(), seed=config.seed)
