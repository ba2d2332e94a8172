"""Device mesh and batch sharding.

One ``jax.sharding.Mesh`` with axes ``("data", "fsdp")``: batches are split over ``data``;
parameters are replicated (or split over ``fsdp`` by a model's own rule table). The same
code runs on one CPU, forced CPU devices, a GPU, or a multi-host pod, where each process
passes its host-local share of the batch (``jax.make_array_from_process_local_data``).
"""
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jot.errors import UserError


def initialize_distributed() -> None:
    """Joins a multi-host job when ``JOT_DISTRIBUTED=1`` or ``JAX_COORDINATOR_ADDRESS`` is set
    (``jax.distributed.initialize`` then reads the cluster from the environment: TPU pods,
    SLURM, ...). Idempotent; a no-op for single-process runs."""
    import os

    if jax.distributed.is_initialized():
        return
    if os.environ.get("JOT_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize()


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """Mesh of ``config.mesh.data`` x ``config.mesh.fsdp`` devices (``-1`` = all remaining)."""
    devices = jax.devices()
    fsdp = int(config.mesh.get("fsdp", 1))
    data = int(config.mesh.data)
    if fsdp < 1 or len(devices) % fsdp:
        raise UserError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices.")
    if data == -1:
        data = len(devices) // fsdp
    if data < 1 or data * fsdp > len(devices):
        raise UserError(
            f"config.mesh.data={config.mesh.data} x fsdp={fsdp} needs {data * fsdp} devices but {len(devices)} "
            "are visible; use -1 for all devices."
        )
    grid = np.asarray(devices[: data * fsdp]).reshape(data, fsdp)
    return Mesh(grid, ("data", "fsdp"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
    spec = [None] * ndim
    spec[batch_axis] = "data"
    return NamedSharding(mesh, P(*spec))


def shard_batch(mesh: Mesh, batch: dict, *, batch_axis: int = 0) -> dict:
    """Host-local numpy batch -> global arrays split over the ``data`` axis along ``batch_axis``."""
    out = {}
    n_data = mesh.shape["data"]
    for key, local in batch.items():
        local = np.asarray(local)
        global_n = local.shape[batch_axis] * jax.process_count()
        if global_n % n_data:
            raise UserError(
                f"global batch of {global_n} for {key!r} is not divisible by the {n_data} devices on the "
                f"'data' mesh axis; set config.train.batch_size to a multiple of {n_data}."
            )
        sharding = batch_sharding(mesh, local.ndim, batch_axis)
        global_shape = local.shape[:batch_axis] + (global_n,) + local.shape[batch_axis + 1:]
        out[key] = jax.make_array_from_process_local_data(sharding, local, global_shape)
    return out
