"""Checkpoints through orbax-checkpoint, wrapped so an orbax API change stays in this file.

Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save never leaves a half-written checkpoint that a restore would pick up.
"""
import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state) -> None:
        self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, target):
        """Restores ``step`` into the structure, dtypes and shardings of ``target``
        (a pytree of ``jax.ShapeDtypeStruct`` with ``.sharding`` set, e.g. from ``jax.eval_shape``)."""
        return self._manager.restore(int(step), args=ocp.args.StandardRestore(target))

    def close(self) -> None:
        self._manager.close()


def abstract_with_sharding(abstract, sharding):
    """Attaches one sharding to every leaf of an ``eval_shape`` result."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
