"""Where arrays live: the device mesh, the parameter rule and batch shardings (one owner).

One ``jax.sharding.Mesh`` with axes ``("data", "fsdp")`` serves every run, from one CPU to a
multi-host pod:

- **batches** are split along their batch axis over both axes, ``("data", "fsdp")``: every
  device sees different examples (fully sharded data parallelism);
- **state** (parameters, optimiser state, EMA) follows one rule per array (``param_spec``):
  an array with at least ``min_size`` elements is split over ``fsdp`` along its largest
  dimension that the axis size divides; smaller ones (biases, norm scales, step counters)
  are replicated. Adam's moments and an EMA have their parameter's shape, so they follow
  their parameter without a table of their own. With ``fsdp = 1`` everything is replicated.
  XLA inserts the all-gathers (GSPMD), so the mesh axes are ``AxisType.Auto``.

Multi-host: ``initialize_distributed`` joins the processes once, before anything touches a
device; each process then passes its own slice of every batch (``shard_batch``, through
``jax.make_array_from_process_local_data``).
"""
from __future__ import annotations

import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jot.errors import UserError

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)
DEFAULT_MIN_SIZE = 2**16


# --------------------------------------------------------------------------- processes


def _cluster_detected() -> str | None:
    """The multi-process launcher this process was started by, if any (``None`` for a plain
    single process): JOT_DISTRIBUTED=1 or JAX_COORDINATOR_ADDRESS (explicit), SLURM or Open MPI
    with more than one task, or a multi-host TPU slice."""
    env = os.environ
    if env.get("JOT_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in env:
        return "explicit"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return "slurm"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "openmpi"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "tpu"
    return None


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Joins a multi-process job once (idempotent); returns whether this is a multi-process run.

    With ``coordinator_address`` (``host:port`` of process 0), ``num_processes`` and
    ``process_id`` the job is joined explicitly. Without them, ``jax.distributed.initialize()``
    reads the cluster from the environment when one is detected (``_cluster_detected``: TPU
    pod slices, SLURM ``srun``, Open MPI ``mpirun``, or ``JOT_DISTRIBUTED=1``); otherwise this
    is a no-op. Must run before anything touches a device. CPU processes talk through gloo.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    explicit = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(explicit) and not all(explicit):
        raise UserError(
            f"--coordinator_address={coordinator_address}, --num_processes={num_processes}, --process_id="
            f"{process_id}: a multi-process run needs all three (e.g. --coordinator_address=host0:12345 "
            "--num_processes=2 --process_id=0 on the first process), or none of them inside SLURM, Open MPI or a "
            "TPU pod."
        )
    if all(explicit):
        if not (isinstance(num_processes, int) and num_processes >= 1 and 0 <= process_id < num_processes):
            raise UserError(f"--process_id={process_id} must be in [0, --num_processes={num_processes}).")
        if ":" not in coordinator_address:
            raise UserError(f"--coordinator_address={coordinator_address!r} must be host:port of process 0, "
                            "e.g. localhost:12345.")
        if num_processes == 1:
            return False
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
        return True
    if _cluster_detected() is None:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize()
    return jax.process_count() > 1


def is_main_process() -> bool:
    """Whether this process writes files, logs and shows progress (process 0)."""
    return jax.process_index() == 0


# --------------------------------------------------------------------------- the mesh


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """Mesh of ``config.mesh.data`` x ``config.mesh.fsdp`` devices over all processes
    (``data = -1``: every device not on ``fsdp``), axes ``("data", "fsdp")``, ``AxisType.Auto``."""
    devices = jax.devices()
    fsdp = int(config.mesh.get("fsdp", 1))
    data = int(config.mesh.data)
    if fsdp < 1 or len(devices) % fsdp:
        raise UserError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices; set it to a "
                        f"divisor of {len(devices)} (1 replicates the state).")
    if data == -1:
        data = len(devices) // fsdp
    if data < 1 or data * fsdp > len(devices):
        raise UserError(
            f"config.mesh.data={config.mesh.data} x fsdp={fsdp} needs {data * fsdp} devices but {len(devices)} "
            "are visible; use -1 for all devices."
        )
    if jax.process_count() > 1 and data * fsdp != len(devices):
        raise UserError(f"config.mesh.data={data} x fsdp={fsdp} uses {data * fsdp} of the {len(devices)} devices; "
                        "a multi-process run must use all of them (config.mesh.data=-1).")
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices[: data * fsdp])


def min_shard_size(config: ml_collections.ConfigDict) -> int:
    """``config.mesh.fsdp_min_size``: arrays with fewer elements stay replicated."""
    size = config.mesh.get("fsdp_min_size", DEFAULT_MIN_SIZE)
    if not isinstance(size, int) or size < 1:
        raise UserError(f"config.mesh.fsdp_min_size={size!r}; expected an integer >= 1 (elements).")
    return size


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# --------------------------------------------------------------------------- state


def param_spec(shape: tuple[int, ...], fsdp_size: int, *, axis: str = FSDP, min_size: int = DEFAULT_MIN_SIZE) -> P:
    """The ``PartitionSpec`` of one array of ``shape``: split along its largest dimension that
    ``fsdp_size`` divides (ties go to the later, output-side dimension) when it has at least
    ``min_size`` elements; replicated otherwise."""
    if fsdp_size <= 1 or math.prod(shape) < min_size:
        return P()
    divisible = [d for d, n in enumerate(shape) if n % fsdp_size == 0]
    if not divisible:
        return P()
    dim = max(divisible, key=lambda d: (shape[d], d))
    return P(*([None] * dim + [axis]))


def _check_auto(mesh: Mesh) -> None:
    explicit = [n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == AxisType.Explicit]
    if explicit:
        raise ValueError(
            f"mesh axes {explicit} are AxisType.Explicit; jot's networks need Auto axes. Build the mesh with "
            f"jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))."
        )


def tree_shardings(tree: Any, mesh: Mesh, *, axis: str = FSDP, min_size: int = DEFAULT_MIN_SIZE) -> Any:
    """A ``NamedSharding`` for every leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``, e.g.
    ``jax.eval_shape`` of an init function) under ``param_spec``; same tree structure. A mesh
    without ``axis`` replicates everything."""
    _check_auto(mesh)
    size = mesh.shape[axis] if axis in mesh.axis_names else 1
    return jax.tree.map(lambda leaf: NamedSharding(mesh, param_spec(tuple(leaf.shape), size, axis=axis,
                                                                    min_size=min_size)), tree)


def param_shardings(params, mesh: Mesh, *, axis: str = FSDP, min_size: int = DEFAULT_MIN_SIZE):
    """``tree_shardings`` of a Flax NNX module's state (or of an ``nnx.State``)."""
    from flax import nnx

    state = nnx.state(params) if isinstance(params, nnx.Module) else params
    return tree_shardings(state, mesh, axis=axis, min_size=min_size)


def shard_params(model, mesh: Mesh, *, axis: str = FSDP, min_size: int = DEFAULT_MIN_SIZE):
    """Moves an NNX ``model``'s parameters onto ``mesh`` per ``param_spec`` (in place); returns it."""
    from flax import nnx

    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, param_shardings(state, mesh, axis=axis, min_size=min_size)))
    return model


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves of ``abstract`` carrying the matching leaf of ``shardings``
    (the restore target of a checkpoint)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def to_host(tree: Any) -> Any:
    """``tree`` as numpy arrays on every process, whatever its sharding (an all-gather across
    processes when arrays span several)."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


# --------------------------------------------------------------------------- batches


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
    """Arrays of rank ``ndim`` split along ``batch_axis`` over ``("data", "fsdp")``."""
    spec = [None] * ndim
    spec[batch_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


def batch_devices(mesh: Mesh) -> int:
    """How many ways a batch is split: ``data * fsdp``."""
    return mesh.shape[DATA] * mesh.shape[FSDP]


def shard_batch(mesh: Mesh, batch: dict, *, batch_axis: int = 0) -> dict:
    """This process's numpy slice of a batch -> global arrays split over ``("data", "fsdp")``
    along ``batch_axis`` (the global batch is the processes' slices in process order)."""
    out = {}
    n = batch_devices(mesh)
    for key, local in batch.items():
        local = np.asarray(local)
        global_n = local.shape[batch_axis] * jax.process_count()
        if global_n % n:
            raise UserError(
                f"global batch of {global_n} for {key!r} is not divisible by the {n} devices that share a batch "
                f"(mesh data={mesh.shape[DATA]} x fsdp={mesh.shape[FSDP]}); set config.train.batch_size to a "
                f"multiple of {n}."
            )
        sharding = batch_sharding(mesh, local.ndim, batch_axis)
        global_shape = local.shape[:batch_axis] + (global_n,) + local.shape[batch_axis + 1:]
        out[key] = jax.make_array_from_process_local_data(sharding, local, global_shape)
    return out
