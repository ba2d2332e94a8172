"""Parity of jot's SD UNet with diffusers' UNet2DConditionModel on tiny random configs."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet
from flax import nnx

from jot.models.sd import UNet2DConditionModel, load_module, read_weights

torch.set_num_threads(2)

SD1 = dict(
    block_out_channels=(32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    attention_head_dim=4,
    cross_attention_dim=24,
    norm_num_groups=8,
    sample_size=16,
)
SD2 = dict(
    block_out_channels=(32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=(2, 4, 8),
    use_linear_projection=True,
    upcast_attention=True,
    cross_attention_dim=40,
    norm_num_groups=8,
    flip_sin_to_cos=True,
    freq_shift=0,
    sample_size=16,
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
    model = load_module(
        lambda: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0), **jot_kw), tensors, source=str(tmp_path)
    )
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
    return jax.jit(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c)), state


@pytest.mark.parametrize(
    "name, config, size", [("sd1", SD1, (16, 16)), ("sd2", SD2, (8, 12))], ids=["sd1-16x16", "sd2-8x12"]
)
def test_unet_matches_diffusers(name, config, size, tmp_path):
    ref, model, _ = _torch_and_jot(config, tmp_path)
    x, t, ctx = _inputs(config, *size)
    expected = _torch_eps(ref, x, t, ctx)
    fn, state = _jit_apply(model)
    got = np.asarray(fn(state, x, t, ctx))
    scale = float(np.abs(expected).max())
    err = float(np.abs(got - expected).max())
    print(f"{name}: max abs err {err:.2e}, output scale {scale:.3f}")
    assert got.shape == expected.shape
    assert scale > 0.1
    assert err <= 1e-4 * max(1.0, scale)


def test_unet_scalar_timestep_and_sharded_equal_unsharded(tmp_path):
    _, model, _ = _torch_and_jot(SD1, tmp_path)
    x, t, ctx = _inputs(SD1, 16, 16)
    fn, state = _jit_apply(model)
    reference = np.asarray(fn(state, x, np.float32(500.0), ctx))
    broadcast = np.asarray(fn(state, x, np.full((2,), 500.0, np.float32), ctx))
    np.testing.assert_array_equal(reference, broadcast)

    mesh = jax.make_mesh((8,), ("fsdp",))
    tensors = read_weights(tmp_path, "diffusion_pytorch_model")
    cfg = json.loads((tmp_path / "config.json").read_text())
    sharded = load_module(
        lambda: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0)), tensors, source="t", mesh=mesh, min_shard_size=1024
    )
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(nnx.state(sharded))]
    assert sum("fsdp" in tuple(s) for s in specs) >= 10  # the kernels really are split
    fn_s, state_s = _jit_apply(sharded)
    got = np.asarray(fn_s(state_s, x, np.float32(500.0), ctx))
    assert np.abs(got - reference).max() <= 1e-5 * max(1.0, np.abs(reference).max())


def test_unet_bf16_and_remat(tmp_path):
    _, model32, cfg = _torch_and_jot(SD1, tmp_path)
    tensors = read_weights(tmp_path, "diffusion_pytorch_model")
    model16 = load_module(
        lambda: UNet2DConditionModel(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)),
        tensors,
        source="t",
    )
    remat = load_module(lambda: UNet2DConditionModel(cfg, remat=True, rngs=nnx.Rngs(0)), tensors, source="t")
    x, t, ctx = _inputs(SD1, 8, 8)
    out32 = np.asarray(_jit_apply(model32)[0](nnx.state(model32), x, t, ctx))
    fn16, state16 = _jit_apply(model16)
    out16 = fn16(state16, x, t, ctx)
    assert out16.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(state16))
    rel = np.abs(np.asarray(out16, np.float32) - out32).max() / np.abs(out32).max()
    assert rel < 0.05

    def loss(model, x):
        return jnp.sum(model(x, t, ctx) ** 2)

    grad_plain = jax.jit(jax.grad(lambda x: loss(model32, x)))(x)
    grad_remat = jax.jit(jax.grad(lambda x: loss(remat, x)))(x)
    np.testing.assert_allclose(np.asarray(grad_remat), np.asarray(grad_plain), rtol=1e-4, atol=1e-4 * float(np.abs(grad_plain).max()))


def test_unet_rejects_bad_inputs(tmp_path):
    _, model, _ = _torch_and_jot(SD1, tmp_path)
    x, t, ctx = _inputs(SD1, 16, 16)
    with pytest.raises(ValueError, match=r"latent size 10x16 is not divisible by 4"):
        model(x[:, :10], t, ctx)
    with pytest.raises(ValueError, match=r"encoder_hidden_states must be \[N, L, 24\].*got shape \(2, 7, 16\)"):
        model(x, t, ctx[..., :16])
    with pytest.raises(ValueError, match=r"NHWC \[N, H, W, 4\]"):
        model(x.transpose(0, 3, 1, 2), t, ctx)


def test_unet_config_rejects_sdxl_options():
    with pytest.raises(ValueError, match=r"addition_embed_type='text_time' is not supported"):
        UNet2DConditionModel({**SD1, "addition_embed_type": "text_time"}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"64 channels cannot be split into attention_head_dim=5 heads"):
        UNet2DConditionModel({**SD1, "attention_head_dim": (4, 5, 5)}, rngs=nnx.Rngs(0))
