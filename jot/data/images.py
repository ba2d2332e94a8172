"""Unpaired image folders (``config.data.name = "folder"``) and the shared image helpers.

Config fields (``config.data``): ``source`` and ``target`` (folders of PNG/JPEG files, searched
recursively), ``size`` (side of the square images the model sees), ``channels`` (1: grayscale,
3: RGB), ``resize`` (``"crop"``: resize the shorter side to ``size`` then centre-crop; ``"none"``:
every file must already be ``size x size``), ``num_eval`` (images per domain held out for
``eval_data``; the split is a fixed function of the sorted file list).

Pixels are mapped to ``[-1, 1]`` (``x / 127.5 - 1``), arrays are NHWC float32.

Batches come from a grain ``MapDataset`` of file indices, ``.shuffle(seed).repeat()``, read by
random access at positions ``step * global_batch + process_index * local_batch + i``: a pure
function of ``(seed, step, process)``, so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

import os
from typing import Callable

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def index_batch(dataset: grain.MapDataset, step: int, batch_size: int) -> list:
    """This process's ``batch_size`` elements of global batch ``step`` from an infinite dataset."""
    base = (step * jax.process_count() + jax.process_index()) * batch_size
    return [dataset[base + i] for i in range(batch_size)]


def shuffled_indices(num_items: int, seed: int) -> grain.MapDataset:
    """``0..num_items-1`` reshuffled every epoch with ``seed`` and repeated forever (random access)."""
    return grain.MapDataset.range(num_items).shuffle(seed=seed).repeat()


def check_images(x: np.ndarray, *, size: int, channels: int, what: str = "images") -> np.ndarray:
    """Checks that ``x`` is an NHWC batch ``(B, size, size, channels)``; returns it unchanged."""
    if x.ndim != 4 or x.shape[1:] != (size, size, channels):
        raise ValueError(
            f"{what} have shape {tuple(x.shape)}; expected (batch, {size}, {size}, {channels}) "
            f"(NHWC, {size}x{size} pixels, {channels} channel{'s' if channels > 1 else ''}). "
            "Resize/convert them, or change config.data.size / config.data.channels to match the model."
        )
    return x


def list_images(folder: str) -> list[str]:
    """Sorted PNG/JPEG paths under ``folder`` (recursive); errors if missing or empty."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder!r} does not exist; set config.data.source/target to a folder.")
    paths = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(folder)
        for f in files
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise ValueError(
            f"image folder {folder!r} contains no {'/'.join(IMAGE_EXTENSIONS)} files; "
            "put the domain's images there (subfolders are searched too)."
        )
    return paths


def prepare(img: Image.Image, *, size: int, channels: int, resize: str, name: str) -> np.ndarray:
    """Converts a PIL image to ``(size, size, channels)`` float32 in ``[-1, 1]`` (``name`` for errors)."""
    if channels not in (1, 3):
        raise ValueError(f"config.data.channels={channels}; expected 1 (grayscale) or 3 (RGB).")
    img = img.convert("L" if channels == 1 else "RGB")
    if resize == "crop":
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    elif resize != "none":
        raise ValueError(f"config.data.resize={resize!r}; expected 'crop' or 'none'.")
    elif img.size != (size, size):
        raise ValueError(
            f"image {name!r} is {img.size[0]}x{img.size[1]}; expected {size}x{size} with config.data.resize='none'. "
            "Use resize='crop' to resize and centre-crop."
        )
    return np.asarray(img, np.float32).reshape(size, size, channels) / 127.5 - 1.0


def load_image(path: str, *, size: int, channels: int, resize: str) -> np.ndarray:
    """Reads one file as a ``(size, size, channels)`` float32 array in ``[-1, 1]``."""
    with Image.open(path) as img:
        return prepare(img, size=size, channels=channels, resize=resize, name=path)


class FolderDataset:
    """Two unpaired image folders as ``{"x": source, "y": target}`` batches (see module doc)."""

    def __init__(self, source: str, target: str, *, size: int, channels: int, resize: str,
                 num_eval: int, batch_size: int, seed: int):
        self.size, self.channels, self.batch_size = size, channels, batch_size
        self._load: Callable[[str], np.ndarray] = lambda p: load_image(p, size=size, channels=channels, resize=resize)
        self._train, self._eval = {}, {}
        for key, folder in (("x", source), ("y", target)):
            paths = list_images(folder)
            if len(paths) <= num_eval:
                raise ValueError(
                    f"folder {folder!r} has {len(paths)} images but config.data.num_eval={num_eval} are held out; "
                    "lower num_eval or add images."
                )
            held = set(np.random.default_rng(0).choice(len(paths), num_eval, replace=False).tolist())
            self._eval[key] = [p for i, p in enumerate(paths) if i in held]
            train = [p for i, p in enumerate(paths) if i not in held]
            self._train[key] = (
                grain.MapDataset.source(train).shuffle(seed=seed + (key == "y")).repeat().map(self._load)
            )

    def train_batch(self, step: int, keys=None) -> dict[str, np.ndarray]:
        keys = self._train.keys() if keys is None else keys
        return {k: np.stack(index_batch(self._train[k], step, self.batch_size)) for k in keys}

    def eval_data(self) -> dict[str, np.ndarray]:
        empty = np.zeros((0, self.size, self.size, self.channels), np.float32)
        return {k: np.stack([self._load(p) for p in paths]) if paths else empty for k, paths in self._eval.items()}


def build(config: ml_collections.ConfigDict) -> FolderDataset:
    """The ``folder`` dataset of ``config.data`` (fields in the module docstring)."""
    data = config.data
    local_batch = config.train.batch_size // jax.process_count()
    return FolderDataset(
        data.source, data.target, size=data.size, channels=data.channels, resize=data.get("resize", "crop"),
        num_eval=data.get("num_eval", 0), batch_size=local_batch, seed=config.seed,
    )
