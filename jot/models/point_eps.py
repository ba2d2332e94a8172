"""Noise predictor for point clouds: ``eps(x_s, s, cond)`` on ``[B, d]`` points, the MLP
counterpart of ``jot.models.unet.UNet`` (same call signature, same step embedding), used by
``dsm`` with ``config.model.kind = "mlp"`` (2D diffusion teachers for RDMD).

``x`` goes through a linear lift to ``width``; the step ``s`` through the sinusoidal embedding
of ``jot.models.unet.timestep_embedding`` and a two-layer MLP, plus a class embedding when
``num_classes > 0``; ``blocks`` residual blocks ``h + W2 silu(W1 silu(h) + emb)``; a linear
output layer initialised at zero (an untrained model predicts ``eps = 0``, as the UNet does).
"""
from __future__ import annotations

import jax
from flax import nnx

from jot.models.unet import timestep_embedding


class EpsMLP(nnx.Module):
    def __init__(self, dim: int, *, width: int = 128, blocks: int = 3, time_dim: int = 64, num_classes: int = 0,
                 rngs: nnx.Rngs):
        if time_dim % 2:
            raise ValueError(f"time_dim must be even, got {time_dim}.")
        self.dim, self.time_dim, self.num_classes = dim, time_dim, num_classes
        self.lift = nnx.Linear(dim, width, rngs=rngs)
        self.time1 = nnx.Linear(time_dim, width, rngs=rngs)
        self.time2 = nnx.Linear(width, width, rngs=rngs)
        self.label = nnx.Embed(num_classes, width, rngs=rngs) if num_classes > 0 else None
        self.blocks = nnx.List(
            [nnx.List([nnx.Linear(width, width, rngs=rngs), nnx.Linear(width, width, rngs=rngs)]) for _ in range(blocks)]
        )
        self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array, s: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"EpsMLP expects points of shape [B, {self.dim}], got {x.shape}.")
        if (cond is None) != (self.label is None):
            raise ValueError(
                f"cond is {'missing' if cond is None else 'given'} but the model has num_classes={self.num_classes}; "
                "pass a (B,) int label exactly when num_classes > 0."
            )
        emb = self.time2(nnx.silu(self.time1(timestep_embedding(s, self.time_dim))))
        if self.label is not None:
            emb = emb + self.label(cond)
        h = self.lift(x)
        for first, second in self.blocks:
            h = h + second(nnx.silu(first(nnx.silu(h)) + emb))
        return self.out(nnx.silu(h))
