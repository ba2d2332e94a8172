"""The contract between a method and the generic training loop (``jot.train.loop``).

A method is a module with these functions. Everything that runs per step is pure and is
jitted by the loop; the loop owns sharding, checkpoints, logging and the NaN guard.

``init(config, rng, batch) -> state``
    Builds the train state, a pytree (``flax.struct.dataclass``) whose leaves are arrays and
    which has an integer ``step`` field. ``batch`` is one host batch (a dict of numpy arrays,
    see ``jot.data``) used only for shapes. The loop calls ``jax.eval_shape`` on it first and
    then runs it under ``jax.jit`` with replicated output shardings, so it must be pure.
    Anything else the state needs, such as the networks' graph definitions
    (``jot.methods._common.State.graphdefs``), is a static field (``pytree_node=False``):
    part of the tree structure, so it must be hashable and comparable (jit's cache key), it
    is not checkpointed, and a restore takes it from the ``jax.eval_shape`` target.

``train_step(config, state, batch) -> (state, metrics)``
    One optimisation step (which may contain several inner updates, e.g. ``K_T`` map steps
    per potential step, written with ``lax.scan``). ``metrics`` is a flat dict of scalar
    arrays; the loop checks ``metrics["loss"]`` (when present) for NaN. Randomness comes
    from ``jax.random.fold_in(state.rng, state.step)``.

``transport(config, state, x) -> y``
    Applies the trained map (EMA parameters when the method keeps them) at test time.

``evaluate(config, state, data, workdir) -> dict[str, float]`` (optional, host side)
    Held-out metrics, and any artifacts written atomically under ``workdir``.

``load_pretrained(config) -> pytree`` (optional, host side)
    Frozen pretrained networks the method trains with (e.g. the SD UNet and text encoder of
    textual inversion), read once from disk. The loop places them on the mesh by the
    parameter rule, passes them to ``init(config, rng, batch, pretrained)``, and keeps them in
    the state's ``pretrained`` field (``init`` leaves it None) during training and after
    ``restore``; checkpoints never hold them, so they stay as small as the trained part.

``check_config(config)`` (optional)
    Raises ``jot.errors.UserError`` for method fields out of range; the loop calls it before
    it writes anything to the workdir.

``batches_per_step(config) -> int | dict[str, int]`` (optional)
    Host batches the step consumes per key, stacked as ``[count, B, ...]`` and sharded along
    axis 1 (e.g. OTM: ``{"x": k_t + 1, "y": 1}``); an int applies to every key. Without it a
    step takes one unstacked batch.

``schedule(config)`` and ``eps_model(config, state, *, label)`` (diffusion methods)
    The noise schedule and the trained noise predictor ``eps_fn(x, s, cond)`` of domain
    ``label`` (EMA parameters when the method keeps them); ``jot.translate.runner`` translates
    with any method that has both.
"""
from typing import Any, Protocol

import ml_collections


class Method(Protocol):
    def init(self, config: ml_collections.ConfigDict, rng: Any, batch: dict) -> Any: ...

    def train_step(self, config: ml_collections.ConfigDict, state: Any, batch: dict) -> tuple[Any, dict]: ...

    def transport(self, config: ml_collections.ConfigDict, state: Any, x: Any) -> Any: ...
