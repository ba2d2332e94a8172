"""Networks of the image OT maps (OTM and DIOTM on images), Flax NNX, NHWC.

- ``UNetMap``: the transport map ``T(x, z) = x + f(x, z)``, ``f`` a pixel UNet
  (``jot.models.unet.UNet`` at a fixed step 0) whose optional auxiliary noise ``z`` (shape
  ``(B, noise_dim)``) enters its embedding. The UNet's output convolution starts at zero, so
  an untrained map is the identity, as the point maps (``jot.models.mlp.ResidualMap``).
- ``ConvPotential``: a convolutional potential with a scalar head, ``v(x) -> [B]`` (OTM), or
  time-conditioned, ``V(t, x) -> [B]`` (DIOTM's value function; ``t`` in ``[0, 1]`` through a
  sinusoidal embedding of ``time_scale * t``). Residual blocks with GroupNorm and SiLU
  (``jot.models.unet.ResBlock``, the time embedding added to every block), a stride-2
  convolution between resolution levels, then GroupNorm, SiLU, a spatial mean plus a projection
  of the embedding (so ``V`` depends on ``t`` from the start: the blocks' residual branches
  start at zero), SiLU and a linear head.
  Everything is smooth, so the HJB regulariser's ``grad_x V`` and ``d_t V`` exist.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jot.models.unet import AttnBlock, Block, ResBlock, UNet, timestep_embedding


class UNetMap(nnx.Module):
    """``T(x, z) = x + UNet(x, 0, z=z)`` (module docstring)."""

    def __init__(self, shape: Sequence[int], *, channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (16,), noise_dim: int = 0,
                 num_heads: int = 4, num_groups: int = 8, rngs: nnx.Rngs):
        size, _, ch = _image_shape(shape)
        self.noise_dim = noise_dim
        self.unet = UNet(in_channels=ch, channels=channels, channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                         attention_resolutions=attention_resolutions, image_size=size, num_heads=num_heads,
                         num_groups=num_groups, noise_dim=noise_dim, rngs=rngs)

    def __call__(self, x: jax.Array, z: jax.Array | None = None) -> jax.Array:
        if self.noise_dim and z is None:
            z = jnp.zeros((x.shape[0], self.noise_dim), x.dtype)
        return x + self.unet(x, jnp.zeros((x.shape[0],), jnp.float32), z=z if self.noise_dim else None)


class ConvPotential(nnx.Module):
    """``v(x)`` or ``V(t, x)`` (``time_conditioned``), one scalar per image (module docstring)."""

    def __init__(self, shape: Sequence[int], *, channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2, 2),
                 num_res_blocks: int = 1, attention_resolutions: Sequence[int] = (), time_conditioned: bool = True,
                 time_scale: float = 10.0, num_heads: int = 4, num_groups: int = 8, rngs: nnx.Rngs):
        size, _, ch = _image_shape(shape)
        if size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image size {size} is not divisible by 2^{len(channel_mult) - 1} (one halving per "
                             f"channel_mult entry after the first, channel_mult={tuple(channel_mult)}).")
        self.channels, self.time_conditioned, self.time_scale = channels, time_conditioned, time_scale
        emb_dim = 4 * channels
        if time_conditioned:
            self.time1 = nnx.Linear(channels, emb_dim, rngs=rngs)
            self.time2 = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        else:  # a learned constant embedding: the blocks are the same with and without time
            self.const = nnx.Param(jnp.zeros((1, emb_dim), jnp.float32))
        self.conv_in = nnx.Conv(ch, channels, (3, 3), rngs=rngs)
        blocks, c = [], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                attn = AttnBlock(channels * mult, num_heads, num_groups, rngs=rngs) if size in attention_resolutions \
                    else None
                blocks.append(Block(ResBlock(c, channels * mult, emb_dim, num_groups, rngs=rngs), attn))
                c = channels * mult
            if level < len(channel_mult) - 1:
                blocks.append(nnx.Conv(c, c, (3, 3), strides=2, rngs=rngs))
                size //= 2
        self.blocks = nnx.List(blocks)
        self.norm_out = nnx.GroupNorm(c, num_groups=min(num_groups, c), rngs=rngs)
        self.emb_out = nnx.Linear(emb_dim, c, rngs=rngs)
        self.head = nnx.Linear(c, 1, rngs=rngs)

    def _embedding(self, t: jax.Array | None, n: int) -> jax.Array:
        if not self.time_conditioned:
            return jnp.broadcast_to(self.const[...], (n, self.const.shape[-1]))
        e = timestep_embedding(self.time_scale * jnp.asarray(t, jnp.float32), self.channels)
        return self.time2(jax.nn.silu(self.time1(e)))

    def __call__(self, *args: jax.Array) -> jax.Array:
        if self.time_conditioned:
            if len(args) != 2:
                raise TypeError("a time-conditioned ConvPotential is called as V(t, x).")
            t, x = args
        else:
            if len(args) != 1:
                raise TypeError("a ConvPotential without time is called as v(x).")
            t, x = None, args[0]
        emb = self._embedding(t, x.shape[0])
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h) if isinstance(block, nnx.Conv) else block(h, emb)
        h = jnp.mean(jax.nn.silu(self.norm_out(h)), axis=(1, 2)) + self.emb_out(jax.nn.silu(emb))
        return self.head(jax.nn.silu(h))[:, 0]


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[0] != shape[1]:
        raise ValueError(f"image networks take square NHWC images; got a point shape {tuple(shape)} "
                         "(expected (size, size, channels)). Use config.model.kind='mlp' for point clouds.")
    return int(shape[0]), int(shape[1]), int(shape[2])


def map_from_config(model: ml_collections.ConfigDict, shape: Sequence[int], rngs: nnx.Rngs) -> UNetMap:
    """``UNetMap`` from ``config.model`` (``channels``, ``channel_mult``, ``num_res_blocks``,
    ``attention_resolutions``, ``noise_dim``, ``num_heads``, ``num_groups``)."""
    return UNetMap(shape, channels=model.channels, channel_mult=tuple(model.channel_mult),
                   num_res_blocks=model.num_res_blocks, attention_resolutions=tuple(model.attention_resolutions),
                   noise_dim=model.noise_dim, num_heads=model.get("num_heads", 4),
                   num_groups=model.get("num_groups", 8), rngs=rngs)


def potential_from_config(model: ml_collections.ConfigDict, shape: Sequence[int], *, time_conditioned: bool,
                          rngs: nnx.Rngs) -> ConvPotential:
    """``ConvPotential`` from ``config.model``'s ``potential_*`` fields (``potential_channels``,
    ``potential_channel_mult``, ``potential_res_blocks``, ``potential_attention_resolutions``)
    and ``time_scale``."""
    return ConvPotential(shape, channels=model.potential_channels, channel_mult=tuple(model.potential_channel_mult),
                         num_res_blocks=model.potential_res_blocks,
                         attention_resolutions=tuple(model.get("potential_attention_resolutions", ())),
                         time_conditioned=time_conditioned, time_scale=model.time_scale,
                         num_heads=model.get("num_heads", 4), num_groups=model.get("num_groups", 8), rngs=rngs)
