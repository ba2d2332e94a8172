"""`jot.models.sd.load` on a tiny pipeline folder laid out like stable-diffusion-v1-5, and its errors."""

import json
import shutil

import diffusers
import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from test_sd_clip import TEXTS, tiny_clip_config, write_vocab

from jot.models import sd
from jot.models.sd import UNet2DConditionModel, convert_state_dict, read_weights, schedule_from_config

torch.set_num_threads(1)  # the test machine is small and shared; more threads only spin
FAST_COMPILE = {"xla_backend_optimization_level": 0}

UNET = dict(
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=2,
    cross_attention_dim=32,
    norm_num_groups=8,
    sample_size=8,
)
VAE = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=16,
)


def save_tiny_pipeline(root, scheduler):
    """A StableDiffusionPipeline with tiny random parts and ``scheduler``, saved as diffusers does
    (safetensors) in ``root/stable-diffusion-tiny``; returns ``(pipe, folder)``."""
    write_vocab(root / "vocab")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(root / "vocab", model_max_length=77)
    torch.manual_seed(0)
    pipe = diffusers.StableDiffusionPipeline(
        vae=diffusers.AutoencoderKL(**VAE).eval(),
        text_encoder=transformers.CLIPTextModel(tiny_clip_config("quick_gelu", len(tokenizer))).eval(),
        tokenizer=tokenizer,
        unet=diffusers.UNet2DConditionModel(**UNET).eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with torch.no_grad():  # the UNet's zero-initialised conv_out would make the parity checks vacuous
        for p in pipe.unet.conv_out.parameters():
            p.normal_(0, 0.1)
    folder = root / "stable-diffusion-tiny"
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe, folder


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A StableDiffusionPipeline with tiny random parts, saved as diffusers does (safetensors)."""
    scheduler = diffusers.PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd"), scheduler)


def _close(name, got, want):
    got, want = np.asarray(got), np.asarray(want)
    scale, err = float(np.abs(want).max()), float(np.abs(got - want).max())
    print(f"{name}: max abs err {err:.2e}, output scale {scale:.3f}")
    assert got.shape == want.shape
    assert scale > 0.01
    assert err <= 1e-4 * max(1.0, scale)


def test_load_matches_torch_pipeline(pipeline):
    pipe, folder = pipeline
    assert {p.name for p in folder.iterdir()} >= {
        "model_index.json",
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
    }
    parts = sd.load(folder)

    ids = parts.tokenizer(TEXTS[:2])
    ref_ids = pipe.tokenizer(TEXTS[:2], padding="max_length", max_length=77, truncation=True).input_ids
    np.testing.assert_array_equal(ids, np.asarray(ref_ids))

    graphdef, state = nnx.split(parts.text_encoder)
    text = jax.jit(lambda s, i: nnx.merge(graphdef, s)(i), compiler_options=FAST_COMPILE)(state, ids)
    with torch.no_grad():
        ref_text = pipe.text_encoder(torch.from_numpy(ids.astype(np.int64))).last_hidden_state
    _close("load text_encoder", text, ref_text.numpy())

    latents = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype(np.float32)
    t = np.array([1.0, 999.0], np.float32)
    graphdef, state = nnx.split(parts.unet)
    eps = jax.jit(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c), compiler_options=FAST_COMPILE)(
        state, latents, t, np.asarray(text)
    )
    with torch.no_grad():
        ref_eps = pipe.unet(torch.from_numpy(latents.transpose(0, 3, 1, 2)), torch.from_numpy(t), ref_text).sample
    _close("load unet", eps, ref_eps.numpy().transpose(0, 2, 3, 1))

    graphdef, state = nnx.split(parts.vae)
    images = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z), compiler_options=FAST_COMPILE)(state, latents)
    with torch.no_grad():
        scaling = pipe.vae.config.scaling_factor
        ref_images = pipe.vae.decode(torch.from_numpy(latents.transpose(0, 3, 1, 2)) / scaling).sample
    _close("load vae decode", images, ref_images.numpy().transpose(0, 2, 3, 1))

    assert parts.scheduler_config["beta_schedule"] == "scaled_linear"
    np.testing.assert_allclose(parts.schedule.alpha_bar, pipe.scheduler.alphas_cumprod.numpy(), rtol=1e-5)
    assert parts.schedule.alpha_bar.shape == (1000,)
    assert parts.prediction_type == "epsilon"


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 10},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 50},
        {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 100},
        {"num_train_timesteps": 20},  # diffusers' defaults: linear, 1e-4 .. 0.02
    ],
    ids=["linear", "scaled_linear", "squaredcos_cap_v2", "defaults"],
)
def test_schedule_matches_diffusers(config):
    schedule = schedule_from_config(config)
    want = diffusers.DDIMScheduler(**config).alphas_cumprod.numpy()
    np.testing.assert_allclose(np.asarray(schedule.alpha_bar), want, rtol=1e-5, atol=1e-9)  # float32 cumprod


def test_schedule_unsupported_configs():
    with pytest.raises(ValueError, match=r"beta_schedule='sigmoid' is not supported; expected one of"):
        schedule_from_config({"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match=r"sets trained_betas"):
        schedule_from_config({"beta_schedule": "linear", "trained_betas": [0.1, 0.2]})
    with pytest.raises(ValueError, match=r"rescale_betas_zero_snr=True, which is not supported"):
        schedule_from_config({"beta_schedule": "linear", "rescale_betas_zero_snr": True})


def test_unknown_prediction_type(pipeline, tmp_path):
    folder = _copy(pipeline[1], tmp_path)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps(dict(config, prediction_type="sample")))
    with pytest.raises(ValueError, match=r"prediction_type='sample' is not supported; expected one of"):
        sd.load(folder)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_missing_subfolder(pipeline, tmp_path):
    folder = _copy(pipeline[1], tmp_path)
    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match=r"has no vae/ subfolder; expected the AutoencoderKL"):
        sd.load(folder)


def test_missing_model_index(pipeline, tmp_path):
    folder = _copy(pipeline[1], tmp_path)
    (folder / "model_index.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"expected model_index.json .* at .*model_index.json"):
        sd.load(folder)


def test_truncated_safetensors(pipeline, tmp_path):
    folder = _copy(pipeline[1], tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"safetensors file .*unet/diffusion_pytorch_model.safetensors.*truncated or corrupt"
    ):
        sd.load(folder)


def test_pickle_only_folder(pipeline, tmp_path):
    folder = _copy(pipeline[1], tmp_path)
    weights = folder / "text_encoder" / "model.safetensors"
    weights.rename(weights.with_suffix(".bin"))  # the bytes never get read
    with pytest.raises(
        ValueError,
        match=r"(?s)model.bin is a pickled PyTorch checkpoint; jot reads weights from safetensors only.*"
        r"CLIPTextModel.from_pretrained.*save_pretrained\(.*safe_serialization=True\)",
    ):
        sd.load(folder)


def test_mismatched_weights_name_every_bad_key(pipeline):
    tensors = dict(read_weights(pipeline[1] / "unet", "diffusion_pytorch_model"))
    tensors.pop("conv_in.bias")
    tensors["mid_block.extra.weight"] = np.zeros((3, 3), np.float32)
    tensors["conv_out.weight"] = np.zeros((4, 16, 5, 5), np.float32)
    config = json.loads((pipeline[1] / "unet" / "config.json").read_text())
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: UNet2DConditionModel(config, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError) as info:
        convert_state_dict(tensors, abstract, source="unet/")
    message = str(info.value)
    assert "(3 problems)" in message
    assert "missing key 'conv_in.bias' shape (16,)" in message
    assert "extra key 'mid_block.extra.weight' shape (3, 3)" in message
    assert "shape mismatch for 'conv_out.weight' -> 'conv_out.kernel': checkpoint (4, 16, 5, 5)" in message
    assert "vs model (3, 3, 16, 4)" in message


def test_safetensors_dtypes_read_without_pickle(tmp_path):
    """fp32, fp16 and bf16 tensors all come back as numpy arrays with their values."""
    import safetensors.torch

    values = torch.linspace(-3, 3, 12).reshape(3, 4)
    tensors = {"f32": values, "f16": values.half(), "bf16": values.bfloat16()}
    safetensors.torch.save_file(tensors, tmp_path / "w.safetensors")
    read = sd.read_safetensors(tmp_path / "w.safetensors")
    assert sorted(read) == ["bf16", "f16", "f32"]
    for key, tensor in tensors.items():
        array = read[key]
        assert array.shape == (3, 4)
        np.testing.assert_array_equal(array.astype(np.float32), tensor.float().numpy())
    assert read["bf16"].dtype == jax.numpy.bfloat16
