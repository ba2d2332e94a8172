"""Parity of jot's AutoencoderKL with diffusers' on a tiny random config, and its scaling convention."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchVAE
from flax import nnx

from jot.models.sd import AutoencoderKL, convert_state_dict, load_module, read_weights

torch.set_num_threads(1)  # the test machine is small and shared; more threads only spin
FAST_COMPILE = {"xla_backend_optimization_level": 0}

TINY = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=16,
    scaling_factor=0.18215,
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(noise * min(0.2, 1.0 / max(1, p[0].numel()) ** 0.5))


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    ref = TorchVAE(**TINY).eval()
    _randomize(ref, 0)
    ref.save_pretrained(folder, safe_serialization=True)
    cfg = json.loads((folder / "config.json").read_text())
    tensors = read_weights(folder, "diffusion_pytorch_model")
    model = load_module(lambda: AutoencoderKL(cfg, rngs=nnx.Rngs(0)), tensors, source=str(folder))
    graphdef, state = nnx.split(model)
    moments = jax.jit(lambda s, x: nnx.merge(graphdef, s).moments(x), compiler_options=FAST_COMPILE)
    decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z), compiler_options=FAST_COMPILE)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
    return dict(ref=ref, model=model, tensors=tensors, state=state, moments=moments, decode=decode, images=images)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


def _assert_close(name: str, got, expected) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    scale = float(np.abs(expected).max())
    err = float(np.abs(got - expected).max())
    print(f"{name}: max abs err {err:.2e}, output scale {scale:.3f}")
    assert got.shape == expected.shape
    assert scale > 0.05
    assert err <= 1e-4 * max(1.0, scale)


def test_vae_encode_matches_diffusers(vae):
    with torch.no_grad():
        dist = vae["ref"].encode(_nchw(vae["images"])).latent_dist
    mean, logvar = vae["moments"](vae["state"], vae["images"])
    assert mean.shape == (2, 8, 12, 4)
    _assert_close("vae mean", mean, _nhwc(dist.mean))
    _assert_close("vae logvar", logvar, _nhwc(dist.logvar))


def test_vae_decode_matches_diffusers(vae):
    z = np.random.default_rng(1).standard_normal((2, 8, 12, 4)).astype(np.float32)
    with torch.no_grad():
        expected = _nhwc(vae["ref"].decode(_nchw(z)).sample)
    # decode takes *scaled* latents: z_scaled = z * scaling_factor.
    _assert_close("vae decode", vae["decode"](vae["state"], z * TINY["scaling_factor"]), expected)
    _assert_close("vae decode_unscaled", vae["model"].decode_unscaled(z), expected)


def test_vae_scaling_convention(vae):
    model = vae["model"]
    mean, logvar = model.moments(vae["images"])
    scaled = model.encode(vae["images"])
    np.testing.assert_allclose(np.asarray(scaled), np.asarray(mean) * 0.18215, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(model.unscale(scaled)), np.asarray(mean), rtol=1e-5, atol=1e-6)
    key = jax.random.key(3)
    sample = model.encode(vae["images"], rng=key)
    noise = jax.random.normal(key, mean.shape)
    expected = (mean + jnp.exp(0.5 * logvar) * noise) * 0.18215
    np.testing.assert_allclose(np.asarray(sample), np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(sample - scaled).max()) > 1e-3


def test_vae_legacy_attention_names_load(vae):
    """Checkpoints saved before diffusers 0.14 name the mid-block attention query/key/value/proj_attn."""
    legacy = {
        k.replace("to_q.", "query.")
        .replace("to_k.", "key.")
        .replace("to_v.", "value.")
        .replace("to_out.0.", "proj_attn."): v
        for k, v in vae["tensors"].items()
    }
    assert legacy.keys() != vae["tensors"].keys()
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: AutoencoderKL(TINY, rngs=nnx.Rngs(0))))
    state = convert_state_dict(legacy, abstract, source="legacy")
    mean, _ = vae["moments"](state, vae["images"])
    expected, _ = vae["moments"](vae["state"], vae["images"])
    np.testing.assert_array_equal(np.asarray(mean), np.asarray(expected))


def test_vae_rejects_bad_images(vae):
    with pytest.raises(ValueError, match=r"VAE images size 15x24 is not divisible by 2"):
        vae["model"].moments(vae["images"][:, :15])
    with pytest.raises(ValueError, match=r"NHWC \[N, H, W, 3\].*got shape \(2, 3, 16, 24\)"):
        vae["model"].moments(vae["images"].transpose(0, 3, 1, 2))
