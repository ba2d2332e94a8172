"""Parity of jot's SD UNet with diffusers' UNet2DConditionModel on tiny random configs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet
from flax import nnx
from jax.sharding import PartitionSpec as P

from jot.models.sd import UNet2DConditionModel, load_module, read_weights, shard_params
from jot.sharding import param_spec

torch.set_num_threads(1)  # the test machine is small and shared; more threads only spin
# Tiny models: XLA's backend optimisation buys nothing here and doubles compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

SD1 = dict(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    attention_head_dim=4,
    cross_attention_dim=24,
    norm_num_groups=8,
    sample_size=16,
)
SD2 = dict(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=(2, 8),
    use_linear_projection=True,
    upcast_attention=True,
    cross_attention_dim=40,
    norm_num_groups=8,
    sample_size=16,
)
TINY = dict(
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=2,
    cross_attention_dim=8,
    norm_num_groups=8,
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere, so norm scales/biases and zero-init layers are all exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise * min(0.2, 1.0 / max(1, p[0].numel()) ** 0.5))


def _torch_and_jot(config: dict, tmp_path, seed: int = 0, **jot_kw):
    torch.manual_seed(seed)
    ref = TorchUNet(**config).eval()
    _randomize(ref, seed)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    tensors = read_weights(tmp_path, "diffusion_pytorch_model")
    model = load_module(lambda: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0), **jot_kw), tensors, source=str(tmp_path))
    return ref, model, cfg


def _inputs(config: dict, h: int, w: int, n: int = 2, length: int = 7):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h, w, 4)).astype(np.float32)
    t = np.array([10.0, 873.0][:n], np.float32)
    ctx = rng.standard_normal((n, length, config["cross_attention_dim"])).astype(np.float32)
    return x, t, ctx


def _torch_eps(ref, x, t, ctx) -> np.ndarray:
    with torch.no_grad():
        out = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t), torch.from_numpy(ctx)).sample
    return out.numpy().transpose(0, 2, 3, 1)


def _jit_apply(model):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c), compiler_options=FAST_COMPILE), state


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    """The SD1-style pair, its jitted jot forward and the inputs, shared by the tests below."""
    folder = tmp_path_factory.mktemp("sd1")
    ref, model, cfg = _torch_and_jot(SD1, folder)
    fn, state = _jit_apply(model)
    return dict(ref=ref, model=model, cfg=cfg, folder=folder, fn=fn, state=state, inputs=_inputs(SD1, 16, 16))


def _check_parity(name, ref, fn, state, x, t, ctx):
    expected = _torch_eps(ref, x, t, ctx)
    got = np.asarray(fn(state, x, t, ctx))
    scale = float(np.abs(expected).max())
    err = float(np.abs(got - expected).max())
    print(f"{name}: max abs err {err:.2e}, output scale {scale:.3f}")
    assert got.shape == expected.shape
    assert scale > 0.1
    assert err <= 1e-4 * max(1.0, scale)


def test_unet_sd1_matches_diffusers(sd1):
    _check_parity("sd1 16x16", sd1["ref"], sd1["fn"], sd1["state"], *sd1["inputs"])


def test_unet_sd2_matches_diffusers(tmp_path):
    ref, model, _ = _torch_and_jot(SD2, tmp_path)
    fn, state = _jit_apply(model)
    _check_parity("sd2 8x12", ref, fn, state, *_inputs(SD2, 8, 12))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-block UNet with its jitted fp32 forward on 8x8 latents at a scalar timestep."""
    folder = tmp_path_factory.mktemp("tiny")
    ref, model, cfg = _torch_and_jot(TINY, folder)
    fn, state = _jit_apply(model)
    x, _, ctx = _inputs(TINY, 8, 8)
    t = np.float32(500.0)
    return dict(
        ref=ref, cfg=cfg, folder=folder, x=x, t=t, ctx=ctx, fn=fn, state=state, out=np.asarray(fn(state, x, t, ctx))
    )


def test_unet_scalar_timestep_equals_broadcast(tiny):
    broadcast = tiny["fn"](tiny["state"], tiny["x"], np.full((2,), tiny["t"]), tiny["ctx"])
    np.testing.assert_array_equal(np.asarray(broadcast), tiny["out"])


def test_unet_sharded_equals_unsharded(tiny):
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    tensors = read_weights(tiny["folder"], "diffusion_pytorch_model")
    sharded = load_module(
        lambda: UNet2DConditionModel(tiny["cfg"], rngs=nnx.Rngs(0)), tensors, source="t", mesh=mesh, min_shard_size=512
    )
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(nnx.state(sharded))]
    assert sum("fsdp" in tuple(s) for s in specs) >= 10  # the kernels really are split
    # shard_params on a loaded model places the same way as loading onto the mesh
    plain = load_module(lambda: UNet2DConditionModel(tiny["cfg"], rngs=nnx.Rngs(0)), tensors, source="t")
    moved = shard_params(plain, mesh, min_size=512)
    assert [leaf.sharding.spec for leaf in jax.tree.leaves(nnx.state(moved))] == specs
    fn, state = _jit_apply(sharded)
    got = np.asarray(fn(state, tiny["x"], tiny["t"], tiny["ctx"]))
    err = float(np.abs(got - tiny["out"]).max())
    print(f"sharded vs unsharded: max abs diff {err:.2e}")
    assert err <= 1e-5 * max(1.0, float(np.abs(tiny["out"]).max()))


def test_param_spec_rule():
    assert param_spec((3, 3, 320, 640), 8) == P(None, None, None, "fsdp")  # largest divisible dim
    assert param_spec((1280, 1280), 8) == P(None, "fsdp")  # ties: the output dim
    assert param_spec((3, 3, 4, 320), 8, min_size=1) == P(None, None, None, "fsdp")
    assert param_spec((320,), 8) == P()  # below min_size: replicated
    assert param_spec((1000, 77), 16) == P()  # nothing divisible: replicated
    explicit = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Explicit,))
    with pytest.raises(ValueError, match=r"mesh axes \['fsdp'\] are AxisType.Explicit"):
        shard_params(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), explicit)


def test_unet_bf16_close_to_fp32(tiny):
    tensors = read_weights(tiny["folder"], "diffusion_pytorch_model")
    model = load_module(
        lambda: UNet2DConditionModel(tiny["cfg"], dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)),
        tensors,
        source="t",
    )
    fn, state = _jit_apply(model)
    out = fn(state, tiny["x"], tiny["t"], tiny["ctx"])
    assert out.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(state))
    rel = float(np.abs(np.asarray(out, np.float32) - tiny["out"]).max() / np.abs(tiny["out"]).max())
    print(f"bf16 vs fp32: max rel diff {rel:.2e}")
    assert rel < 0.05


def test_unet_remat_gradient_matches_torch(tiny):
    """d sum(eps^2) / d latents with nnx.remat'd blocks equals PyTorch autograd."""
    tensors = read_weights(tiny["folder"], "diffusion_pytorch_model")
    model = load_module(lambda: UNet2DConditionModel(tiny["cfg"], remat=True, rngs=nnx.Rngs(0)), tensors, source="t")
    graphdef, state = nnx.split(model)
    x, t, ctx = tiny["x"], tiny["t"], tiny["ctx"]

    def loss(s, x):
        return jnp.sum(nnx.merge(graphdef, s)(x, t, ctx) ** 2)

    grad = jax.grad(loss, argnums=1)
    assert "remat" in str(jax.make_jaxpr(grad)(state, x))  # the backward pass recomputes the blocks
    got = np.asarray(jax.jit(grad, compiler_options=FAST_COMPILE)(state, x))
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_(True)
    out = tiny["ref"](x_torch, torch.tensor([float(t)] * 2), torch.from_numpy(ctx)).sample
    (out**2).sum().backward()
    expected = x_torch.grad.numpy().transpose(0, 2, 3, 1)
    scale = float(np.abs(expected).max())
    err = float(np.abs(got - expected).max())
    print(f"remat grad: max abs err {err:.2e}, grad scale {scale:.3f}")
    assert scale > 0
    assert err <= 1e-4 * max(1.0, scale)


def test_unet_rejects_bad_inputs(sd1):
    model = sd1["model"]
    x, t, ctx = sd1["inputs"]
    with pytest.raises(ValueError, match=r"latent size 5x16 is not divisible by 2"):
        model(x[:, :5], t, ctx)
    with pytest.raises(ValueError, match=r"encoder_hidden_states must be \[N, L, 24\].*got shape \(2, 7, 16\)"):
        model(x, t, ctx[..., :16])
    with pytest.raises(ValueError, match=r"NHWC \[N, H, W, 4\]"):
        model(x.transpose(0, 3, 1, 2), t, ctx)


def test_unet_config_rejects_sdxl_options():
    with pytest.raises(ValueError, match=r"addition_embed_type='text_time' is not supported"):
        UNet2DConditionModel({**SD1, "addition_embed_type": "text_time"}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"64 channels cannot be split into attention_head_dim=5 heads"):
        UNet2DConditionModel({**SD1, "attention_head_dim": (4, 5)}, rngs=nnx.Rngs(0))


def test_unet_chunked_attention_equals_unchunked(tiny):
    """A tiny score budget forces every attention onto the blocked path; same numbers as one-shot."""
    tensors = read_weights(tiny["folder"], "diffusion_pytorch_model")
    x, t, ctx = tiny["x"], tiny["t"], tiny["ctx"]
    outs = {}
    for chunk in (None, 7):  # 7 scores: one query row per block (8x8 latents: 64 x 64 and 64 x 7 scores)
        model = load_module(
            lambda chunk=chunk: UNet2DConditionModel(tiny["cfg"], attention_chunk=chunk, rngs=nnx.Rngs(0)),
            tensors,
            source="t",
        )
        fn, state = _jit_apply(model)
        jaxpr = str(jax.make_jaxpr(lambda s: nnx.merge(nnx.graphdef(model), s)(x, t, ctx))(state))
        assert ("scan" in jaxpr) == (chunk is not None)  # the blocked path really ran (lax.map -> scan)
        outs[chunk] = np.asarray(fn(state, x, t, ctx))
    scale = float(np.abs(outs[None]).max())
    err = float(np.abs(outs[7] - outs[None]).max())
    print(f"chunked vs one-shot attention: max abs diff {err:.2e}, output scale {scale:.3f}")
    assert scale > 0.1
    assert err <= 1e-5 * max(1.0, scale)
    np.testing.assert_allclose(outs[None], tiny["out"], rtol=0, atol=1e-6)  # None is the old one-shot path


def test_unet_cudnn_attention_path_matches_diffusers(tiny, monkeypatch):
    """attention="cudnn" (its padded computation, run with XLA on CPU: 7 text tokens padded to 64
    and masked) keeps parity with diffusers and equals the default attention."""
    from test_attention import cudnn_on_cpu

    calls = cudnn_on_cpu(monkeypatch)
    tensors = read_weights(tiny["folder"], "diffusion_pytorch_model")
    model = load_module(
        lambda: UNet2DConditionModel(tiny["cfg"], attention="cudnn", rngs=nnx.Rngs(0)), tensors, source="t"
    )
    fn, state = _jit_apply(model)
    got = np.asarray(fn(state, tiny["x"], tiny["t"], tiny["ctx"]))
    assert (64, 7) in calls  # cross-attention over the 7 text tokens took the padded path
    np.testing.assert_allclose(got, tiny["out"], rtol=0, atol=1e-5 * max(1.0, float(np.abs(tiny["out"]).max())))
    _check_parity("cudnn path 8x8", tiny["ref"], fn, state, tiny["x"], np.full((2,), tiny["t"]), tiny["ctx"])
