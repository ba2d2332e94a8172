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

Batches are host-local numpy arrays; the loop shards them over the mesh's ``data`` axis
(``jax.make_array_from_process_local_data``).
"""
from typing import Protocol

import numpy as np


class Dataset(Protocol):
    def train_batch(self, step: int, keys=...) -> dict[str, np.ndarray]: ...

    def eval_data(self) -> dict[str, np.ndarray]: ...
