"""Unpaired image folders (``config.data.name = "folder"``) and the shared image helpers.

Config fields (``config.data``): ``source`` and ``target`` (folders of PNG/JPEG files, searched
recursively), ``size`` (side of the square images the model sees), ``channels`` (1: grayscale,
3: RGB), ``resize`` (``"crop"``: resize the shorter side to ``size`` then centre-crop; ``"none"``:
every file must already be ``size x size``), ``num_eval`` (images per domain held out for
``eval_data``; the split is a fixed function of the sorted file list), ``source_eval`` and
``target_eval`` (optional folders that ``eval_data`` reads instead: then nothing of that domain
is held out from training; e.g. AFHQ's ``val/wild`` as test sources and, for the FID protocol that
compares with the training targets, ``train/cat`` itself as ``target_eval``).

Pixels are mapped to ``[-1, 1]`` (``x / 127.5 - 1``; 16-bit grayscale PNGs ``x / 32767.5 - 1``),
arrays are NHWC float32. Every file is decoded once when the dataset is built, so a corrupt or
truncated image stops the run before training, naming the file.

Batches come from a grain ``MapDataset`` of file indices, ``.shuffle(seed).repeat()``, read by
random access at positions ``step * global_batch + process_index * local_batch + i``: a pure
function of ``(seed, step, process)``, so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image

from jot.errors import UserError, UserFileNotFoundError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# Pillow's modes for 16-bit grayscale PNGs (0..65535); "I" is what older Pillow versions use.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


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
        raise UserFileNotFoundError(
            f"image folder {folder!r} does not exist; set config.data.source/target to a folder.")
    paths = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(folder)
        for f in files
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise UserError(
            f"image folder {folder!r} contains no {'/'.join(IMAGE_EXTENSIONS)} files; "
            "put the domain's images there (subfolders are searched too)."
        )
    return paths


def prepare(img: Image.Image, *, size: int, channels: int, resize: str, name: str) -> np.ndarray:
    """Converts a PIL image to ``(size, size, channels)`` float32 in ``[-1, 1]`` (``name`` for errors)."""
    if channels not in (1, 3):
        raise ValueError(f"config.data.channels={channels}; expected 1 (grayscale) or 3 (RGB).")
    sixteen_bit = img.mode in _SIXTEEN_BIT_MODES
    if sixteen_bit:
        gray = np.asarray(img, np.float64)
        if gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise UserError(
                f"image {name!r} has integer pixels outside 0..65535 (mode {img.mode}); save it as an 8- or 16-bit PNG."
            )
        img = Image.fromarray((gray / 65535.0).astype(np.float32))
    else:
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
    if sixteen_bit:
        unit = np.clip(np.asarray(img, np.float32), 0.0, 1.0)[..., None]
        return np.repeat(unit, channels, axis=-1) * 2.0 - 1.0
    return np.asarray(img, np.float32).reshape(size, size, channels) / 127.5 - 1.0


def _decode_error(path: str) -> str | None:
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as e:
        return f"{path} ({type(e).__name__}: {e})"
    return None


def check_readable(paths: list[str], folder: str) -> None:
    """Decodes every file of ``paths`` (in threads); raises ``UserError`` naming the corrupt or
    truncated ones."""
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        bad = [e for e in pool.map(_decode_error, paths) if e]
    if bad:
        shown = "\n".join(f"  {b}" for b in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise UserError(
            f"{len(bad)} of {len(paths)} images in folder {folder!r} cannot be decoded (corrupt or truncated):\n"
            f"{shown}{more}\nRemove or replace these files."
        )


def load_image(path: str, *, size: int, channels: int, resize: str) -> np.ndarray:
    """Reads one file as a ``(size, size, channels)`` float32 array in ``[-1, 1]``."""
    with Image.open(path) as img:
        return prepare(img, size=size, channels=channels, resize=resize, name=path)


class FolderDataset:
    """Two unpaired image folders as ``{"x": source, "y": target}`` batches (see module doc);
    with ``target=""`` one folder, ``{"x": source}`` (e.g. a concept for textual inversion)."""

    def __init__(self, source: str, target: str, *, size: int, channels: int, resize: str,
                 num_eval: int, batch_size: int, seed: int, source_eval: str = "", target_eval: str = ""):
        self.size, self.channels, self.batch_size = size, channels, batch_size
        self._load: Callable[[str], np.ndarray] = lambda p: load_image(p, size=size, channels=channels, resize=resize)
        self._train, self._eval = {}, {}
        for key, folder, eval_folder in (("x", source, source_eval), ("y", target, target_eval)):
            if key == "y" and not folder:
                continue
            paths = list_images(folder)
            check_readable(paths, folder)
            if eval_folder:
                self._eval[key] = list_images(eval_folder)
                check_readable(self._eval[key], eval_folder)
                self._train[key] = (
                    grain.MapDataset.source(paths).shuffle(seed=seed + (key == "y")).repeat().map(self._load))
                continue
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
        source_eval=data.get("source_eval", ""), target_eval=data.get("target_eval", ""),
    )
