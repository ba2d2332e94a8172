"""Building blocks shared by the Stable Diffusion UNet and VAE, NHWC throughout.

Attribute names follow the diffusers PyTorch modules (``norm1``, ``conv1``,
``time_emb_proj``, ``to_q`` ...) so that :mod:`jot.models.sd.convert` maps a
PyTorch state dict onto these modules with a short rule table.

Every module takes ``dtype`` (the compute dtype) and ``param_dtype`` (the dtype
the parameters are stored in); normalisation statistics are computed in float32
by Flax whatever the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike as DType


def group_norm(
    channels: int, groups: int, eps: float, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs
) -> nnx.GroupNorm:
    """``torch.nn.GroupNorm(groups, channels, eps)`` over the last (channel) axis."""
    if channels % groups:
        raise ValueError(
            f"GroupNorm needs channels divisible by groups, got channels={channels}, groups={groups}; "
            "choose block_out_channels that are multiples of norm_num_groups."
        )
    return nnx.GroupNorm(
        channels,
        num_groups=groups,
        epsilon=eps,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def conv(
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: tuple[tuple[int, int], tuple[int, int]] | None = None,
    dtype: DType,
    param_dtype: DType,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A 2D convolution with PyTorch's symmetric padding (``kernel // 2``) unless given."""
    if padding is None:
        p = kernel // 2
        padding = ((p, p), (p, p))
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def linear(
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    dtype: DType,
    param_dtype: DType,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """``torch.nn.Linear(in_features, out_features, bias=use_bias)``."""
    return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def multi_head_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    heads: int,
    upcast: bool = False,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Scaled dot-product attention of ``[N, L, heads * d]`` projections.

    Uses ``jax.nn.dot_product_attention`` (scale ``d ** -0.5``). With ``upcast``
    the scores, softmax and weighted sum run in float32 and the result is cast
    back to the input dtype (diffusers' ``upcast_attention`` / ``upcast_softmax``).
    ``mask`` is a boolean array broadcastable to ``[N, heads, Lq, Lk]``, True = attend.
    """
    n, lq, width = q.shape
    lk = k.shape[1]
    head_dim = width // heads
    out_dtype = q.dtype
    q = q.reshape(n, lq, heads, head_dim)
    k = k.reshape(n, lk, heads, head_dim)
    v = v.reshape(n, lk, heads, head_dim)
    if upcast:
        q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return out.reshape(n, lq, width).astype(out_dtype)


class Attention(nnx.Module):
    """diffusers ``Attention``: ``to_q``/``to_k``/``to_v`` projections, attention, ``to_out``.

    Self-attention when ``context`` is None in the call, cross-attention otherwise.
    """

    def __init__(
        self,
        query_dim: int,
        *,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        qkv_bias: bool = False,
        upcast: bool = False,
        dtype: DType,
        param_dtype: DType,
        rngs: nnx.Rngs,
    ) -> None:
        inner = heads * head_dim
        kv_dim = query_dim if context_dim is None else context_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = heads
        self.upcast = upcast
        self.to_q = linear(query_dim, inner, use_bias=qkv_bias, **kw)
        self.to_k = linear(kv_dim, inner, use_bias=qkv_bias, **kw)
        self.to_v = linear(kv_dim, inner, use_bias=qkv_bias, **kw)
        self.to_out = linear(inner, query_dim, **kw)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``x``: [N, L, query_dim]; ``context``: [N, S, context_dim] or None."""
        context = x if context is None else context
        out = multi_head_attention(
            self.to_q(x), self.to_k(context), self.to_v(context), heads=self.heads, upcast=self.upcast
        )
        return self.to_out(out)


class ResnetBlock2D(nnx.Module):
    """diffusers ``ResnetBlock2D`` (``time_embedding_norm="default"``, SiLU).

    ``GN -> SiLU -> conv3x3 (+ Linear(SiLU(temb))) -> GN -> SiLU -> conv3x3``, plus a
    1x1 ``conv_shortcut`` when the channel count changes, divided by
    ``output_scale_factor``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        temb_channels: int | None,
        groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
        dtype: DType,
        param_dtype: DType,
        rngs: nnx.Rngs,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.output_scale_factor = output_scale_factor
        self.norm1 = group_norm(in_channels, groups, eps, **kw)
        self.conv1 = conv(in_channels, out_channels, 3, **kw)
        self.time_emb_proj = linear(temb_channels, out_channels, **kw) if temb_channels is not None else None
        self.norm2 = group_norm(out_channels, groups, eps, **kw)
        self.conv2 = conv(out_channels, out_channels, 3, **kw)
        self.conv_shortcut = conv(in_channels, out_channels, 1, **kw) if in_channels != out_channels else None

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        """``x``: [N, H, W, C_in]; ``temb``: [N, temb_channels] (required iff built with one)."""
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nnx.Module):
    """Stride-2 3x3 ``conv``; ``padding=1`` pads both sides, ``padding=0`` pads bottom/right only."""

    def __init__(self, channels: int, *, padding: int, dtype: DType, param_dtype: DType, rngs: nnx.Rngs) -> None:
        if padding not in (0, 1):
            raise ValueError(f"downsample padding must be 0 or 1, got {padding}.")
        pads = ((1, 1), (1, 1)) if padding == 1 else ((0, 1), (0, 1))
        self.conv = conv(channels, channels, 3, stride=2, padding=pads, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 ``conv``."""

    def __init__(self, channels: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs) -> None:
        self.conv = conv(channels, channels, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)
