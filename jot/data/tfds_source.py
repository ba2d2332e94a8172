"""``tfds.data_source`` datasets as unpaired domains (``config.data.name = "tfds"``).

Reads prepared TFDS datasets (array_record files in ``config.data.data_dir`` or the default
TFDS directory) by random access, with no TensorFlow: ``tensorflow-datasets`` alone suffices
(``pip install tensorflow-datasets``). Nothing is downloaded here: prepare the dataset first.

- ``cycle_gan/<pair>`` (e.g. ``cycle_gan/horse2zebra``): source split ``trainA``, target
  ``trainB``; ``eval_data`` from ``testA``/``testB``.
- ``celeb_a``: one split (``train``; eval ``test``) divided by a binary attribute
  (``config.data.attribute``, e.g. ``"Male"``): source = attribute false, target = true, or the
  other way round with ``config.data.source_has_attribute = True`` (Male -> Female).

``config.data.num_eval`` images per domain are held out for ``eval_data`` (the first of the
eval split); ``num_eval = -1`` takes the whole eval split (the CelebA test set of the FID
protocol).

Images are resized/centre-cropped to ``config.data.size`` (``jot.data.images.prepare``);
batches are drawn like ``jot.data.images`` (grain ``shuffle(seed).repeat()``, random access by
step), so ``train_batch(step)`` is a pure function of ``(seed, step, process)``.
"""
from __future__ import annotations

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image

from jot.data.images import index_batch, prepare


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "config.data.name='tfds' needs the tensorflow-datasets package (TensorFlow itself is not needed): "
            "pip install tensorflow-datasets. Or export the images to folders and use config.data.name='folder'."
        ) from e
    return tfds


class TfdsDataset:
    """Two domains of TFDS records as ``{"x": source, "y": target}`` batches."""

    def __init__(self, data: ml_collections.ConfigDict, *, batch_size: int, seed: int):
        tfds = _tfds()
        name, self.batch_size = data.tfds_name, batch_size
        self._prep = lambda rec: prepare(Image.fromarray(np.asarray(rec["image"])), size=data.size,
                                         channels=data.channels, resize="crop", name=name)
        source = lambda split: tfds.data_source(name, split=split, data_dir=data.get("data_dir") or None)  # noqa: E731
        if name.startswith("cycle_gan/"):
            train = {"x": (source("trainA"), None), "y": (source("trainB"), None)}
            evals = {"x": (source("testA"), None), "y": (source("testB"), None)}
        elif name == "celeb_a":
            attr = data.attribute
            train_src, eval_src = source("train"), source("test")
            flags = {s: np.array([bool(r["attributes"][attr]) for r in src]) for s, src in
                     (("train", train_src), ("test", eval_src))}
            if data.get("source_has_attribute", False):
                flags = {s: ~f for s, f in flags.items()}
            train = {"x": (train_src, np.flatnonzero(~flags["train"])), "y": (train_src, np.flatnonzero(flags["train"]))}
            evals = {"x": (eval_src, np.flatnonzero(~flags["test"])), "y": (eval_src, np.flatnonzero(flags["test"]))}
        else:
            raise ValueError(f"config.data.tfds_name={name!r}; expected 'cycle_gan/<pair>' or 'celeb_a'.")
        self._train = {}
        for i, (key, (src, idx)) in enumerate(train.items()):
            ds = grain.MapDataset.source(src) if idx is None else grain.MapDataset.source(idx).map(lambda j, s=src: s[int(j)])
            self._train[key] = ds.shuffle(seed=seed + i).repeat().map(self._prep)
        self._eval, self._num_eval = evals, data.get("num_eval", 64)

    def train_batch(self, step: int, keys=None) -> dict[str, np.ndarray]:
        keys = self._train.keys() if keys is None else keys
        return {k: np.stack(index_batch(self._train[k], step, self.batch_size)) for k in keys}

    def eval_data(self) -> dict[str, np.ndarray]:
        out = {}
        for key, (src, idx) in self._eval.items():
            idx = np.arange(len(src)) if idx is None else idx
            idx = idx if self._num_eval < 0 else idx[: self._num_eval]
            out[key] = np.stack([self._prep(src[int(j)]) for j in idx])
        return out


def build(config: ml_collections.ConfigDict) -> TfdsDataset:
    """``config.data``: ``tfds_name``, ``size``, ``channels``, ``data_dir``, ``attribute`` and
    ``source_has_attribute`` (celeb_a), ``num_eval`` (-1: the whole eval split)."""
    return TfdsDataset(config.data, batch_size=config.train.batch_size // jax.process_count(), seed=config.seed)
