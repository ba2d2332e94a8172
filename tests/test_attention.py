"""The attention implementations of the SD layers (``attention="auto" | "xla" | "cudnn"``) and the fused GroupNorm.

cuDNN needs a CUDA GPU, so the cuDNN path is checked on CPU through its padding: the
sequences are padded to :data:`CUDNN_SEQ_MULTIPLE` with the padded keys masked out and the
padded queries dropped, then run with ``implementation="xla"`` (the ``cudnn_on_cpu``
fixture also pretends the device is an H100 so that ``resolve_attention`` picks cuDNN).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jot.models import sd
from jot.models.sd import AutoencoderKL, UNet2DConditionModel, layers
from jot.models.sd.layers import (
    Attention,
    GroupNorm,
    check_attention,
    multi_head_attention,
    padded_dot_product_attention,
    resolve_attention,
)

FAST_COMPILE = {"xla_backend_optimization_level": 0}
DTYPES = [jnp.float32, jnp.bfloat16]
# Padding adds exact zeros to every sum, so the padded path agrees to rounding of the
# reduction order: fp32 to a few ulps, bf16 to about one bf16 ulp of the outputs.
TOL = {jnp.float32: 1e-6, jnp.bfloat16: 1e-2}

TINY_UNET = dict(
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=2,  # two heads of 8 channels: a head size cuDNN takes
    cross_attention_dim=8,
    norm_num_groups=8,
)


def cudnn_on_cpu(monkeypatch, fp32_cast=jnp.float32):
    """Make ``resolve_attention`` see an H100 and run the cuDNN path's padded computation with XLA.

    ``fp32_cast`` is what float32 projections are cast to on that path (bfloat16 on a GPU);
    float32 here makes the padded path comparable with the XLA path to float32 rounding.
    Returns a list that records the ``Lq, Lk`` of every padded call (proof the path ran).
    """
    calls = []
    padded = layers.padded_dot_product_attention

    def spy(q, k, v, **kw):
        calls.append((q.shape[1], k.shape[1]))
        return padded(q, k, v, **kw)

    monkeypatch.setattr(layers, "_cuda_capability", lambda: (9, 0))
    monkeypatch.setattr(layers, "_CUDNN_KERNEL", "xla")
    monkeypatch.setattr(layers, "_CUDNN_FP32_CAST", fp32_cast)
    monkeypatch.setattr(layers, "padded_dot_product_attention", spy)
    return calls


def _qkv(dtype, lq=37, lk=77, heads=2, head_dim=8, n=2, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((n, length, heads, head_dim)) for length in (lq, lk, lk))
    return tuple(jnp.asarray(a, dtype) for a in (q, k, v))


def _maxdiff(a, b) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("masked", [False, True], ids=["lengths", "mask"])
def test_padded_attention_equals_unpadded(dtype, masked):
    """77 text keys -> 128 and 37 queries -> 64, masked: same outputs and q/k/v gradients as unpadded."""
    q, k, v = _qkv(dtype)
    mask = None
    if masked:  # a per-example key mask and a full [N, H, Lq, Lk] one
        rng = np.random.default_rng(1)
        mask = jnp.asarray(rng.random((2, 2, 37, 77)) > 0.3)
    cot = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape), dtype)

    def plain(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=mask)

    def padded(q, k, v):
        return padded_dot_product_attention(q, k, v, mask=mask, implementation="xla")

    assert padded(q, k, v).shape == q.shape and padded(q, k, v).dtype == dtype
    assert _maxdiff(padded(q, k, v), plain(q, k, v)) <= TOL[dtype]
    for fn in (plain, padded):  # the padded path really pads
        jaxpr = str(jax.make_jaxpr(fn)(q, k, v))
        assert ("pad" in jaxpr) == (fn is padded)

    def grads(fn):
        return jax.grad(lambda q, k, v: jnp.sum((fn(q, k, v) * cot).astype(jnp.float32)), argnums=(0, 1, 2))(q, k, v)

    for name, got, want in zip("qkv", grads(padded), grads(plain)):
        scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
        err = _maxdiff(got, want)
        print(f"{jnp.dtype(dtype).name} d{name}: max abs diff {err:.1e}, scale {scale:.2f}")
        assert got.shape == want.shape and scale > 0
        assert err <= TOL[dtype] * max(1.0, scale)


def test_padded_attention_leaves_aligned_lengths_alone():
    q, k, v = _qkv(jnp.float32, lq=64, lk=128)
    jaxpr = str(jax.make_jaxpr(lambda q, k, v: padded_dot_product_attention(q, k, v, implementation="xla"))(q, k, v))
    assert "pad" not in jaxpr


def test_check_attention_rejects_unknown_values():
    for bad in ("flash", "XLA", None, 1):
        with pytest.raises(ValueError, match=r"attention=.* is not an attention implementation; use one of 'auto', "):
            check_attention(bad)
    kw = dict(heads=2, head_dim=8, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"attention='flash' is not"):
        Attention(16, attention="flash", **kw)
    with pytest.raises(ValueError, match=r"attention='flash' is not"):
        nnx.eval_shape(lambda: UNet2DConditionModel(TINY_UNET, attention="flash", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"attention='cuda' is not"):
        nnx.eval_shape(lambda: AutoencoderKL({}, attention="cuda", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"attention='flash' is not"):  # before looking at the folder
        sd.load("/nonexistent/stable-diffusion", attention="flash")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU resolution")
def test_auto_is_xla_on_cpu_and_cudnn_needs_cuda():
    for dtype in DTYPES:
        assert resolve_attention("auto", dtype=dtype, head_dim=40) == "xla"
        assert resolve_attention("xla", dtype=dtype, head_dim=40) == "xla"
    with pytest.raises(ValueError, match=r"attention='cudnn' needs a CUDA GPU, but JAX's default backend is 'cpu'"):
        resolve_attention("cudnn", dtype=jnp.bfloat16, head_dim=40)
    # "auto" on CPU keeps the blocked path for long sequences (lax.map -> scan), one-shot XLA for short ones
    def jaxpr(lq, lk):
        q, kv = jnp.zeros((1, lq, 16), jnp.bfloat16), jnp.zeros((1, lk, 16), jnp.bfloat16)
        fn = lambda q, k, v: multi_head_attention(q, k, v, heads=2, chunk="auto", attention="auto")  # noqa: E731
        return str(jax.make_jaxpr(fn)(q, kv, kv))

    long_jaxpr, short_jaxpr = jaxpr(1024, 1024), jaxpr(64, 77)
    assert "scan" in long_jaxpr and "pad" not in long_jaxpr
    assert "scan" not in short_jaxpr and "pad" not in short_jaxpr


def test_resolve_attention_rules(monkeypatch):
    monkeypatch.setattr(layers, "_cuda_capability", lambda: (9, 0))
    bf16, fp32 = jnp.bfloat16, jnp.float32
    assert resolve_attention("auto", dtype=bf16, head_dim=40) == "cudnn"
    assert resolve_attention("auto", dtype=jnp.float16, head_dim=160) == "cudnn"  # SD 1.5's deepest heads, Hopper
    assert resolve_attention("auto", dtype=fp32, head_dim=40) == "xla"  # float32 models keep float32 attention
    assert resolve_attention("cudnn", dtype=fp32, head_dim=40) == "cudnn"  # ... unless cuDNN is asked for
    for attention in ("auto", "cudnn"):
        assert resolve_attention(attention, dtype=bf16, head_dim=512) == "xla"  # the SD VAE's single head
        assert resolve_attention(attention, dtype=bf16, head_dim=12) == "xla"  # not a multiple of 8
    assert resolve_attention("xla", dtype=bf16, head_dim=40) == "xla"
    monkeypatch.setattr(layers, "_cuda_capability", lambda: (8, 0))  # A100: heads up to 128
    assert resolve_attention("auto", dtype=bf16, head_dim=160) == "xla"
    assert resolve_attention("auto", dtype=bf16, head_dim=128) == "cudnn"


def _attention_pair(dtype, *, context_dim=None, upcast=False):
    kw = dict(heads=2, head_dim=8, context_dim=context_dim, upcast=upcast, dtype=dtype, param_dtype=jnp.float32)
    xla = Attention(16, attention="xla", rngs=nnx.Rngs(0), **kw)
    cudnn = Attention(16, attention="cudnn", rngs=nnx.Rngs(0), **kw)
    return xla, cudnn


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("upcast", [False, True], ids=["plain", "upcast"])
def test_attention_module_cudnn_path_equals_xla(monkeypatch, dtype, upcast):
    """Self- and cross-attention (77 text tokens) via the padded path: outputs and the
    gradients w.r.t. the input and the text embeddings equal the XLA path's."""
    calls = cudnn_on_cpu(monkeypatch)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 40, 16)), dtype)
    text = jnp.asarray(rng.standard_normal((2, 77, 12)), dtype)
    for context in (None, text):
        xla, cudnn = _attention_pair(dtype, context_dim=None if context is None else 12, upcast=upcast)

        outs, grads = [], []
        for module in (xla, cudnn):

            def loss(x, context, module=module):
                return jnp.sum(jnp.sin(module(x, context).astype(jnp.float32)))

            outs.append(module(x, context))
            grads.append(jax.grad(loss, argnums=(0, 1))(x, context if context is not None else x))
        assert outs[1].dtype == outs[0].dtype == dtype
        assert _maxdiff(outs[1], outs[0]) <= TOL[dtype]
        for got, want in zip(grads[1], grads[0]):
            scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
            assert scale > 0 and _maxdiff(got, want) <= TOL[dtype] * max(1.0, scale)
    assert (40, 77) in calls and (40, 40) in calls  # cross- and self-attention both took the padded path


def test_attention_cudnn_casts_fp32_to_bf16(monkeypatch):
    """attention="cudnn" on a float32 model runs the kernel in bfloat16 and returns float32."""
    calls = cudnn_on_cpu(monkeypatch, fp32_cast=jnp.bfloat16)
    dtypes = []
    padded = layers.padded_dot_product_attention

    def spy(q, k, v, **kw):
        dtypes.append(q.dtype)
        return padded(q, k, v, **kw)

    monkeypatch.setattr(layers, "padded_dot_product_attention", spy)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 40, 16)), jnp.float32)
    xla, cudnn = _attention_pair(jnp.float32)
    out = cudnn(x)
    assert dtypes == [jnp.bfloat16] and len(calls) == 1
    assert out.dtype == jnp.float32
    rel = _maxdiff(out, xla(x)) / float(jnp.max(jnp.abs(xla(x))))
    assert 0 < rel < 2e-2  # bf16 rounding of the projections, not a different computation


@pytest.fixture(scope="module")
def tiny_unet():
    """Inputs of the tiny UNet: 8x8 latents and 77 text tokens (models are rebuilt from nnx.Rngs(0))."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 4)), jnp.float32)
    ctx = jnp.asarray(rng.standard_normal((2, 77, 8)), jnp.float32)
    return x, ctx


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_unet_cudnn_path_equals_xla(monkeypatch, tiny_unet, dtype):
    """The whole UNet with every attention on the padded (cuDNN-layout) path equals attention="xla"."""
    x, ctx = tiny_unet
    outs = {}
    for attention in ("xla", "cudnn"):
        calls = cudnn_on_cpu(monkeypatch)
        model = UNet2DConditionModel(TINY_UNET, dtype=dtype, attention=attention, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        fn = jax.jit(lambda p, x, c: nnx.merge(graphdef, p)(x, 500.0, c), compiler_options=FAST_COMPILE)
        outs[attention] = fn(params, x, ctx)
        # 8x8 latents: self-attention over 64 tokens (no padding) and 16 in the mid block (-> 64),
        # cross-attention over 77 text tokens (-> 128)
        assert (len(calls) > 0) == (attention == "cudnn")
        assert set(calls) == ({(64, 64), (64, 77), (16, 16), (16, 77)} if attention == "cudnn" else set())
    scale = float(jnp.max(jnp.abs(outs["xla"].astype(jnp.float32))))
    err = _maxdiff(outs["cudnn"], outs["xla"])
    print(f"UNet {jnp.dtype(dtype).name}: padded vs xla attention max abs diff {err:.1e}, output scale {scale:.2f}")
    assert scale > 0.1
    assert err <= (1e-5 if dtype == jnp.float32 else 2e-2) * max(1.0, scale)


def test_unet_text_gradient_cudnn_path_equals_xla(monkeypatch, tiny_unet):
    """The textual-inversion gradient (w.r.t. the text embeddings, UNet frozen) is the same on the padded path."""
    x, ctx = tiny_unet
    grads = {}
    for attention in ("xla", "cudnn"):
        cudnn_on_cpu(monkeypatch)
        graphdef, params = nnx.split(UNet2DConditionModel(TINY_UNET, attention=attention, rngs=nnx.Rngs(0)))
        loss = lambda c, p=params, g=graphdef: jnp.mean(nnx.merge(g, p)(x, 500.0, c) ** 2)  # noqa: E731
        grads[attention] = jax.jit(jax.grad(loss), compiler_options=FAST_COMPILE)(ctx)
    scale = float(jnp.max(jnp.abs(grads["xla"])))
    assert scale > 0
    assert _maxdiff(grads["cudnn"], grads["xla"]) <= 1e-5 * max(1.0, scale)


def test_vae_attention_option(monkeypatch):
    """The VAE passes ``attention`` to its mid-block attention; a 32-wide head takes the padded path."""
    cfg = dict(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
    )
    z = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 5, 4)), jnp.float32)  # 25 pixels -> 64
    outs = {}
    for attention in ("xla", "cudnn"):
        calls = cudnn_on_cpu(monkeypatch)
        model = AutoencoderKL(cfg, attention=attention, rngs=nnx.Rngs(0))
        assert all(m.attention == attention for _, m in model.iter_modules() if isinstance(m, Attention))
        outs[attention] = model.decode_unscaled(z)
        assert calls == ([(25, 25)] if attention == "cudnn" else [])
    assert _maxdiff(outs["cudnn"], outs["xla"]) <= 1e-5 * max(1.0, float(jnp.max(jnp.abs(outs["xla"]))))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_group_norm_silu_matches_flax(dtype):
    """Fused GroupNorm(+SiLU) equals nnx.GroupNorm (then SiLU) computed in float32; output in the compute dtype."""
    rng = np.random.default_rng(0)
    kw = dict(num_groups=8, epsilon=1e-5, use_fast_variance=False, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    fused = GroupNorm(64, dtype=dtype, **kw)
    ref = nnx.GroupNorm(64, dtype=jnp.float32, **kw)
    scale = jnp.asarray(1 + 0.3 * rng.standard_normal(64), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(64), jnp.float32)
    for module in (fused, ref):
        module.scale[...], module.bias[...] = scale, bias
    x = jnp.asarray(3 * rng.standard_normal((2, 6, 10, 64)) + 2, dtype)  # a large mean, as after a residual
    want = ref(x.astype(jnp.float32))
    for silu in (False, True):
        got = fused(x, silu=silu)
        assert got.dtype == dtype and got.shape == x.shape
        expected = jax.nn.silu(want) if silu else want
        tol = 1e-5 if dtype == jnp.float32 else 2e-2 * float(jnp.max(jnp.abs(expected)))
        assert _maxdiff(got, expected) <= tol
    # statistics in float32 even for bf16 inputs: a bf16 sum over the group would be far off
    assert "f32" in str(jax.make_jaxpr(lambda x: fused(x, silu=True))(x))


requires_cuda = pytest.mark.skipif(
    layers._cuda_capability() is None, reason="needs a CUDA GPU (tests run on CPU unless JAX_PLATFORMS=cuda)"
)


@requires_cuda
def test_cudnn_kernel_equals_xla_on_gpu():
    """On a CUDA GPU: the real cuDNN kernel with 77 padded keys, forward and q/k/v gradients, against XLA."""
    q, k, v = _qkv(jnp.bfloat16, lq=256, lk=77, heads=8, head_dim=40)
    cot = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape), jnp.bfloat16)

    def loss(fn):
        return lambda q, k, v: jnp.sum((fn(q, k, v) * cot).astype(jnp.float32))

    def cudnn(q, k, v):
        return padded_dot_product_attention(q, k, v, implementation="cudnn")

    assert "cudnn" in jax.jit(jax.grad(loss(cudnn), argnums=(0, 1, 2))).lower(q, k, v).as_text()
    want = jax.nn.dot_product_attention(q, k, v)
    assert _maxdiff(jax.jit(cudnn)(q, k, v), want) <= 2e-2 * max(1.0, float(jnp.max(jnp.abs(want))))
    got_grads = jax.jit(jax.grad(loss(cudnn), argnums=(0, 1, 2)))(q, k, v)
    want_grads = jax.jit(jax.grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2)))(q, k, v)
    for got, want in zip(got_grads, want_grads):
        assert _maxdiff(got, want) <= 2e-2 * max(1.0, float(jnp.max(jnp.abs(want.astype(jnp.float32)))))


@requires_cuda
def test_unet_cudnn_close_to_xla_on_gpu(tiny_unet):
    """On a CUDA GPU: the bf16 UNet with attention="cudnn" and "auto" (both cuDNN) is close to "xla"."""
    x, ctx = tiny_unet
    outs = {}
    for attention in ("xla", "cudnn", "auto"):
        graphdef, params = nnx.split(
            UNet2DConditionModel(TINY_UNET, dtype=jnp.bfloat16, attention=attention, rngs=nnx.Rngs(0))
        )
        fn = jax.jit(lambda p, x, c, g=graphdef: nnx.merge(g, p)(x, 500.0, c))
        assert ("cudnn" in fn.lower(params, x, ctx).as_text()) == (attention != "xla")
        outs[attention] = fn(params, x, ctx)
    scale = float(jnp.max(jnp.abs(outs["xla"].astype(jnp.float32))))
    for attention in ("cudnn", "auto"):
        assert _maxdiff(outs[attention], outs["xla"]) <= 3e-2 * max(1.0, scale)


def test_config_attention_kernel_is_checked_and_does_not_block_resume():
    """``config.model.attention_kernel`` reaches the SD networks through one checked accessor, and a
    re-run may change it (same math, another kernel) without being refused."""
    from configs import sd_dsm as sd_dsm_config
    from jot.errors import UserError
    from jot.methods import sd_dsm
    from jot.train import records

    c = sd_dsm_config.get_config("test")
    assert sd_dsm.attention_kernel(c) == "auto"
    del c.model["attention_kernel"]  # records written before the field existed
    assert sd_dsm.attention_kernel(c) == "auto"
    c.model.attention_kernel = "flash"
    with pytest.raises(UserError, match="attention_kernel.*'flash'.*'xla'"):
        sd_dsm.attention_kernel(c)
    saved, given = sd_dsm_config.get_config("test"), sd_dsm_config.get_config("test")
    given.model.attention_kernel = "xla"
    assert records.config_changes(saved, given) == []
    given.model.unet.heads = 1
    assert [ch.field for ch in records.config_changes(saved, given)] == ["model.unet.heads"]
