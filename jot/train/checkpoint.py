"""Checkpoints through orbax-checkpoint, wrapped so an orbax API change stays in this file.

Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save never leaves a half-written checkpoint that a restore would pick up. Saves
are asynchronous: ``save`` returns once the arrays are on the host and the files are
written in the background (``wait``/``close`` block until they are on disk), so a large
state does not stall training.
A checkpoint that cannot be restored raises ``jot.errors.UserError``: either it was written
by a different model (the first differing array is named) or its files are damaged (the
older steps to fall back to are named, with how).
"""
import contextlib
import logging as py_logging
import os
import sys

import jax
import orbax.checkpoint as ocp
from absl import logging

from jot.errors import UserError


class Checkpointer:
    """Checkpoints in ``directory``; ``create=False`` (reading only) never creates it."""

    def __init__(self, directory: str, *, keep: int = 2, create: bool = False):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, enable_async_checkpointing=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest finished checkpoint (a save still in flight is waited for)."""
        self._manager.wait_until_finished()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state) -> None:
        """Starts saving ``state`` as ``step`` and returns once its arrays are copied off the
        devices (so the next step may donate them); the files are written in the background
        and appear, complete, when the save finalises. Every process calls it."""
        self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self._manager.wait_until_finished()

    def restore(self, step: int, target):
        """Restores ``step`` into the structure, dtypes and shardings of ``target``
        (a pytree of ``jax.ShapeDtypeStruct`` with ``.sharding`` set, e.g. from ``jax.eval_shape``).
        Raises ``UserError`` when the checkpoint does not fit ``target`` or cannot be read."""
        try:
            with _quiet_closed_loops():
                return self._manager.restore(int(step), args=ocp.args.StandardRestore(target))
        except Exception as e:
            path = os.path.join(self.directory, str(step))
            mismatch = _first_mismatch(os.path.join(path, "default"), target)
            if mismatch:
                raise UserError(
                    f"checkpoint {path} was written by a different model: {mismatch}. Restore it with the config "
                    "it was trained with (the workdir's config.json), or train this config in a new --workdir."
                ) from e
            older = sorted((s for s in self.all_steps() if s < step), reverse=True)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else "no message"
            reason = reason if len(reason) <= 300 else reason[:300] + "..."
            if older:
                fallback = (
                    f"Older checkpoints: step {', '.join(map(str, older))}. To resume from step {older[0]}, move the "
                    f"damaged one out of the checkpoints folder (mv {path} "
                    f"{os.path.dirname(self.directory)}/damaged-checkpoint-{step}) and re-run."
                )
            else:
                fallback = "There is no older checkpoint; move the workdir aside and train again."
            raise UserError(f"cannot read checkpoint {path} ({type(e).__name__}: {reason}). {fallback}") from e

    def close(self) -> None:
        """Waits for saves in flight, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


class _DropClosedLoopErrors:
    """A ``sys.unraisablehook`` that drops the "Event loop is closed" errors which orbax's
    pending reads report, during and after a restore that fails part-way (possibly as late
    as interpreter exit); anything else goes to the previous hook."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, unraisable):
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)):
            self.previous(unraisable)


class _DropAbandonedReads(py_logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" reports of orbax's reads that a
    failed restore abandoned (logged whenever they are garbage-collected)."""

    def filter(self, record):
        message = record.getMessage()
        return not ("Task exception was never retrieved" in message and "orbax" in message)


_ABANDONED_READS = _DropAbandonedReads()


@contextlib.contextmanager
def _quiet_closed_loops():
    """Installs ``_DropClosedLoopErrors``; when the block raises, it stays installed and
    ``_DropAbandonedReads`` is added to the asyncio logger (the failed reads report later)."""
    previous = sys.unraisablehook
    if not isinstance(previous, _DropClosedLoopErrors):
        sys.unraisablehook = _DropClosedLoopErrors(previous)
    try:
        yield
    except BaseException:
        py_logging.getLogger("asyncio").addFilter(_ABANDONED_READS)
        raise
    sys.unraisablehook = previous


def _name(path) -> str:
    """``a.b.0.c`` for a pytree key path, the same for dict keys, attributes and indices."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def _first_mismatch(item_dir: str, target) -> str | None:
    """The first array whose shape or presence differs between the checkpoint's metadata and
    ``target`` (None when they agree or the metadata cannot be read)."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        with ocp.StandardCheckpointer() as reader, _quiet_closed_loops():
            meta = reader.metadata(item_dir)
        meta = getattr(meta, "item_metadata", meta)
        stored = {_name(k): getattr(v, "shape", None) for k, v in jax.tree_util.tree_leaves_with_path(meta)}
    except Exception:
        return None
    finally:
        logging.set_verbosity(verbosity)
    if not stored:
        return None
    wanted = {_name(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(target)}
    for key in sorted(set(stored) | set(wanted)):
        if key not in stored:
            return f"it has no array {key}, which this config's model has"
        if key not in wanted:
            return f"it has an array {key} that this config's model does not have"
        if stored[key] is not None and tuple(stored[key]) != wanted[key]:
            return f"array {key} has shape {tuple(stored[key])} there but {wanted[key]} in this config's model"
    return None
