"""Stable Diffusion 1.x / 2.x ``UNet2DConditionModel`` in Flax NNX (NHWC).

Built from a diffusers ``unet/config.json`` dict::

    unet = UNet2DConditionModel(UNetConfig.from_diffusers(config), rngs=nnx.Rngs(0))
    eps = unet(latents, timesteps, encoder_hidden_states)   # [N, H, W, 4]

Note the diffusers naming quirk kept by every SD checkpoint: ``attention_head_dim``
in the config is the *number of heads* per block (SD 1.x: 8 everywhere; SD 2.x:
``[5, 10, 20, 20]``), and the head width is ``block channels // heads``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jot.models.sd.layers import (
    Attention,
    AttentionChunk,
    AttentionImplementation,
    Downsample2D,
    ResnetBlock2D,
    Upsample2D,
    check_attention,
    conv,
    group_norm,
    linear,
)

_CROSS_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_CROSS_UP, _PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"

# Config keys of diffusers' UNet2DConditionModel that only SD 1.x/2.x values are
# supported for: key -> the values accepted (anything else raises).
_FIXED_KEYS: dict[str, tuple[Any, ...]] = {
    "act_fn": ("silu",),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
    "only_cross_attention": (False,),
    "dual_cross_attention": (False,),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,),
    "num_class_embeds": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "num_attention_heads": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1.0,),
    "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "projection_class_embeddings_input_dim": (None,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
    "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
    "dropout": (0.0,),
}
# Keys that carry no architecture (informational, or inference-time only).
_IGNORED_KEYS = frozenset({"sample_size", "addition_embed_type_num_heads"})


def _per_block(value: int | Sequence[int], n: int, key: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) for v in value):
        raise ValueError(
            f"unet config {key!r} must be an int or a list of {n} ints (one per down block), got {value!r}."
        )
    return value


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The architecture of an SD 1.x/2.x UNet; build with :meth:`from_diffusers`."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (_CROSS_DOWN, _CROSS_DOWN, _CROSS_DOWN, _PLAIN_DOWN)
    up_block_types: tuple[str, ...] = (_PLAIN_UP, _CROSS_UP, _CROSS_UP, _CROSS_UP)
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)
    heads: tuple[int, ...] = (8, 8, 8, 8)
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    upcast_attention: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    center_input_sample: bool = False

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> UNetConfig:
        """Parse a diffusers ``UNet2DConditionModel`` ``config.json`` dict.

        Raises ValueError naming the key for options outside SD 1.x/2.x (SDXL
        addition embeddings, class embeddings, dual cross-attention, ...) and for
        keys this port does not know.
        """
        known = {f.name for f in dataclasses.fields(cls)} | {"attention_head_dim"}
        unknown = sorted(
            k for k in config if not k.startswith("_") and k not in known | set(_FIXED_KEYS) | _IGNORED_KEYS
        )
        if unknown:
            raise ValueError(
                f"unet config has keys this SD 1.x/2.x port does not know: {unknown}. "
                "Only UNet2DConditionModel configs of Stable Diffusion 1.x/2.x are supported."
            )
        for key, allowed in _FIXED_KEYS.items():
            if key in config and config[key] not in allowed:
                raise ValueError(
                    f"unet config {key}={config[key]!r} is not supported (expected one of {list(allowed)}); "
                    "only Stable Diffusion 1.x/2.x UNets are ported."
                )
        defaults = cls()
        down = tuple(config.get("down_block_types", defaults.down_block_types))
        up = tuple(config.get("up_block_types", defaults.up_block_types))
        for name, types, allowed in (("down", down, (_CROSS_DOWN, _PLAIN_DOWN)), ("up", up, (_CROSS_UP, _PLAIN_UP))):
            bad = [t for t in types if t not in allowed]
            if bad:
                raise ValueError(f"unet config {name}_block_types contains unsupported {bad}; expected {allowed}.")
        n = len(down)
        channels = tuple(config.get("block_out_channels", defaults.block_out_channels))
        if len(channels) != n or len(up) != n:
            raise ValueError(
                f"unet config needs as many block_out_channels ({len(channels)}) and up_block_types "
                f"({len(up)}) as down_block_types ({n})."
            )
        cross_dim = config.get("cross_attention_dim", 1280)
        if not isinstance(cross_dim, int):
            raise ValueError(f"unet config cross_attention_dim must be one int, got {cross_dim!r}.")
        heads = _per_block(config.get("attention_head_dim", 8), n, "attention_head_dim")
        for c, h in zip(channels, heads, strict=True):
            if c % h:
                raise ValueError(
                    f"unet block with {c} channels cannot be split into attention_head_dim={h} heads "
                    "(diffusers reads attention_head_dim as the head count); use a divisor of the channels."
                )
        return cls(
            in_channels=config.get("in_channels", defaults.in_channels),
            out_channels=config.get("out_channels", defaults.out_channels),
            block_out_channels=channels,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=_per_block(config.get("layers_per_block", 2), n, "layers_per_block"),
            heads=heads,
            transformer_layers_per_block=_per_block(
                config.get("transformer_layers_per_block", 1), n, "transformer_layers_per_block"
            ),
            cross_attention_dim=cross_dim,
            use_linear_projection=bool(config.get("use_linear_projection", False)),
            upcast_attention=bool(config.get("upcast_attention", False)),
            norm_num_groups=config.get("norm_num_groups", defaults.norm_num_groups),
            norm_eps=float(config.get("norm_eps", defaults.norm_eps)),
            flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
            freq_shift=float(config.get("freq_shift", 0)),
            downsample_padding=config.get("downsample_padding", 1),
            mid_block_scale_factor=float(config.get("mid_block_scale_factor", 1.0)),
            center_input_sample=bool(config.get("center_input_sample", False)),
        )

    @property
    def downsample_factor(self) -> int:
        """Latent height and width must be multiples of this (one halving per down block but the last)."""
        return 2 ** (len(self.down_block_types) - 1)


def timestep_embedding(
    timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0
) -> jax.Array:
    """Sinusoidal embedding of ``timesteps`` [N] -> [N, dim] in float32, as diffusers' ``Timesteps``.

    Frequencies ``exp(-log(max_period) * i / (dim/2 - freq_shift))``; ``[sin, cos]``
    halves, swapped to ``[cos, sin]`` with ``flip_sin_to_cos``; zero-padded if ``dim`` is odd.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    """``linear_1 -> SiLU -> linear_2`` on the sinusoidal embedding."""

    def __init__(self, in_dim: int, out_dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        self.linear_1 = linear(in_dim, out_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_2 = linear(out_dim, out_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class FeedForward(nnx.Module):
    """GEGLU feed-forward: ``proj`` to ``2 * 4 * dim``, ``value * gelu(gate)``, ``out`` back to ``dim``."""

    def __init__(self, dim: int, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        inner = 4 * dim
        self.proj = linear(dim, 2 * inner, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.out = linear(inner, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        value, gate = jnp.split(self.proj(x), 2, axis=-1)
        return self.out(value * jax.nn.gelu(gate, approximate=False))


class BasicTransformerBlock(nnx.Module):
    """Pre-LN block: self-attention, cross-attention on the text, GEGLU feed-forward; each residual."""

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        context_dim: int,
        upcast: bool,
        attention_chunk: AttentionChunk = "auto",
        attention: AttentionImplementation = "auto",
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ln = dict(epsilon=1e-5, use_fast_variance=False, **kw)
        self.norm1 = nnx.LayerNorm(dim, **ln)
        att = dict(heads=heads, head_dim=dim // heads, upcast=upcast, **kw)
        att.update(attention_chunk=attention_chunk, attention=attention)
        self.attn1 = Attention(dim, **att)
        self.norm2 = nnx.LayerNorm(dim, **ln)
        self.attn2 = Attention(dim, context_dim=context_dim, **att)
        self.norm3 = nnx.LayerNorm(dim, **ln)
        self.ff = FeedForward(dim, **kw)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nnx.Module):
    """Spatial transformer: GroupNorm, ``proj_in`` (1x1 conv or linear), blocks, ``proj_out``, residual."""

    def __init__(
        self,
        channels: int,
        *,
        heads: int,
        num_layers: int,
        context_dim: int,
        groups: int,
        use_linear_projection: bool,
        upcast: bool,
        attention_chunk: AttentionChunk = "auto",
        attention: AttentionImplementation = "auto",
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = group_norm(channels, groups, 1e-6, **kw)
        if use_linear_projection:
            self.proj_in = linear(channels, channels, **kw)
            self.proj_out = linear(channels, channels, **kw)
        else:
            self.proj_in = conv(channels, channels, 1, **kw)
            self.proj_out = conv(channels, channels, 1, **kw)
        self.transformer_blocks = nnx.List(
            BasicTransformerBlock(
                channels,
                heads=heads,
                context_dim=context_dim,
                upcast=upcast,
                attention_chunk=attention_chunk,
                attention=attention,
                **kw,
            )
            for _ in range(num_layers)
        )

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        # A 1x1 conv and a linear over channels are the same map in NHWC; only the
        # parameter layout differs, which is why both are kept.
        y = self.proj_in(self.norm(x)).reshape(n, h * w, c)
        for block in self.transformer_blocks:
            y = block(y, context)
        return x + self.proj_out(y.reshape(n, h, w, c))


class DownBlock(nnx.Module):
    """``CrossAttnDownBlock2D`` (with ``attentions``) or ``DownBlock2D`` (without).

    Returns the block output and every intermediate kept as an UNet skip connection.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        cfg: UNetConfig,
        index: int,
        temb_channels: int,
        add_downsample: bool,
        attention_chunk: AttentionChunk = "auto",
        attention: AttentionImplementation = "auto",
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        layers = cfg.layers_per_block[index]
        self.resnets = nnx.List(
            ResnetBlock2D(
                in_channels if i == 0 else out_channels,
                out_channels,
                temb_channels=temb_channels,
                groups=cfg.norm_num_groups,
                eps=cfg.norm_eps,
                **kw,
            )
            for i in range(layers)
        )
        self.attentions = (
            nnx.List(_transformer(out_channels, cfg, index, attention_chunk, attention, **kw) for _ in range(layers))
            if cfg.down_block_types[index] == _CROSS_DOWN
            else None
        )
        self.downsampler = Downsample2D(out_channels, padding=cfg.downsample_padding, **kw) if add_downsample else None

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsampler is not None:
            x = self.downsampler(x)
            skips.append(x)
        return x, tuple(skips)


class UpBlock(nnx.Module):
    """``CrossAttnUpBlock2D`` (with ``attentions``) or ``UpBlock2D``; consumes skips last-first."""

    def __init__(
        self,
        prev_channels: int,
        out_channels: int,
        skip_channels: Sequence[int],
        *,
        cfg: UNetConfig,
        index: int,
        temb_channels: int,
        add_upsample: bool,
        attention_chunk: AttentionChunk = "auto",
        attention: AttentionImplementation = "auto",
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List(
            ResnetBlock2D(
                (prev_channels if i == 0 else out_channels) + skip,
                out_channels,
                temb_channels=temb_channels,
                groups=cfg.norm_num_groups,
                eps=cfg.norm_eps,
                **kw,
            )
            for i, skip in enumerate(skip_channels)
        )
        block_index = len(cfg.block_out_channels) - 1 - index
        self.attentions = (
            nnx.List(
                _transformer(out_channels, cfg, block_index, attention_chunk, attention, **kw) for _ in skip_channels
            )
            if cfg.up_block_types[index] == _CROSS_UP
            else None
        )
        self.upsampler = Upsample2D(out_channels, **kw) if add_upsample else None

    def __call__(self, x: jax.Array, skips: Sequence[jax.Array], temb: jax.Array, context: jax.Array) -> jax.Array:
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips[-1 - i]], axis=-1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsampler is not None:
            x = self.upsampler(x)
        return x


class MidBlock(nnx.Module):
    """``UNetMidBlock2DCrossAttn``: resnet, transformer, resnet."""

    def __init__(
        self,
        channels: int,
        *,
        cfg: UNetConfig,
        temb_channels: int,
        attention_chunk: AttentionChunk = "auto",
        attention: AttentionImplementation = "auto",
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List(
            ResnetBlock2D(
                channels,
                channels,
                temb_channels=temb_channels,
                groups=cfg.norm_num_groups,
                eps=cfg.norm_eps,
                output_scale_factor=cfg.mid_block_scale_factor,
                **kw,
            )
            for _ in range(2)
        )
        last = len(cfg.block_out_channels) - 1
        self.attentions = nnx.List([_transformer(channels, cfg, last, attention_chunk, attention, **kw)])

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array) -> jax.Array:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


def _transformer(
    channels: int,
    cfg: UNetConfig,
    block: int,
    attention_chunk: AttentionChunk,
    attention: AttentionImplementation,
    **kw: Any,
) -> Transformer2DModel:
    return Transformer2DModel(
        channels,
        heads=cfg.heads[block],
        num_layers=cfg.transformer_layers_per_block[block],
        context_dim=cfg.cross_attention_dim,
        groups=cfg.norm_num_groups,
        use_linear_projection=cfg.use_linear_projection,
        upcast=cfg.upcast_attention,
        attention_chunk=attention_chunk,
        attention=attention,
        **kw,
    )


def _apply(module: nnx.Module, *args: Any) -> Any:
    return module(*args)


class UNet2DConditionModel(nnx.Module):
    """The SD 1.x/2.x noise-prediction UNet, NHWC.

    Args:
      config: a :class:`UNetConfig` or a diffusers ``config.json`` dict.
      dtype: compute dtype (float32 or bfloat16). The timestep embedding is
        computed in float32 and cast; attention runs in float32 when the config
        sets ``upcast_attention``.
      param_dtype: dtype the parameters are stored in.
      remat: rematerialise each down/mid/up block in the backward pass
        (``nnx.remat``), trading compute for activation memory when training.
      attention_chunk: score budget of the attention over long sequences, the
        ``chunk`` of :func:`jot.models.sd.layers.multi_head_attention`: when
        ``queries * keys`` exceeds it, attention runs per batch element and head in
        blocks of ``chunk // keys`` query rows (exact softmax per row, same result up
        to float rounding). "auto" (default): 2**19 on CPU (blocks of 128 rows for
        64x64 latents, 512 for 32x32), one shot on GPU/TPU; None: never chunk.
        Applies to the XLA kernel only.
      attention: the attention kernel, see
        :func:`jot.models.sd.layers.resolve_attention`. "auto" (default): cuDNN flash
        attention on a CUDA GPU for bfloat16/float16 models (the 77-token cross-attention
        with its keys padded to 128 and masked, so results are unchanged), XLA otherwise
        (on CPU the blocked path above); "xla": always XLA; "cudnn": cuDNN for every
        attention, float32 projections cast to bfloat16 around the kernel (CUDA only).
      rngs: initialisation randomness (use ``nnx.eval_shape`` to build without
        allocating, as :func:`jot.models.sd.convert.load_module` does).
    """

    def __init__(
        self,
        config: UNetConfig | Mapping[str, Any],
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        remat: bool = False,
        attention_chunk: AttentionChunk = "auto",
        attention: AttentionImplementation = "auto",
        rngs: nnx.Rngs,
    ) -> None:
        check_attention(attention)
        cfg = config if isinstance(config, UNetConfig) else UNetConfig.from_diffusers(config)
        self.config = cfg
        self.dtype = dtype
        self.remat = remat
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        blocks_kw = dict(attention_chunk=attention_chunk, attention=attention, **kw)
        channels = cfg.block_out_channels
        n = len(channels)
        temb_dim = 4 * channels[0]
        self.conv_in = conv(cfg.in_channels, channels[0], 3, **kw)
        self.time_embedding = TimestepEmbedding(channels[0], temb_dim, **kw)

        self.down_blocks = nnx.List()
        skip_channels = [channels[0]]
        for i in range(n):
            in_ch = channels[0] if i == 0 else channels[i - 1]
            add_down = i < n - 1
            self.down_blocks.append(
                DownBlock(
                    in_ch, channels[i], cfg=cfg, index=i, temb_channels=temb_dim, add_downsample=add_down, **blocks_kw
                )
            )
            skip_channels += [channels[i]] * cfg.layers_per_block[i] + ([channels[i]] if add_down else [])

        self.mid_block = MidBlock(channels[-1], cfg=cfg, temb_channels=temb_dim, **blocks_kw)

        self.up_blocks = nnx.List()
        reversed_channels = channels[::-1]
        prev = reversed_channels[0]
        for i in range(n):
            count = cfg.layers_per_block[n - 1 - i] + 1
            skips, skip_channels = skip_channels[-count:][::-1], skip_channels[:-count]
            self.up_blocks.append(
                UpBlock(
                    prev,
                    reversed_channels[i],
                    skips,
                    cfg=cfg,
                    index=i,
                    temb_channels=temb_dim,
                    add_upsample=i < n - 1,
                    **blocks_kw,
                )
            )
            prev = reversed_channels[i]

        self.conv_norm_out = group_norm(channels[0], cfg.norm_num_groups, cfg.norm_eps, **kw)
        self.conv_out = conv(channels[0], cfg.out_channels, 3, **kw)

    def _check_inputs(self, sample: jax.Array, timesteps: jax.Array, context: jax.Array) -> None:
        cfg = self.config
        if sample.ndim != 4 or sample.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"UNet latents must be NHWC [N, H, W, {cfg.in_channels}], got shape {tuple(sample.shape)}; "
                "transpose NCHW latents with x.transpose(0, 2, 3, 1)."
            )
        n, h, w, _ = sample.shape
        f = cfg.downsample_factor
        if h % f or w % f:
            raise ValueError(
                f"UNet latent size {h}x{w} is not divisible by {f} (2 ** (number of down blocks - 1)); "
                f"use latents whose height and width are multiples of {f} "
                f"(images whose sides are multiples of {8 * f} for an 8x VAE)."
            )
        if context.ndim != 3 or context.shape[-1] != cfg.cross_attention_dim:
            raise ValueError(
                f"encoder_hidden_states must be [N, L, {cfg.cross_attention_dim}] (cross_attention_dim), "
                f"got shape {tuple(context.shape)}; use the text encoder this UNet was trained with "
                "(SD 1.x: 768-wide CLIP ViT-L, SD 2.x: 1024-wide OpenCLIP ViT-H)."
            )
        if context.shape[0] != n:
            raise ValueError(f"encoder_hidden_states batch {context.shape[0]} != latents batch {n}.")
        if timesteps.ndim > 1 or (timesteps.ndim == 1 and timesteps.shape[0] not in (1, n)):
            raise ValueError(f"timesteps must be a scalar or shape [{n}], got shape {tuple(timesteps.shape)}.")

    def __call__(self, sample: jax.Array, timesteps: jax.Array | float, encoder_hidden_states: jax.Array) -> jax.Array:
        """Predict the noise ``eps`` [N, H, W, C] of ``sample`` [N, H, W, C] at ``timesteps``.

        ``timesteps`` is a scalar or [N] (integer or fractional diffusion steps in
        ``[0, num_train_timesteps)``); ``encoder_hidden_states`` is [N, L, cross_attention_dim].
        """
        timesteps = jnp.asarray(timesteps)
        self._check_inputs(sample, timesteps, encoder_hidden_states)
        cfg = self.config
        call: Callable[..., Any] = nnx.remat(_apply, graph_updates=False) if self.remat else _apply
        x = sample.astype(self.dtype)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        context = encoder_hidden_states.astype(self.dtype)
        t = jnp.broadcast_to(timesteps, (x.shape[0],))
        t_emb = timestep_embedding(
            t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift
        )
        temb = self.time_embedding(t_emb.astype(self.dtype))

        x = self.conv_in(x)
        skips: list[jax.Array] = [x]
        for block in self.down_blocks:
            x, block_skips = call(block, x, temb, context)
            skips.extend(block_skips)
        x = call(self.mid_block, x, temb, context)
        for block in self.up_blocks:
            count = len(block.resnets)
            x = call(block, x, tuple(skips[-count:]), temb, context)
            skips = skips[:-count]
        x = self.conv_out(self.conv_norm_out(x, silu=True))
        return x
