"""Building blocks shared by the Stable Diffusion UNet and VAE, NHWC throughout.

Attribute names follow the diffusers PyTorch modules (``norm1``, ``conv1``,
``time_emb_proj``, ``to_q`` ...) so that :mod:`jot.models.sd.convert` maps a
PyTorch state dict onto these modules with a short rule table.

Every module takes ``dtype`` (the compute dtype) and ``param_dtype`` (the dtype
the parameters are stored in); normalisation statistics are computed in float32
by Flax whatever the compute dtype.
"""

from __future__ import annotations

from typing import Literal

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


# Default score budget of the chunked attention on CPU (see ``multi_head_attention``):
# the largest [query rows, keys] block of scores per batch element and head computed at
# once. 2**20 scores (4 MiB in float32) keeps SD's 64x64-latent self-attention
# (4096 x 4096) in blocks of 256 query rows that stay in cache, instead of a
# [batch, heads, 4096, 4096] array of several GiB; 32x32 (1024 x 1024) and all
# cross-attention (77 keys) stay on the one-shot path.
DEFAULT_ATTENTION_CHUNK = 1 << 20

AttentionChunk = int | Literal["auto"] | None


def _resolve_chunk(chunk: AttentionChunk) -> int | None:
    if chunk == "auto":
        # On GPU/TPU the one-shot jax.nn.dot_product_attention is the fast path
        # (and the one a fused kernel can replace); chunking is for host memory.
        return DEFAULT_ATTENTION_CHUNK if jax.default_backend() == "cpu" else None
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"attention_chunk must be a positive int, 'auto' or None, got {chunk!r}.")
    return chunk


def _attention_blocks(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, rows: int
) -> jax.Array:
    """``jax.nn.dot_product_attention`` over blocks of ``rows`` queries, one block at a time.

    Each query row's softmax runs over all keys at once, exactly as in the one-shot
    call (same ops per block), so the result is the same; only the peak size of the
    score array changes, ``[N, heads, rows, Lk]`` instead of ``[N, heads, Lq, Lk]``.
    """
    n, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    blocks = -(-lq // rows)
    rows = -(-lq // blocks)  # same number of blocks, least padding
    pad = blocks * rows - lq
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else q
    qb = jnp.moveaxis(q.reshape(n, blocks, rows, heads, head_dim), 1, 0)  # [blocks, N, rows, H, D]
    if mask is not None and mask.shape[-2] != 1:
        mask = jnp.asarray(mask, bool)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        mask = jnp.broadcast_to(mask, mask.shape[:2] + (lq, lk))
        mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad), (0, 0)), constant_values=True) if pad else mask
        mb = jnp.moveaxis(mask.reshape(mask.shape[:2] + (blocks, rows, lk)), 2, 0)  # [blocks, ., ., rows, Lk]
        out = jax.lax.map(lambda qm: jax.nn.dot_product_attention(qm[0], k, v, mask=qm[1]), (qb, mb))
    else:
        out = jax.lax.map(lambda qi: jax.nn.dot_product_attention(qi, k, v, mask=mask), qb)
    out = jnp.moveaxis(out, 0, 1).reshape(n, blocks * rows, heads, head_dim)
    return out[:, :lq] if pad else out


def multi_head_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    heads: int,
    upcast: bool = False,
    mask: jax.Array | None = None,
    chunk: AttentionChunk = None,
) -> jax.Array:
    """Scaled dot-product attention of ``[N, L, heads * d]`` projections.

    Uses ``jax.nn.dot_product_attention`` (scale ``d ** -0.5``). With ``upcast``
    the scores, softmax and weighted sum run in float32 and the result is cast
    back to the input dtype (diffusers' ``upcast_attention`` / ``upcast_softmax``).
    ``mask`` is a boolean array broadcastable to ``[N, heads, Lq, Lk]``, True = attend.

    ``chunk`` bounds memory for long sequences: when ``Lq * Lk`` exceeds it, the
    queries are processed in blocks of about ``chunk // Lk`` rows (``jax.lax.map``,
    all keys per block, so each row's softmax is exact and the result equals the
    one-shot computation up to float rounding). None never chunks; "auto" uses
    :data:`DEFAULT_ATTENTION_CHUNK` on CPU and never chunks on other backends.
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
    budget = _resolve_chunk(chunk)
    if budget is not None and lq * lk > budget and lq > 1:
        out = _attention_blocks(q, k, v, mask, max(1, budget // lk))
    else:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return out.reshape(n, lq, width).astype(out_dtype)


class Attention(nnx.Module):
    """diffusers ``Attention``: ``to_q``/``to_k``/``to_v`` projections, attention, ``to_out``.

    Self-attention when ``context`` is None in the call, cross-attention otherwise.
    ``attention_chunk`` is the ``chunk`` of :func:`multi_head_attention` (score
    budget per batch element and head above which queries go in blocks).
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
        attention_chunk: AttentionChunk = "auto",
        dtype: DType,
        param_dtype: DType,
        rngs: nnx.Rngs,
    ) -> None:
        _resolve_chunk(attention_chunk)  # validate early
        inner = heads * head_dim
        kv_dim = query_dim if context_dim is None else context_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = heads
        self.upcast = upcast
        self.attention_chunk = attention_chunk
        self.to_q = linear(query_dim, inner, use_bias=qkv_bias, **kw)
        self.to_k = linear(kv_dim, inner, use_bias=qkv_bias, **kw)
        self.to_v = linear(kv_dim, inner, use_bias=qkv_bias, **kw)
        self.to_out = linear(inner, query_dim, **kw)

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """``x``: [N, L, query_dim]; ``context``: [N, S, context_dim] or None."""
        context = x if context is None else context
        out = multi_head_attention(
            self.to_q(x),
            self.to_k(context),
            self.to_v(context),
            heads=self.heads,
            upcast=self.upcast,
            chunk=self.attention_chunk,
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
