"""Pixel-space UNet noise predictor (DDPM / ADM style), Flax NNX, NHWC.

``UNet(x, s, cond) -> eps_hat``: ``x`` is ``(B, H, W, C)``, ``s`` the ``(B,)`` float diffusion
steps (fractional steps are fine: the sinusoidal embedding is continuous), ``cond`` an optional
``(B,)`` int class/domain label, ``z`` optional ``(B, noise_dim)`` noise (a transport map's
auxiliary input, ``jot.models.image_ot``) mapped by a two-layer MLP into the embedding. One network can hold both translation domains
(``num_classes=2``, ``cond`` = domain index) or one domain (``num_classes=0``, ``cond=None``).

Layout (Ho et al. 2020; Dhariwal & Nichol 2021): ``conv_in``; for each resolution level ``i``
``num_res_blocks`` residual blocks with ``channels * channel_mult[i]`` channels (plus
self-attention where the feature map side is in ``attention_resolutions``) and a stride-2
downsample except at the last level; a middle ``res, attn, res``; the mirror-image up path with
``num_res_blocks + 1`` blocks per level fed by skip connections; ``GroupNorm, SiLU, conv_out``
(zero-initialised, so the initial prediction is 0). Every residual block adds
``Linear(SiLU(emb))`` to its features, with ``emb = MLP(sinusoidal(s)) + Embed(cond)``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx


def timestep_embedding(s: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding ``[cos(s w_k), sin(s w_k)]``, ``w_k = max_period^(-k / (dim/2))``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(s, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _zero_conv(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(cin, cout, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)


class ResBlock(nnx.Module):
    """``h = conv(SiLU(GN(x))) + Linear(SiLU(emb)); out = skip(x) + conv0(SiLU(GN(h)))``."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=min(groups, cin), rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.emb = nnx.Linear(emb_dim, cout, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=min(groups, cout), rngs=rngs)
        self.conv2 = _zero_conv(cout, cout, rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb(jax.nn.silu(emb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


class AttnBlock(nnx.Module):
    """Multi-head self-attention over the ``H*W`` positions with a zero-initialised output."""

    def __init__(self, ch: int, heads: int, groups: int, *, rngs: nnx.Rngs):
        if ch % heads:
            raise ValueError(f"attention channels {ch} are not divisible by num_heads={heads}.")
        self.heads = heads
        self.norm = nnx.GroupNorm(ch, num_groups=min(groups, ch), rngs=rngs)
        self.qkv = nnx.Linear(ch, 3 * ch, rngs=rngs)
        self.out = nnx.Linear(ch, ch, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b, h * w, 3, self.heads, c // self.heads), 3, axis=2)
        att = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
        return x + self.out(att.reshape(b, h, w, c))


class Block(nnx.Module):
    """A residual block, followed by self-attention when ``attn`` is set."""

    def __init__(self, res: ResBlock, attn: AttnBlock | None):
        self.res, self.attn = res, attn

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = self.res(x, emb)
        return h if self.attn is None else self.attn(h)


class UNet(nnx.Module):
    """The noise predictor described in the module docstring."""

    def __init__(
        self,
        *,
        in_channels: int,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        image_size: int = 32,
        num_classes: int = 0,
        num_heads: int = 4,
        num_groups: int = 8,
        noise_dim: int = 0,
        rngs: nnx.Rngs,
    ):
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(
                f"image_size={image_size} is not divisible by 2^{len(channel_mult) - 1} "
                f"(one halving per channel_mult entry after the first, channel_mult={tuple(channel_mult)})."
            )
        self.channels, self.num_classes, self.in_channels = channels, num_classes, in_channels
        emb_dim = 4 * channels
        self.time1 = nnx.Linear(channels, emb_dim, rngs=rngs)
        self.time2 = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.label = nnx.Embed(num_classes, emb_dim, rngs=rngs) if num_classes > 0 else None
        self.noise_dim = noise_dim
        if noise_dim:
            self.noise1 = nnx.Linear(noise_dim, emb_dim, rngs=rngs)
            self.noise2 = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.conv_in = nnx.Conv(in_channels, channels, (3, 3), rngs=rngs)

        def res(cin, cout):
            return ResBlock(cin, cout, emb_dim, num_groups, rngs=rngs)

        def block(cin, cout, size):
            use_attn = size in attention_resolutions
            return Block(res(cin, cout), AttnBlock(cout, num_heads, num_groups, rngs=rngs) if use_attn else None)

        down, skips, ch, size = [], [channels], channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                down.append(block(ch, channels * mult, size))
                ch = channels * mult
                skips.append(ch)
            if level < len(channel_mult) - 1:
                down.append(nnx.Conv(ch, ch, (3, 3), strides=2, rngs=rngs))
                skips.append(ch)
                size //= 2
        self.down = nnx.List(down)
        self.mid = nnx.List([res(ch, ch), AttnBlock(ch, num_heads, num_groups, rngs=rngs), res(ch, ch)])
        up = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                up.append(block(ch + skips.pop(), channels * mult, size))
                ch = channels * mult
            if level > 0:
                up.append(nnx.Conv(ch, ch, (3, 3), rngs=rngs))
                size *= 2
        self.up = nnx.List(up)
        self.norm_out = nnx.GroupNorm(ch, num_groups=min(num_groups, ch), rngs=rngs)
        self.conv_out = _zero_conv(ch, in_channels, rngs)

    def __call__(self, x: jax.Array, s: jax.Array, cond: jax.Array | None = None,
                 z: jax.Array | None = None) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"UNet expects NHWC images with {self.in_channels} channels; got shape {x.shape}.")
        if (cond is None) != (self.label is None):
            raise ValueError(
                f"cond is {'missing' if cond is None else 'given'} but the UNet has num_classes={self.num_classes}; "
                "pass a (B,) int label exactly when num_classes > 0."
            )
        emb = self.time2(jax.nn.silu(self.time1(timestep_embedding(s, self.channels))))
        if self.label is not None:
            emb = emb + self.label(cond)
        if self.noise_dim:
            if z is None or z.shape != (x.shape[0], self.noise_dim):
                raise ValueError(f"the UNet takes noise of shape (B, {self.noise_dim}); got "
                                 f"{None if z is None else z.shape} for a batch of {x.shape[0]}.")
            emb = emb + self.noise2(jax.nn.silu(self.noise1(z)))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = block(h) if isinstance(block, nnx.Conv) else block(h, emb)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            if isinstance(block, nnx.Conv):
                b, hh, ww, c = h.shape
                h = block(jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest"))
            else:
                h = block(jnp.concatenate([h, hs.pop()], axis=-1), emb)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


def from_config(model: ml_collections.ConfigDict, *, in_channels: int, image_size: int, rngs: nnx.Rngs) -> UNet:
    """Builds a ``UNet`` from ``config.model`` (fields ``channels``, ``channel_mult``,
    ``num_res_blocks``, ``attention_resolutions``, ``num_classes``, ``num_heads``, ``num_groups``)."""
    return UNet(
        in_channels=in_channels,
        channels=model.channels,
        channel_mult=tuple(model.channel_mult),
        num_res_blocks=model.num_res_blocks,
        attention_resolutions=tuple(model.attention_resolutions),
        image_size=image_size,
        num_classes=model.num_classes,
        num_heads=model.get("num_heads", 4),
        num_groups=model.get("num_groups", 8),
        rngs=rngs,
    )


@flax.struct.dataclass
class EpsModel:
    """``eps_fn(x, s, cond)`` from a split NNX model, usable as a jit *argument* (a pytree).

    ``graphdef`` is static; ``params`` (an ``nnx.State``) are the leaves, so new parameters
    (e.g. the EMA) reuse the compiled sampler. ``label``, if set, fixes ``cond`` to that class
    for every example (the domain of a two-domain network); then the sampler's ``cond`` is ignored.
    """

    graphdef: Any = flax.struct.field(pytree_node=False)
    params: Any
    label: int | None = flax.struct.field(pytree_node=False, default=None)

    def __call__(self, x: jax.Array, s: jax.Array, cond: Any = None) -> jax.Array:
        if self.label is not None:
            cond = jnp.full((x.shape[0],), self.label, jnp.int32)
        return nnx.merge(self.graphdef, self.params)(x, s, cond)
