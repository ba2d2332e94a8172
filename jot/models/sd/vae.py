"""Stable Diffusion ``AutoencoderKL`` (the 8x latent VAE) in Flax NNX, NHWC.

Scaling convention (tested in ``tests/test_sd_vae.py``):

* :meth:`AutoencoderKL.encode` returns **scaled** latents,
  ``(mean - shift_factor) * scaling_factor`` (SD 1.x/2.x: ``mean * 0.18215``), i.e.
  what the UNet was trained on;
* :meth:`AutoencoderKL.decode` takes scaled latents and divides by ``scaling_factor``
  (and adds back ``shift_factor``) before decoding;
* :meth:`AutoencoderKL.moments` and :meth:`AutoencoderKL.decode_unscaled` give the raw,
  unscaled posterior ``(mean, logvar)`` and decoder, matching diffusers'
  ``vae.encode(x).latent_dist`` and ``vae.decode(z)``.

Images are NHWC in ``[-1, 1]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
    _resolve_chunk,
    check_attention,
    conv,
    group_norm,
)

_EPS = 1e-6  # every norm in the diffusers VAE uses eps=1e-6

_FIXED_KEYS: dict[str, tuple[Any, ...]] = {
    "act_fn": ("silu",),
    "latents_mean": (None,),
    "latents_std": (None,),
}
_IGNORED_KEYS = frozenset({"sample_size", "force_upcast"})


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The architecture of an ``AutoencoderKL``; build with :meth:`from_diffusers`."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> VAEConfig:
        """Parse a diffusers ``AutoencoderKL`` ``config.json`` dict (raises on unsupported options)."""
        known = {f.name for f in dataclasses.fields(cls)} | {"down_block_types", "up_block_types"}
        unknown = sorted(
            k for k in config if not k.startswith("_") and k not in known | set(_FIXED_KEYS) | _IGNORED_KEYS
        )
        if unknown:
            raise ValueError(f"vae config has keys this AutoencoderKL port does not know: {unknown}.")
        for key, allowed in _FIXED_KEYS.items():
            if key in config and config[key] not in allowed:
                raise ValueError(
                    f"vae config {key}={config[key]!r} is not supported (expected one of {list(allowed)})."
                )
        channels = tuple(config.get("block_out_channels", (64,)))
        for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            types = tuple(config.get(key, (kind,)))
            if len(types) != len(channels) or any(t != kind for t in types):
                raise ValueError(
                    f"vae config {key}={list(types)} unsupported: expected {len(channels)} x {kind!r} "
                    "(one per block_out_channels entry)."
                )
        shift = config.get("shift_factor")
        return cls(
            in_channels=config.get("in_channels", 3),
            out_channels=config.get("out_channels", 3),
            block_out_channels=channels,
            layers_per_block=config.get("layers_per_block", 1),
            latent_channels=config.get("latent_channels", 4),
            norm_num_groups=config.get("norm_num_groups", 32),
            scaling_factor=float(config.get("scaling_factor", 0.18215)),
            shift_factor=0.0 if shift is None else float(shift),
            use_quant_conv=bool(config.get("use_quant_conv", True)),
            use_post_quant_conv=bool(config.get("use_post_quant_conv", True)),
            mid_block_add_attention=bool(config.get("mid_block_add_attention", True)),
        )

    @property
    def downsample_factor(self) -> int:
        """Image sides must be multiples of this; latents are this much smaller."""
        return 2 ** (len(self.block_out_channels) - 1)


class AttentionBlock(Attention):
    """The VAE's single-head spatial self-attention: ``group_norm``, attention over pixels, residual."""

    def __init__(self, channels: int, *, groups: int, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        super().__init__(
            channels,
            heads=1,
            head_dim=channels,
            qkv_bias=True,
            upcast=True,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.group_norm = group_norm(channels, groups, _EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, context: None = None) -> jax.Array:
        n, h, w, c = x.shape
        y = self.group_norm(x).reshape(n, h * w, c)
        return x + super().__call__(y).reshape(n, h, w, c)


class MidBlock(nnx.Module):
    """``UNetMidBlock2D`` without time embedding: resnet, (attention), resnet."""

    def __init__(
        self, channels: int, *, cfg: VAEConfig, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List(
            ResnetBlock2D(channels, channels, temb_channels=None, groups=cfg.norm_num_groups, eps=_EPS, **kw)
            for _ in range(2)
        )
        self.attentions = (
            nnx.List([AttentionBlock(channels, groups=cfg.norm_num_groups, **kw)])
            if cfg.mid_block_add_attention
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class EncoderBlock(nnx.Module):
    """``DownEncoderBlock2D``: resnets then an optional bottom/right-padded stride-2 conv."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        cfg: VAEConfig,
        add_downsample: bool,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List(
            ResnetBlock2D(
                in_ch if i == 0 else out_ch, out_ch, temb_channels=None, groups=cfg.norm_num_groups, eps=_EPS, **kw
            )
            for i in range(cfg.layers_per_block)
        )
        self.downsampler = Downsample2D(out_ch, padding=0, **kw) if add_downsample else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsampler is None else self.downsampler(x)


class DecoderBlock(nnx.Module):
    """``UpDecoderBlock2D``: ``layers_per_block + 1`` resnets then an optional 2x upsample."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        cfg: VAEConfig,
        add_upsample: bool,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List(
            ResnetBlock2D(
                in_ch if i == 0 else out_ch, out_ch, temb_channels=None, groups=cfg.norm_num_groups, eps=_EPS, **kw
            )
            for i in range(cfg.layers_per_block + 1)
        )
        self.upsampler = Upsample2D(out_ch, **kw) if add_upsample else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsampler is None else self.upsampler(x)


class Encoder(nnx.Module):
    """Image [N, H, W, 3] -> posterior moments [N, H/f, W/f, 2 * latent_channels] (before ``quant_conv``)."""

    def __init__(self, cfg: VAEConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch = cfg.block_out_channels
        self.conv_in = conv(cfg.in_channels, ch[0], 3, **kw)
        self.down_blocks = nnx.List(
            EncoderBlock(ch[max(i - 1, 0)], ch[i], cfg=cfg, add_downsample=i < len(ch) - 1, **kw)
            for i in range(len(ch))
        )
        self.mid_block = MidBlock(ch[-1], cfg=cfg, **kw)
        self.conv_norm_out = group_norm(ch[-1], cfg.norm_num_groups, _EPS, **kw)
        self.conv_out = conv(ch[-1], 2 * cfg.latent_channels, 3, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_norm_out(x, silu=True))


class Decoder(nnx.Module):
    """Unscaled latents [N, h, w, latent_channels] (after ``post_quant_conv``) -> images [N, f*h, f*w, 3]."""

    def __init__(self, cfg: VAEConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch = cfg.block_out_channels[::-1]
        self.conv_in = conv(cfg.latent_channels, ch[0], 3, **kw)
        self.mid_block = MidBlock(ch[0], cfg=cfg, **kw)
        self.up_blocks = nnx.List(
            DecoderBlock(ch[max(i - 1, 0)], ch[i], cfg=cfg, add_upsample=i < len(ch) - 1, **kw) for i in range(len(ch))
        )
        self.conv_norm_out = group_norm(ch[-1], cfg.norm_num_groups, _EPS, **kw)
        self.conv_out = conv(ch[-1], cfg.out_channels, 3, **kw)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_norm_out(x, silu=True))


class AutoencoderKL(nnx.Module):
    """The SD VAE. See the module docstring for the latent scaling convention.

    Args:
      config: a :class:`VAEConfig` or a diffusers ``config.json`` dict.
      dtype: compute dtype; ``param_dtype``: storage dtype of the parameters.
      attention_chunk: the mid-block attention's ``chunk`` (see
        :func:`jot.models.sd.layers.multi_head_attention`): "auto" (default) runs
        long pixel sequences (e.g. 4096 tokens for 512x512 images) in query blocks
        on CPU, None never does, an int sets the score budget.
      attention: the mid-block attention's kernel ("auto", "xla" or "cudnn", see
        :func:`jot.models.sd.layers.resolve_attention`). The SD VAE's single head is 512
        wide, more than cuDNN flash attention takes, so it runs on XLA under every value
        ("cudnn" still requires a CUDA GPU); smaller VAEs (heads of at most 256 channels on
        Hopper, 128 before, multiples of 8) can use cuDNN.
    """

    def __init__(
        self,
        config: VAEConfig | Mapping[str, Any],
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        attention_chunk: AttentionChunk = "auto",
        attention: AttentionImplementation = "auto",
        rngs: nnx.Rngs,
    ) -> None:
        check_attention(attention)
        cfg = config if isinstance(config, VAEConfig) else VAEConfig.from_diffusers(config)
        self.config = cfg
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        latent2 = 2 * cfg.latent_channels
        self.encoder = Encoder(cfg, **kw)
        self.decoder = Decoder(cfg, **kw)
        self.quant_conv = conv(latent2, latent2, 1, **kw) if cfg.use_quant_conv else None
        self.post_quant_conv = (
            conv(cfg.latent_channels, cfg.latent_channels, 1, **kw) if cfg.use_post_quant_conv else None
        )
        _resolve_chunk(attention_chunk)  # validate
        for _, module in self.iter_modules():
            if isinstance(module, Attention):
                module.attention_chunk = attention_chunk
                module.attention = attention

    def _check(self, x: jax.Array, channels: int, what: str, factor: int) -> None:
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(
                f"VAE {what} must be NHWC [N, H, W, {channels}], got shape {tuple(x.shape)}; "
                "transpose NCHW arrays with x.transpose(0, 2, 3, 1)."
            )
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"VAE {what} size {x.shape[1]}x{x.shape[2]} is not divisible by {factor}; resize or crop to a multiple."
            )

    def moments(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Unscaled posterior ``(mean, logvar)`` of NHWC ``images`` in [-1, 1]; logvar clipped to [-30, 20]."""
        self._check(images, self.config.in_channels, "images", self.config.downsample_factor)
        h = self.encoder(images.astype(self.dtype))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def scale(self, z: jax.Array) -> jax.Array:
        """Unscaled VAE latents -> the UNet's latent space: ``(z - shift_factor) * scaling_factor``."""
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def unscale(self, latents: jax.Array) -> jax.Array:
        """Inverse of :meth:`scale`."""
        return latents / self.config.scaling_factor + self.config.shift_factor

    def encode(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Scaled latents of ``images``: the posterior mean, or a posterior sample if ``rng`` is given."""
        mean, logvar = self.moments(images)
        z = mean
        if rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
        return self.scale(z)

    def decode_unscaled(self, z: jax.Array) -> jax.Array:
        """Decode unscaled latents ``z`` (as diffusers' ``vae.decode``) to NHWC images in about [-1, 1]."""
        self._check(z, self.config.latent_channels, "latents", 1)
        z = z.astype(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Decode scaled latents (the output of :meth:`encode` or of a sampler) to images."""
        return self.decode_unscaled(self.unscale(latents))
