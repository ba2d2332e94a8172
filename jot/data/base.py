"""The contract between a dataset and the training loop.

A dataset is an object with

``train_batch(step: int, keys=...) -> dict[str, np.ndarray]``
    This process's share of the global batch for optimisation step ``step``; ``keys``
    (optional parameter) restricts it to those keys, each key drawn from its own stream. It is a pure
    function of ``(seed, step, process_index)``, so resuming at step ``k`` reproduces the
    exact batches an uninterrupted run would have seen (no iterator state to checkpoint).
    Unpaired translation data uses keys ``"x"`` (source) and ``"y"`` (target); labelled
    single-domain data uses ``"x"`` and ``"label"``.

``eval_data() -> dict[str, np.ndarray]``
    Held-out arrays for evaluation (same keys), fixed for the dataset's seed.

``paired: bool`` (optional attribute, default ``False``)
    ``True`` when ``eval_data()["y"][i]`` is the true target of ``eval_data()["x"][i]`` (the
    digits' twins), so per-image scores against it (PSNR) are meaningful.

``device_sampling: bool`` and ``device_batch(step, keys=...) -> dict[str, jax.Array]`` (optional)
    Datasets that can draw their training batches with ``jax.random`` (the 2D samplers of
    ``jot.data.toy`` with ``config.data.sampler="device"``) set ``device_sampling`` to
    ``True``; the loop then calls ``device_batch`` inside the jitted train step (or the
    ``lax.scan`` of ``train.steps_per_call`` steps) with a traced integer ``step``, so no
    batch crosses from the host. It returns the *global* batch of ``step`` (shape
    ``[batch_size, ...]``, not a process's share), a pure function of ``(seed, step, key)``
    built from ``jax.random.fold_in``; the loop constrains it to the mesh's batch sharding, so
    each device computes its own rows and processes hold disjoint slices. ``train_batch(step)``
    of such a dataset returns this process's slice of the same batch (drawn by a separately
    compiled program: the same random bits, the float transforms equal up to rounding).

Host batches are host-local numpy arrays; the loop shards them over the mesh's ``data`` axis
(``jax.make_array_from_process_local_data``).
"""
from typing import Protocol

import numpy as np


class Dataset(Protocol):
    """The required part of the contract; ``paired``, ``device_sampling`` and ``device_batch``
    are optional."""

    def train_batch(self, step: int, keys=...) -> dict[str, np.ndarray]: ...

    def eval_data(self) -> dict[str, np.ndarray]: ...
