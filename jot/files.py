"""Atomic file output: everything is written to a temporary name beside the target and
moved into place with ``os.replace``, so a reader never sees a half-written file. Files are
created with mode ``0o666`` minus the process umask, like ``open(path, "w")``."""
import contextlib
import io
import json
import os
import secrets
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path in ``path``'s directory; renames it to ``path`` on success."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    while True:
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def savez(path: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())


def grid_png(rows: list[np.ndarray]) -> bytes:
    """PNG bytes of images in ``[-1, 1]`` (each row ``[n, H, W, C]``, C = 1 or 3) tiled row by row."""
    from PIL import Image

    tiles = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    tiles = np.clip((tiles + 1.0) * 127.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(tiles[..., 0] if tiles.shape[-1] == 1 else tiles).save(buf, format="PNG")
    return buf.getvalue()


def save_figure(path: str, fig) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buf.getvalue())


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line (a single ``write`` call, flushed). A partial last line left by
    a crash mid-write (no final newline) is dropped first, so records are never glued."""
    with open(path, "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                kept = f.read().rpartition(b"\n")[0]
                f.truncate(len(kept) + 1 if kept else 0)
        f.write((json.dumps(record, sort_keys=True, default=_jsonable) + "\n").encode())
        f.flush()


def trim_jsonl(path: str, max_step: int) -> int:
    """Keeps the records of a metrics file with ``step <= max_step``; drops later ones, a
    partial last line and lines that are not JSON records. Rewrites the file atomically, and
    only when something is dropped; returns the number of lines dropped."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last element is b"" or a partial line without its newline
    kept = []
    for line in complete:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= max_step:
            kept.append(line)
    dropped = len(complete) - len(kept) + (1 if lines[-1] else 0)
    if dropped:
        write_bytes(path, b"".join(line + b"\n" for line in kept))
    return dropped


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")
