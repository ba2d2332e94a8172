"""Textual-inversion embeddings: the ``learned_embeds.safetensors`` files of diffusers.

A textual-inversion embedding gives a new placeholder token (``"<cat>"``) one or more
learned rows of the CLIP token table. The file diffusers' ``textual_inversion.py`` training
script writes, and ``StableDiffusionPipeline.load_textual_inversion`` reads, is a safetensors
file with one tensor, named by the token: ``{"<cat>": [n, D]}`` (or ``[D]``). An embedding
of ``n > 1`` rows is the tokens ``<cat>, <cat>_1, ..., <cat>_{n-1}``, and a prompt's
``<cat>`` stands for all of them (:func:`expand_prompt`).

Use::

    embeddings = load_embeddings("out/learned_embeds.safetensors", hidden_size=te.config.hidden_size)
    ids, extra = extend(tokenizer, embeddings, text_encoder=te)
    hidden = te(tokenizer(expand_prompt("a photo of <cat>", tokenizer)), extra_embeddings=extra)

and for training, differentiate with respect to ``extra`` only (the token table stays
frozen), then ``save_embeddings(folder, {"<cat>": extra})``. Files are read and written as
safetensors only, never with pickle.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import safetensors.numpy

from jot.errors import UserFileNotFoundError
from jot.files import write_bytes
from jot.models.sd.clip import CLIPTextModel, CLIPTokenizer
from jot.models.sd.convert import read_safetensors

FILE_NAME = "learned_embeds.safetensors"
A1111_KEY = "emb_params"  # the single tensor of a stable-diffusion-webui .safetensors embedding
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _file(path: str | Path) -> Path:
    """``path`` itself when it names a file (or ends in .safetensors), else ``path/learned_embeds.safetensors``."""
    path = Path(path)
    if path.is_dir() or (not path.suffix and not path.exists()):
        return path / FILE_NAME
    return path


def save_embeddings(path: str | Path, embeddings: Mapping[str, np.ndarray]) -> Path:
    """Writes one token's embedding as diffusers' ``learned_embeds.safetensors``; returns the file.

    ``embeddings`` is ``{token: array}`` with a ``[D]`` or ``[n, D]`` array (jax or numpy),
    one token per file as diffusers' loader expects. ``path`` is the file, or a folder that
    then receives ``learned_embeds.safetensors``. The write is atomic (a temporary file in the
    same folder, renamed into place). float16/float32 arrays keep their dtype; others are
    written as float32.
    """
    if len(embeddings) != 1:
        raise ValueError(
            f"save_embeddings writes one token per file (diffusers' load_textual_inversion reads a single "
            f"tensor per file), got tokens {list(embeddings)}; call it once per token with its own file name, "
            "e.g. 'cat.safetensors' and 'dog.safetensors'."
        )
    ((token, value),) = embeddings.items()
    if not isinstance(token, str) or not token:
        raise ValueError(f"token {token!r} must be a non-empty string such as '<cat>'.")
    array = np.asarray(value)
    if array.dtype not in (np.float16, np.float32):
        array = array.astype(np.float32)
    if array.ndim not in (1, 2) or array.shape[-1] == 0 or (array.ndim == 2 and array.shape[0] == 0):
        raise ValueError(
            f"embedding of {token!r} has shape {array.shape}; expected [D] or [n, D] (n rows of the token table)."
        )
    file = _file(path)
    if file.suffix != ".safetensors":
        raise ValueError(f"{file} must end in .safetensors; name the file e.g. {file.with_suffix('.safetensors')}.")
    data = safetensors.numpy.save({token: np.ascontiguousarray(array)}, metadata={"format": "pt"})
    write_bytes(str(file), data)
    return file


def _check_safetensors(file: Path) -> None:
    """Raises a clear error when ``file`` is missing, pickled, or not a safetensors file."""
    if not file.is_file():
        raise UserFileNotFoundError(
            f"textual-inversion embedding {file} does not exist; expected a {FILE_NAME} written by "
            "save_embeddings or diffusers' textual_inversion training (or a folder holding one)."
        )
    with open(file, "rb") as f:
        head = f.read(8)
        header = f.read(min(struct.unpack("<Q", head)[0], 100_000_000)) if len(head) == 8 else b""
    try:
        ok = file.suffix not in _PICKLE_SUFFIXES and header[:1] == b"{" and isinstance(json.loads(header), dict)
    except ValueError:
        ok = False
    pickled = file.suffix in _PICKLE_SUFFIXES or head[:2] == b"PK" or head[:1] == b"\x80"
    if not ok:
        if pickled:
            raise ValueError(
                f"textual-inversion embedding {file} is a pickled PyTorch file; jot reads safetensors only (it "
                "never unpickles). Convert it once with PyTorch installed: safetensors.torch.save_file("
                "{token: torch.load(path)[token]}, 'learned_embeds.safetensors')."
            )
        raise ValueError(
            f"textual-inversion embedding {file} is not a safetensors file; jot reads safetensors only. Pass the "
            f"{FILE_NAME} written by save_embeddings or diffusers' textual_inversion training."
        )


def load_embeddings(
    paths: str | Path | Sequence[str | Path],
    *,
    tokens: Sequence[str | None] | None = None,
    hidden_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Reads textual-inversion files into ``{token: array [n, D]}`` (a ``[D]`` tensor becomes ``[1, D]``).

    Each path is a ``.safetensors`` file (or a folder holding ``learned_embeds.safetensors``)
    with one tensor: diffusers' ``{token: tensor}``, or stable-diffusion-webui's
    ``{"emb_params": tensor}``, whose token is the file name without suffix (its trigger
    word). ``tokens`` (one per path, ``None`` keeps the file's) renames them, as the
    ``token=`` argument of diffusers' loader does. ``hidden_size`` (the text encoder's D)
    checks the width. Raises FileNotFoundError for a missing file and ValueError for a file
    that is not safetensors, holds several tensors, a repeated token, or the wrong width.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if tokens is not None and len(tokens) != len(paths):
        raise ValueError(f"got {len(tokens)} tokens for {len(paths)} paths; pass one token (or None) per path.")
    out: dict[str, np.ndarray] = {}
    for i, path in enumerate(paths):
        file = _file(path)
        _check_safetensors(file)
        tensors = read_safetensors(file)
        if len(tensors) != 1:
            raise ValueError(
                f"textual-inversion embedding {file} holds {len(tensors)} tensors {sorted(tensors)[:5]}; expected "
                f"one, named by its token (diffusers) or {A1111_KEY!r} (stable-diffusion-webui). Save each token "
                "to its own file."
            )
        ((key, value),) = tensors.items()
        token = key if key != A1111_KEY else file.stem
        if tokens is not None and tokens[i] is not None:
            token = tokens[i]
        array = np.asarray(value)
        array = array[None] if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(
                f"embedding {key!r} in {file} has shape {tuple(np.shape(value))}; expected [D] or [n, D]."
            )
        if hidden_size is not None and array.shape[1] != hidden_size:
            raise ValueError(
                f"embedding {key!r} in {file} has width {array.shape[1]} but the text encoder's hidden_size is "
                f"{hidden_size}; use an embedding trained for this text encoder (Stable Diffusion 1.x: 768, "
                "2.x: 1024)."
            )
        if token in out:
            raise ValueError(
                f"token {token!r} of {file} was already read from an earlier file; pass tokens=[...] to give "
                "each embedding its own token."
            )
        out[token] = array
    return out


def placeholder_names(token: str, rows: int) -> list[str]:
    """The tokens of an embedding of ``rows`` rows, as diffusers names them: ``<cat>, <cat>_1, ...``."""
    return [token] + [f"{token}_{i}" for i in range(1, rows)]


def extend(
    tokenizer: CLIPTokenizer,
    embeddings: Mapping[str, np.ndarray],
    *,
    text_encoder: CLIPTextModel | None = None,
) -> tuple[list[int], np.ndarray]:
    """Adds the tokens of ``embeddings`` to ``tokenizer``; returns their ids and rows ``[K, D]`` (float32).

    A ``[n, D]`` embedding adds ``n`` tokens (:func:`placeholder_names`). The rows are in id
    order, ready for ``text_encoder(ids, extra_embeddings=rows)``, which is correct while
    the tokenizer's ids before these are exactly the text encoder's table: ``text_encoder``
    (optional) checks that, and the width. Nothing is added when a check fails.
    """
    names: list[str] = []
    rows: list[np.ndarray] = []
    for token, value in embeddings.items():
        array = np.asarray(value, np.float32)
        array = array[None] if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(f"embedding of {token!r} has shape {np.shape(value)}; expected [D] or [n, D].")
        names += placeholder_names(token, array.shape[0])
        rows.append(array)
    if not rows:
        raise ValueError("extend got no embeddings; pass {token: array [n, D]}, e.g. from load_embeddings.")
    widths = sorted({r.shape[1] for r in rows})
    if len(widths) > 1:
        raise ValueError(f"embeddings have different widths {widths}; all must match the text encoder's hidden_size.")
    if text_encoder is not None:
        if widths[0] != text_encoder.config.hidden_size:
            raise ValueError(
                f"embeddings have width {widths[0]} but the text encoder's hidden_size is "
                f"{text_encoder.config.hidden_size}; use embeddings trained for this text encoder."
            )
        if len(tokenizer) != text_encoder.num_embeddings:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} ids but the text encoder's token table has "
                f"{text_encoder.num_embeddings} rows, so new ids would not start at the first extra_embeddings row; "
                "extend a tokenizer with no placeholder tokens yet (add all embeddings in one call) that matches "
                "the text encoder."
            )
    ids = tokenizer.add_tokens(names)
    return ids, np.concatenate(rows, axis=0)


def expand_prompt(prompt: str, tokenizer: CLIPTokenizer) -> str:
    """``prompt`` with each multi-row placeholder ``<cat>`` written out as ``<cat> <cat>_1 ...``.

    diffusers' pipelines do this to every prompt (``maybe_convert_prompt``); without it a
    multi-row embedding contributes only its first row.
    """
    added = set(tokenizer.added_tokens)
    present = set(tokenizer.token_ids(prompt))
    for token in tokenizer.added_tokens:
        if f"{token}_1" not in added or tokenizer.tokenizer.token_to_id(token) not in present:
            continue
        names = [token]
        while f"{token}_{len(names)}" in added:
            names.append(f"{token}_{len(names)}")
        prompt = prompt.replace(token, " ".join(names))
    return prompt
