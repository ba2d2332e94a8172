"""Parameter sharding for the SD networks over an ``fsdp`` mesh axis.

The rule table is deliberately small: a parameter with at least ``min_size``
elements is split along its largest dimension that the ``fsdp`` axis size
divides (ties go to the later, output-side dimension); everything else (biases,
norm scales, small kernels) is replicated. Batches are sharded separately along
``data`` by the caller; XLA inserts the gathers.
"""

from __future__ import annotations

import math

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

FSDP_AXIS = "fsdp"


def param_spec(
    shape: tuple[int, ...], fsdp_size: int, *, axis: str = FSDP_AXIS, min_size: int = 2**16
) -> PartitionSpec:
    """The ``PartitionSpec`` of one parameter of ``shape`` under the rule table above."""
    if fsdp_size <= 1 or math.prod(shape) < min_size:
        return PartitionSpec()
    divisible = [d for d, n in enumerate(shape) if n % fsdp_size == 0]
    if not divisible:
        return PartitionSpec()
    dim = max(divisible, key=lambda d: (shape[d], d))
    return PartitionSpec(*([None] * dim + [axis]))


def param_shardings(
    params: nnx.State | nnx.Module, mesh: Mesh, *, axis: str = FSDP_AXIS, min_size: int = 2**16
) -> nnx.State:
    """``NamedSharding`` for every leaf of ``params`` (a module, or an ``nnx.State`` of arrays or
    ``jax.ShapeDtypeStruct``); the same tree structure as ``nnx.state(params)``.

    A mesh without ``axis`` replicates everything. The mesh axes must be
    ``AxisType.Auto`` (GSPMD propagation, as ``jax.sharding.Mesh`` makes by default):
    the networks rely on XLA to place activations.
    """
    explicit = [n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == AxisType.Explicit]
    if explicit:
        raise ValueError(
            f"mesh axes {explicit} are AxisType.Explicit; the SD networks need Auto axes. Build the mesh with "
            f"jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))."
        )
    state = nnx.state(params) if isinstance(params, nnx.Module) else params
    size = mesh.shape[axis] if axis in mesh.axis_names else 1
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, param_spec(tuple(leaf.shape), size, axis=axis, min_size=min_size)), state
    )


def shard_params(model: nnx.Module, mesh: Mesh, *, axis: str = FSDP_AXIS, min_size: int = 2**16) -> nnx.Module:
    """Move ``model``'s parameters onto ``mesh`` per :func:`param_shardings` (in place); returns ``model``."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, param_shardings(state, mesh, axis=axis, min_size=min_size)))
    return model
