"""Building blocks shared by the Stable Diffusion UNet and VAE, NHWC throughout.

Attribute names follow the diffusers PyTorch modules (``norm1``, ``conv1``,
``time_emb_proj``, ``to_q`` ...) so that :mod:`jot.models.sd.convert` maps a
PyTorch state dict onto these modules with a short rule table.

Every module takes ``dtype`` (the compute dtype) and ``param_dtype`` (the dtype
the parameters are stored in). Dtype policy: normalisation statistics and the
attention softmax run in float32 whatever the compute dtype; everything else
(convolutions, projections, the outputs of norms and attention) is in ``dtype``.

Attention runs on one of two kernels, chosen per call by ``attention`` (see
:func:`resolve_attention`): XLA's ``jax.nn.dot_product_attention`` (or, on CPU, the
blocked form of it that ``attention_chunk`` controls), or cuDNN's fused flash
attention on CUDA GPUs (:func:`padded_dot_product_attention`).
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike as DType


class GroupNorm(nnx.GroupNorm):
    """``nnx.GroupNorm`` over the last (channel) axis with an optional fused SiLU.

    The parameters (``scale``, ``bias``) and the statistics are those of
    ``nnx.GroupNorm(use_fast_variance=False)``: per sample and group, mean and
    variance in float32 (two passes). The normalisation, affine map and SiLU
    (``silu=True``, diffusers' ``GroupNorm -> SiLU`` pairs) are one elementwise
    expression in float32 on top of them, cast once to the compute dtype, so XLA
    emits the reductions plus a single elementwise fusion and the activation is
    written once (in the compute dtype) instead of once per op.
    """

    def __call__(self, x: jax.Array, *, silu: bool = False) -> jax.Array:  # type: ignore[override]
        n, c, groups = x.shape[0], x.shape[-1], self.num_groups
        xg = x.reshape(n, -1, groups, c // groups).astype(jnp.float32)
        mean = jnp.mean(xg, axis=(1, 3), keepdims=True)
        var = jnp.mean(jnp.square(xg - mean), axis=(1, 3), keepdims=True)
        mul = jax.lax.rsqrt(var + jnp.float32(self.epsilon))
        if self.scale is not None:
            mul = mul * self.scale[...].astype(jnp.float32).reshape(1, 1, groups, c // groups)
        # Per-channel statistics broadcast over the input's own layout: the elementwise
        # pass then runs over the contiguous channel axis (a [.., groups, c // groups]
        # view has a short minor axis that vectorises worse on CPU).
        per_channel = (n,) + (1,) * (x.ndim - 2) + (c,)
        mean = jnp.broadcast_to(mean, (n, 1, groups, c // groups)).reshape(per_channel)
        y = (x.astype(jnp.float32) - mean) * mul.reshape(per_channel)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        if silu:
            y = jax.nn.silu(y)
        out_dtype = self.dtype if self.dtype is not None else x.dtype
        return y.astype(out_dtype)


def group_norm(
    channels: int, groups: int, eps: float, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs
) -> GroupNorm:
    """``torch.nn.GroupNorm(groups, channels, eps)`` over the last (channel) axis.

    Call the result with ``silu=True`` for ``SiLU(GroupNorm(x))`` in one fusion (:class:`GroupNorm`).
    """
    if channels % groups:
        raise ValueError(
            f"GroupNorm needs channels divisible by groups, got channels={channels}, groups={groups}; "
            "choose block_out_channels that are multiples of norm_num_groups."
        )
    return GroupNorm(
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


# Default score budget of the blocked attention on CPU (see ``multi_head_attention``):
# the largest [query rows, keys] block of scores per batch element and head computed at
# once, 2**19 scores (2 MiB in float32, about one core's L2). SD's 64x64-latent
# self-attention (4096 x 4096) then runs in blocks of 128 query rows per head instead of
# materialising [batch, 8, 4096, 4096] scores (512 MiB per batch element in float32, and
# the softmax keeps several such arrays live), and 1024 x 1024 (32x32 latents, or the
# second level at 64x64) in two blocks per head; cross-attention over 77 text tokens and
# the smaller levels stay on one-shot jax.nn.dot_product_attention.
DEFAULT_ATTENTION_CHUNK = 1 << 19

AttentionChunk = int | Literal["auto"] | None


def _resolve_chunk(chunk: AttentionChunk) -> int | None:
    if isinstance(chunk, str):
        if chunk != "auto":
            raise ValueError(f"attention_chunk must be a positive int, 'auto' or None, got {chunk!r}.")
        # On GPU/TPU the one-shot jax.nn.dot_product_attention is the fast path (and the one
        # a fused kernel can replace); the blocked path is for host caches and host memory.
        return DEFAULT_ATTENTION_CHUNK if jax.default_backend() == "cpu" else None
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"attention_chunk must be a positive int, 'auto' or None, got {chunk!r}.")
    return chunk


# ``attention=`` of Attention, the UNet, the VAE and ``jot.models.sd.load``.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")
AttentionImplementation = Literal["auto", "xla", "cudnn"]

# cuDNN flash attention: query and key sequences are padded up to a multiple of this
# (padded keys masked out, padded query rows dropped). cuDNN's backward rejects some
# short odd lengths such as SD's 77 text tokens; 77 -> 128 keys, and every self-attention
# length of SD at latents that are multiples of 8 (4096, 1024, 256, 64) is already one.
CUDNN_SEQ_MULTIPLE = 64
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# What ``attention="cudnn"`` runs float32 projections in (cuDNN takes bf16/fp16 only).
_CUDNN_FP32_CAST = jnp.bfloat16
# The ``implementation`` the cuDNN path passes to jax.nn.dot_product_attention; tests set
# it to "xla" to run the padded computation on CPU.
_CUDNN_KERNEL = "cudnn"


def check_attention(attention: Any) -> str:
    """Return ``attention`` if it names an attention implementation, else raise ``ValueError``."""
    if not isinstance(attention, str) or attention not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention={attention!r} is not an attention implementation; use one of "
            f"{', '.join(map(repr, ATTENTION_IMPLEMENTATIONS))}: 'auto' (cuDNN flash attention on a CUDA GPU "
            "where dtype and head size allow, XLA elsewhere), 'xla', or 'cudnn' (CUDA GPUs only)."
        )
    return attention


def _cuda_capability() -> tuple[int, int] | None:
    """(major, minor) compute capability of JAX's default device if it is a CUDA GPU, else None."""
    if jax.default_backend() != "gpu":
        return None
    device = jax.local_devices()[0]
    try:
        platform_version = str(device.client.platform_version).lower()
    except AttributeError:
        platform_version = ""
    if "cuda" not in platform_version:
        return None  # ROCm
    try:
        major, minor = (int(part) for part in str(device.compute_capability).split(".")[:2])
    except (AttributeError, ValueError):
        return None
    return major, minor


def cudnn_max_head_dim(capability: tuple[int, int]) -> int:
    """Largest head size cuDNN flash attention takes (bf16/fp16): 256 on Hopper (sm_90) and later, else 128."""
    return 256 if capability >= (9, 0) else 128


def resolve_attention(attention: str, *, dtype: DType, head_dim: int) -> Literal["xla", "cudnn"]:
    """The kernel that ``attention`` selects for projections of ``dtype`` with heads of ``head_dim``.

    * ``"xla"``: always XLA (``jax.nn.dot_product_attention(implementation=None)``, or the
      blocked CPU form when ``attention_chunk`` asks for it).
    * ``"cudnn"``: cuDNN flash attention whenever cuDNN takes the head size (a multiple of
      8, at most :func:`cudnn_max_head_dim`: 256 on H100, 128 before Hopper); other heads
      (the SD VAE's single 512-wide head) fall back to XLA. float32 projections are cast to
      bfloat16 around the kernel (cuDNN has no float32 path; its logits and softmax are
      float32). Raises ``ValueError`` when JAX's default backend is not a CUDA GPU.
    * ``"auto"``: cuDNN on a CUDA GPU when the projections are bfloat16/float16 and the head
      size is accepted, XLA otherwise (float32 models keep float32 attention; CPU keeps the
      blocked path).

    Resolved while tracing, from JAX's default backend.
    """
    check_attention(attention)
    if attention == "xla":
        return "xla"
    capability = _cuda_capability()
    if capability is None:
        if attention == "cudnn":
            raise ValueError(
                f"attention='cudnn' needs a CUDA GPU, but JAX's default backend is {jax.default_backend()!r}; "
                "use attention='auto' (cuDNN on CUDA GPUs, XLA elsewhere) or attention='xla'."
            )
        return "xla"
    head_ok = head_dim % 8 == 0 and head_dim <= cudnn_max_head_dim(capability)
    if attention == "cudnn":
        return "cudnn" if head_ok else "xla"
    return "cudnn" if head_ok and jnp.dtype(dtype) in _CUDNN_DTYPES else "xla"


def padded_dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    multiple: int = CUDNN_SEQ_MULTIPLE,
    implementation: Literal["xla", "cudnn"] | None = "cudnn",
) -> jax.Array:
    """``jax.nn.dot_product_attention`` with both sequences padded up to a multiple of ``multiple``.

    ``q`` [N, Lq, H, D], ``k``/``v`` [N, Lk, H, D] (BTNH, the layout cuDNN takes without a
    transpose); ``mask`` as in :func:`multi_head_attention`. Padded keys get zero weight
    (``key_value_seq_lengths``, or False in the padded ``mask`` when one is given) and padded
    query rows are sliced off, so the result equals unpadded attention up to float rounding
    (the padding adds exact zeros), and so do the gradients w.r.t. ``q``, ``k`` and ``v``
    (the padding's cotangent is dropped). Sequences already at a multiple are not touched.
    ``implementation`` is passed through: "cudnn" on GPU, "xla" runs the same padded
    computation anywhere (how the padding is tested on CPU).
    """
    n, lq = q.shape[:2]
    lk = k.shape[1]
    pad_q, pad_k = -lq % multiple, -lk % multiple

    def pad_seq(x: jax.Array, pad: int) -> jax.Array:
        return jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else x

    q, k, v = pad_seq(q, pad_q), pad_seq(k, pad_k), pad_seq(v, pad_k)
    lengths: dict[str, jax.Array] = {}
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        if pad_q and mask.shape[2] != 1:
            mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad_q), (0, 0)), constant_values=True)
        if pad_k:
            mask = jnp.broadcast_to(mask, mask.shape[:3] + (lk,))
            mask = jnp.pad(mask, ((0, 0), (0, 0), (0, 0), (0, pad_k)), constant_values=False)
    elif pad_q or pad_k:
        lengths = dict(
            query_seq_lengths=jnp.full((n,), lq, jnp.int32), key_value_seq_lengths=jnp.full((n,), lk, jnp.int32)
        )
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation, **lengths)
    return out[:, :lq] if pad_q else out


def _blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, rows: int) -> jax.Array:
    """``jax.nn.dot_product_attention`` one batch element and head at a time, ``rows`` queries at a time.

    ``q`` [N, Lq, H, D], ``k``/``v`` [N, Lk, H, D]. Each query row's softmax runs over
    all keys at once with the same ops as the one-shot XLA implementation (float32
    logits and softmax, probabilities cast to the value dtype), so the result is the
    same up to float rounding; only the live score array shrinks from ``[N, H, Lq, Lk]``
    to ``[rows, Lk]``, which on CPU stays in cache (and is several times faster).
    """
    n, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    blocks = -(-lq // rows)
    rows = -(-lq // blocks)  # same number of blocks, least padding
    pad = blocks * rows - lq
    scale = head_dim**-0.5
    logits_dtype = jnp.promote_types(q.dtype, jnp.float32)
    precision = {
        jnp.dtype(jnp.bfloat16): jax.lax.DotAlgorithmPreset.BF16_BF16_F32,
        jnp.dtype(jnp.float16): jax.lax.DotAlgorithmPreset.F16_F16_F32,
    }.get(jnp.dtype(q.dtype))

    def per_head(x: jax.Array) -> jax.Array:  # [N, L, H, D] -> [N * H, L, D]
        return jnp.moveaxis(x, 2, 1).reshape(n * heads, x.shape[1], head_dim)

    q, k, v = per_head(q), per_head(k), per_head(v)
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0))) if pad else q
    qb = q.reshape(n * heads, blocks, rows, head_dim)
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        if mask.shape[2] != 1:
            mask = jnp.broadcast_to(mask, mask.shape[:2] + (lq, lk))
            mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad), (0, 0)), constant_values=True) if pad else mask
        mask_rows = mask.shape[2] != 1
        mask = mask.reshape(mask.shape[:2] + ((blocks, rows) if mask_rows else (1, 1)) + mask.shape[3:])
    large_negative = jnp.asarray(-0.7 * jnp.finfo(jnp.float32).max, logits_dtype)

    def block(qi: jax.Array, ki: jax.Array, vi: jax.Array, mi: jax.Array | None) -> jax.Array:
        logits = jnp.einsum("qd,kd->qk", qi, ki, precision=precision, preferred_element_type=logits_dtype)
        logits = logits * jnp.asarray(scale, logits_dtype)
        if mi is not None:
            logits = jnp.where(mi, logits, large_negative)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(vi.dtype)
        return jnp.einsum("qk,kd->qd", probs, vi)

    def head(args: tuple[jax.Array, ...]) -> jax.Array:
        index, qh, kh, vh = args
        if mask is None:
            return jax.lax.map(lambda qi: block(qi, kh, vh, None), qh)
        mh = mask[index // heads if mask.shape[0] > 1 else 0, index % heads if mask.shape[1] > 1 else 0]
        if mask.shape[2] == 1:  # the same mask rows for every block
            return jax.lax.map(lambda qi: block(qi, kh, vh, mh[0]), qh)
        return jax.lax.map(lambda qm: block(qm[0], kh, vh, qm[1]), (qh, mh))

    out = jax.lax.map(head, (jnp.arange(n * heads), qb, k, v))  # [N * H, blocks, rows, D]
    out = out.reshape(n * heads, blocks * rows, head_dim)[:, :lq]
    return jnp.moveaxis(out.reshape(n, heads, lq, head_dim), 1, 2)


def multi_head_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    heads: int,
    upcast: bool = False,
    mask: jax.Array | None = None,
    chunk: AttentionChunk = None,
    attention: AttentionImplementation = "xla",
) -> jax.Array:
    """Scaled dot-product attention of ``[N, L, heads * d]`` projections.

    Scale ``d ** -0.5``. ``mask`` is a boolean array broadcastable to
    ``[N, heads, Lq, Lk]``, True = attend. ``attention`` picks the kernel
    (:func:`resolve_attention`):

    * XLA: ``jax.nn.dot_product_attention``. With ``upcast`` the scores, softmax and
      weighted sum run in float32 and the result is cast back to the input dtype
      (diffusers' ``upcast_attention`` / ``upcast_softmax``). ``chunk`` bounds memory
      for long sequences: when ``Lq * Lk`` exceeds it, attention runs one batch element
      and head at a time over blocks of about ``chunk // Lk`` query rows
      (``jax.lax.map``; all keys per block, so each row's softmax is exact and the result
      equals the one-shot computation up to float rounding). None never chunks; "auto"
      uses :data:`DEFAULT_ATTENTION_CHUNK` on CPU and never chunks on other backends.
    * cuDNN: :func:`padded_dot_product_attention` in the projections' dtype (float32 cast
      to bfloat16). cuDNN's logits and softmax are float32, which is what ``upcast`` asks
      for, so ``upcast`` does not cast its inputs; ``chunk`` does not apply (flash
      attention never materialises the scores).
    """
    n, lq, width = q.shape
    lk = k.shape[1]
    head_dim = width // heads
    out_dtype = q.dtype
    q = q.reshape(n, lq, heads, head_dim)
    k = k.reshape(n, lk, heads, head_dim)
    v = v.reshape(n, lk, heads, head_dim)
    if resolve_attention(attention, dtype=q.dtype, head_dim=head_dim) == "cudnn":
        kernel_dtype = q.dtype if jnp.dtype(q.dtype) in _CUDNN_DTYPES else _CUDNN_FP32_CAST
        q, k, v = (a.astype(kernel_dtype) for a in (q, k, v))
        out = padded_dot_product_attention(q, k, v, mask=mask, implementation=_CUDNN_KERNEL)
        return out.reshape(n, lq, width).astype(out_dtype)
    if upcast:
        q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
    budget = _resolve_chunk(chunk)
    if budget is not None and lq * lk > budget:
        out = _blocked_attention(q, k, v, mask, max(1, budget // lk))
    else:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return out.reshape(n, lq, width).astype(out_dtype)


class Attention(nnx.Module):
    """diffusers ``Attention``: ``to_q``/``to_k``/``to_v`` projections, attention, ``to_out``.

    Self-attention when ``context`` is None in the call, cross-attention otherwise.
    ``attention`` picks the kernel ("auto", "xla" or "cudnn", see
    :func:`resolve_attention`); ``attention_chunk`` is the ``chunk`` of
    :func:`multi_head_attention` (score budget per batch element and head above which
    queries go in blocks on the XLA path).
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
        attention: AttentionImplementation = "auto",
        dtype: DType,
        param_dtype: DType,
        rngs: nnx.Rngs,
    ) -> None:
        _resolve_chunk(attention_chunk)  # validate early
        check_attention(attention)
        inner = heads * head_dim
        kv_dim = query_dim if context_dim is None else context_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = heads
        self.upcast = upcast
        self.attention_chunk = attention_chunk
        self.attention = attention
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
            attention=self.attention,
        )
        return self.to_out(out)


class ResnetBlock2D(nnx.Module):
    """diffusers ``ResnetBlock2D`` (``time_embedding_norm="default"``, SiLU).

    ``GN -> SiLU -> conv3x3 (+ Linear(SiLU(temb))) -> GN -> SiLU -> conv3x3``, plus a
    1x1 ``conv_shortcut`` when the channel count changes, divided by
    ``output_scale_factor``. Each ``GN -> SiLU`` is one fused :class:`GroupNorm` call.
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
        h = self.conv1(self.norm1(x, silu=True))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(self.norm2(h, silu=True))
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
