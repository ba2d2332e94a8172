"""PyTorch (diffusers / transformers) safetensors weights -> jot's Flax NNX modules.

The conversion is a rule table checked against an ``nnx.eval_shape``'d target:

1. ``DROPPED``: buffers that are not parameters (``position_ids``) are skipped.
2. ``RENAMES``: regex rewrites of PyTorch module paths onto jot's attribute names
   (``downsamplers.0`` -> ``downsampler``, ``to_out.0`` -> ``to_out``, GEGLU
   ``ff.net.0.proj`` -> ``ff.proj``, legacy VAE ``query``/``key``/``value``/``proj_attn``,
   the ``text_model.`` prefix of transformers' CLIP).
3. ``LEAVES``: the PyTorch leaf name picks the Flax leaf and layout. ``weight`` becomes
   whichever of ``kernel`` (conv OIHW -> HWIO, linear [out, in] -> [in, out]; a 1x1
   conv weight feeding a linear kernel is squeezed), ``scale`` (norms) or ``embedding``
   exists in the target; ``bias`` stays ``bias``.

Every missing, extra, duplicated or mis-shaped key is collected and reported in one
``ValueError`` naming the key and both shapes. Weights are read from safetensors
only (fp32, fp16 and bf16 tensors); pickled checkpoints are refused with instructions
to convert them.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import safe_open

from jot.errors import UserError
from jot.sharding import param_shardings

DROPPED: tuple[str, ...] = (r"(^|\.)position_ids$",)

RENAMES: tuple[tuple[str, str], ...] = (
    (r"^text_model\.", ""),
    (r"\.downsamplers\.0\.", ".downsampler."),
    (r"\.upsamplers\.0\.", ".upsampler."),
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.ff\.net\.0\.proj\.", ".ff.proj."),
    (r"\.ff\.net\.2\.", ".ff.out."),
    # Legacy (diffusers < 0.14) VAE attention names.
    (r"\.attentions\.0\.query\.", ".attentions.0.to_q."),
    (r"\.attentions\.0\.key\.", ".attentions.0.to_k."),
    (r"\.attentions\.0\.value\.", ".attentions.0.to_v."),
    (r"\.attentions\.0\.proj_attn\.", ".attentions.0.to_out."),
)

LEAVES: dict[str, tuple[str, ...]] = {"weight": ("kernel", "scale", "embedding"), "bias": ("bias",)}

_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
_MAX_LISTED = 20


def _to_flax_layout(array: np.ndarray, leaf: str, target_ndim: int) -> np.ndarray:
    if leaf != "kernel":
        return array
    if array.ndim == 4 and target_ndim == 4:  # conv: OIHW -> HWIO
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 4 and target_ndim == 2 and array.shape[2:] == (1, 1):  # 1x1 conv -> linear
        return array[:, :, 0, 0].T
    if array.ndim == 2:  # linear: [out, in] -> [in, out]
        return array.T
    return array


def flax_name(torch_name: str) -> str | None:
    """The '.'-joined Flax parameter path for a PyTorch name after ``RENAMES``; None if ``DROPPED``."""
    if any(re.search(p, torch_name) for p in DROPPED):
        return None
    name = torch_name
    for pattern, repl in RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def convert_state_dict(
    tensors: Mapping[str, np.ndarray],
    abstract_state: nnx.State,
    *,
    source: str,
    shardings: Mapping[tuple, jax.sharding.Sharding] | None = None,
) -> nnx.State:
    """Map PyTorch ``tensors`` onto ``abstract_state`` (an ``nnx.split`` of an ``nnx.eval_shape``'d module).

    Args:
      tensors: PyTorch state dict as numpy arrays (e.g. from :func:`read_safetensors`).
      abstract_state: target ``nnx.State`` with ``jax.ShapeDtypeStruct`` leaves.
      source: a label for error messages (the weights file or folder).
      shardings: optional per-parameter shardings keyed by the flat path tuple;
        arrays are placed with ``jax.device_put`` as they are converted.
    Returns:
      ``abstract_state``, filled in place: every leaf becomes a ``jax.Array`` of its target dtype.
    Raises:
      ValueError listing every missing, extra, duplicated or mis-shaped key.
    """
    targets = nnx.traversals.flatten_mapping(abstract_state.to_pure_dict())
    by_name = {".".join(str(p) for p in path): path for path in targets}
    converted: dict[tuple, jax.Array] = {}
    origin: dict[tuple, str] = {}  # target path -> the PyTorch key that claimed it
    problems: list[str] = []
    for torch_name, array in tensors.items():
        name = flax_name(torch_name)
        if name is None:
            continue
        prefix, _, leaf = name.rpartition(".")
        candidates = [(c, f"{prefix}.{c}" if prefix else c) for c in LEAVES.get(leaf, ())]
        found = [(c, n) for c, n in candidates if n in by_name]
        if not found:
            problems.append(f"extra key {torch_name!r} shape {tuple(array.shape)}: no parameter {name!r} in the model")
            continue
        flax_leaf, target_name = found[0]
        path = by_name[target_name]
        target = targets[path]
        if path in origin:
            problems.append(f"duplicate key {torch_name!r}: {target_name!r} already set from {origin[path]!r}")
            continue
        origin[path] = torch_name
        value = _to_flax_layout(np.asarray(array), flax_leaf, len(target.shape))
        if value.shape != tuple(target.shape):
            problems.append(
                f"shape mismatch for {torch_name!r} -> {target_name!r}: checkpoint {tuple(array.shape)} "
                f"(as {tuple(value.shape)} in Flax layout) vs model {tuple(target.shape)}"
            )
            continue
        value = value.astype(target.dtype)
        sharding = None if shardings is None else shardings.get(path)
        converted[path] = jax.device_put(value, sharding)
    for path, target in targets.items():
        if path not in origin:
            problems.append(
                f"missing key {'.'.join(map(str, path))!r} shape {tuple(target.shape)}: not in the checkpoint"
            )
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise ValueError(
            f"weights {source} do not match the model ({len(problems)} problems); check that the config.json "
            f"next to them describes the same architecture:\n  {listed}{more}"
        )
    abstract_state.replace_by_pure_dict(nnx.traversals.unflatten_mapping(converted))
    return abstract_state


def load_module(
    build: Callable[[], nnx.Module],
    tensors: Mapping[str, np.ndarray],
    *,
    source: str,
    mesh: Mesh | None = None,
    min_shard_size: int = 2**16,
) -> nnx.Module:
    """Build ``build()`` without allocating (``nnx.eval_shape``) and fill it with ``tensors``.

    With ``mesh``, parameters are placed by :func:`jot.sharding.param_shardings`
    (those with at least ``min_shard_size`` elements sharded over its ``fsdp`` axis) as
    they are converted, so the full tree never sits on one device.
    """
    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    shardings = None
    if mesh is not None:
        shardings = nnx.traversals.flatten_mapping(param_shardings(state, mesh, min_size=min_shard_size).to_pure_dict())
    return nnx.merge(graphdef, convert_state_dict(tensors, state, source=source, shardings=shardings))


class SafetensorsFiles(Mapping[str, np.ndarray]):
    """Read-only mapping tensor name -> numpy array over one or more ``.safetensors`` files.

    Headers are read (and validated) up front; each tensor is read only when looked up,
    so converting a 3.4 GB UNet never holds a second full copy in host memory.
    Never unpickles. Raises ValueError naming the file when it is truncated or corrupt.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self._where: dict[str, Path] = {}
        for path in map(Path, paths):
            if path.suffix in _PICKLE_SUFFIXES:
                raise ValueError(_pickle_message(path))
            with _open(path) as f:
                for key in f.keys():
                    self._where[key] = path

    def __getitem__(self, key: str) -> np.ndarray:
        path = self._where[key]
        with _open(path) as f:
            if f.get_slice(key).get_dtype() == "BF16":  # numpy has no bfloat16; read the raw bytes
                return _read_bf16(path, key)
            try:
                return f.get_tensor(key)
            except Exception as e:
                raise ValueError(f"could not read tensor {key!r} from {path} ({type(e).__name__}: {e}).") from e

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _read_bf16(path: Path, key: str) -> np.ndarray:
    """One bfloat16 tensor, from the safetensors layout: u64 header size, JSON header, raw data."""
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        entry = json.loads(f.read(header_size))[key]
        begin, end = entry["data_offsets"]
        f.seek(8 + header_size + begin)
        raw = f.read(end - begin)
    return np.frombuffer(raw, dtype=jnp.bfloat16).reshape(entry["shape"])


def _corrupt(path: Path, error: Exception) -> ValueError:
    return ValueError(
        f"could not read safetensors file {path} ({type(error).__name__}: {error}); it is truncated or "
        "corrupt: download or save it again."
    )


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"expected safetensors weights at {path}, but it does not exist.")
    try:
        handle = safe_open(str(path), framework="numpy")
    except Exception as e:  # safetensors raises SafetensorError / OSError for damaged headers
        raise _corrupt(path, e) from e
    with handle as f:
        yield f


def read_safetensors(path: str | Path) -> SafetensorsFiles:
    """The tensors of one ``.safetensors`` file (read lazily; see :class:`SafetensorsFiles`)."""
    return SafetensorsFiles([path])


def _pickle_message(path: Path) -> str:
    folder = path.parent
    if folder.name == "text_encoder":
        how = (
            f'python -c "from transformers import CLIPTextModel; '
            f"CLIPTextModel.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)\""
        )
    else:
        cls = "UNet2DConditionModel" if folder.name == "unet" else "AutoencoderKL"
        how = (
            f'python -c "from diffusers import {cls}; '
            f"{cls}.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)\""
        )
    return (
        f"{path} is a pickled PyTorch checkpoint; jot reads weights from safetensors only (it never unpickles). "
        f"Convert it once with PyTorch installed:\n  {how}\n"
        "(or the whole pipeline: DiffusionPipeline.from_pretrained(dir).save_pretrained(dir, safe_serialization=True))."
    )


def _index_shards(index: Path) -> list[str]:
    """The shard file names of a ``*.safetensors.index.json``; each must name a file inside
    the index's folder (no absolute path, no ``..``)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(
            f"{index} is not a safetensors index (expected JSON with a 'weight_map' of tensor name -> shard file): "
            f"{type(e).__name__}: {e}. Re-save the model with save_pretrained(..., safe_serialization=True)."
        ) from e
    for shard in shards:
        p = PurePosixPath(str(shard).replace("\\", "/"))
        if not isinstance(shard, str) or p.is_absolute() or ".." in p.parts or PureWindowsPath(str(shard)).drive:
            raise UserError(
                f"{index} points to shard {shard!r} outside {index.parent}; an index may only name files inside "
                "its own folder. Fix the weight_map entries (plain file names such as "
                "'diffusion_pytorch_model-00001-of-00002.safetensors') or re-save the model."
            )
    return shards


def find_weights(folder: str | Path, stem: str, *, variant: str | None = None) -> list[Path]:
    """The safetensors file(s) holding ``<folder>/<stem>[.<variant>]``, without reading them.

    ``stem`` is ``diffusion_pytorch_model`` (diffusers) or ``model`` (transformers); a
    sharded checkpoint is found through its ``.safetensors.index.json``, whose shard names
    must stay inside ``folder``.
    Raises FileNotFoundError naming the expected file, or ValueError with conversion
    instructions when only a pickled ``.bin``/``.ckpt``/``.pt`` checkpoint is there, or
    when the index is malformed or names a file outside ``folder``.
    """
    folder = Path(folder)
    base = f"{stem}.{variant}" if variant else stem
    single = folder / f"{base}.safetensors"
    index = folder / f"{base}.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        shards = _index_shards(index)
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are not in {folder}: {missing}.")
        return [folder / s for s in shards]
    pickled = sorted(p for p in folder.glob("*") if p.suffix in _PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickled:
        raise ValueError(_pickle_message(pickled[0]))
    raise FileNotFoundError(
        f"expected weights {single} (or {index.name}) in {folder}; save the model there with "
        "save_pretrained(..., safe_serialization=True)."
    )


def read_weights(folder: str | Path, stem: str, *, variant: str | None = None) -> SafetensorsFiles:
    """The tensors of the checkpoint :func:`find_weights` locates (read lazily)."""
    return SafetensorsFiles(find_weights(folder, stem, variant=variant))
