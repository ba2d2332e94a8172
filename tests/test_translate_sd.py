"""Prompt translation on a tiny random diffusers-format Stable Diffusion: LSB against a PyTorch loop
with diffusers' networks, and ``--mode=translate --config=configs/lsb_sd.py`` end to end."""
import json
import os

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image
from test_sd_load import save_tiny_pipeline
from test_sd_sampling import _torch_embeddings

from configs import lsb_sd
from jot.errors import UserError
from jot.models import sd
from jot.translate import sd as sd_translate
from launch.main import run

torch.set_num_threads(1)
SOURCE, TARGET = "a photo of a cat", "a photo of a dog"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe, folder = save_tiny_pipeline(root, scheduler)
    rng = np.random.default_rng(0)
    for name, n in (("cats", 3), ("dogs", 6)):
        os.makedirs(root / name / "sub")
        for i in range(n):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # cropped to 16x16 by the loader
            Image.fromarray(pixels).save(root / name / ("sub" if i == 0 else "") / f"{name}{i}.png")
    return pipe, folder, root


def _reference_lsb(pipe, images, noise, *, nfe, sigma, t0, w, final_to):
    """LSB on diffusers' VAE, text encoder and UNet, written as the paper's loop (fractional steps)."""
    alpha_bar = np.concatenate([[1.0], pipe.scheduler.alphas_cumprod.numpy().astype(np.float64)])
    steps = np.arange(-1, len(alpha_bar) - 1)

    def step_of(a):
        return float(np.interp(a, alpha_bar[::-1], steps[::-1]))

    c_src, c_tgt = _torch_embeddings(pipe, [SOURCE]), _torch_embeddings(pipe, [TARGET])
    with torch.no_grad():
        z = pipe.vae.encode(torch.from_numpy(images.transpose(0, 3, 1, 2))).latent_dist.mean
        z = z * pipe.vae.config.scaling_factor
        b = z.shape[0]
        x = (1 - t0) * z + sigma * np.sqrt(t0 * (1 - t0)) * torch.from_numpy(noise.transpose(0, 3, 1, 2))
        times = np.linspace(t0, 1, nfe)

        def predict(x, t, context):
            a = 1 / (1 + sigma**2 * t * (1 - t))
            u = np.sqrt(a) * x
            s = torch.full((u.shape[0],), step_of(a), dtype=torch.float32)
            eps = pipe.unet(u, s, encoder_hidden_states=context).sample
            return eps, (u - np.sqrt(1 - a) * eps) / np.sqrt(a)

        for k in range(nfe - 1):
            t = times[k]
            eps0, x0 = predict(x, t, c_src.expand(b, -1, -1))
            eps1, x1 = predict(x, t, c_tgt.expand(b, -1, -1))
            eps = eps1 if t > 0.5 else eps0
            v = sigma * (1 - 2 * t) / (2 * np.sqrt(t * (1 - t))) * eps + w * (x1 - x0)
            x = x + (times[k + 1] - t) * v
        eps, x_hat = predict(x, times[-2], c_tgt.expand(b, -1, -1))
        a_to = float(np.interp(final_to, steps, alpha_bar))
        x = np.sqrt(a_to) * x_hat + np.sqrt(1 - a_to) * eps
        out = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
    return out.numpy().transpose(0, 2, 3, 1)


def test_lsb_on_stable_diffusion_matches_a_torch_loop(setup):
    pipe, folder, _ = setup
    images = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    settings = sd_translate.Settings(method="lsb", nfe=5, guidance=3.0, final_to=20.0)
    translator = sd_translate.Translator(sd.load(folder), SOURCE, TARGET, settings)
    rng = jax.random.PRNGKey(3)
    got = np.asarray(translator(jnp.asarray(images), rng))
    noise = np.asarray(jax.random.normal(rng, (2, 8, 8, 4)))  # what lsb.start_point draws for the latents
    want = _reference_lsb(pipe, images, noise, nfe=5, sigma=2.3, t0=0.2, w=3.0, final_to=20.0)
    scale = np.abs(want).max()
    assert scale > 0.05 and np.abs(want - images).max() > 0.1  # not vacuous: the images changed
    np.testing.assert_allclose(got, want, atol=2e-3 * scale)


def _config(folder, root, **translate):
    c = lsb_sd.get_config()
    c.model.path = str(folder)
    c.data.source = str(root / "cats")
    c.data.size = 16
    c.translate.source_prompt = SOURCE
    c.translate.target_prompt = TARGET
    c.translate.nfe = 4
    c.translate.batch_size = 2
    c.translate.progress = False
    c.translate.update(translate)
    return c


def test_cli_writes_one_png_per_image_a_grid_and_json(setup, tmp_path):
    _, folder, root = setup
    config = _config(folder, root, guidance=5.0)
    metrics = run(config, str(tmp_path), "translate")
    written = sorted(os.listdir(tmp_path / "translated"))
    assert written == ["cats1.png", "cats2.png", "sub__cats0.png"]
    assert Image.open(tmp_path / "translate_lsb.png").size == (3 * 16, 2 * 16)  # inputs above outputs
    saved = json.loads((tmp_path / "translate_lsb.json").read_text())
    assert saved["num_images"] == 3 and saved["unet_calls_per_image"] == 4 and saved["unet_inputs_per_image"] == 7
    assert saved["batch_size"] % jax.device_count() == 0 and saved["settings_guidance"] == 5.0
    assert metrics["seconds_per_image"] > 0
    # The files are the translator's outputs for the sorted inputs, whatever the padding and sharding.
    from jot.translate import text_runner

    names, x = text_runner._folder(str(root / "cats"), config.data)
    want = sd_translate.Translator(sd.load(folder), SOURCE, TARGET, text_runner.settings(config))(
        jnp.asarray(x), jax.random.fold_in(jax.random.PRNGKey(0), 0))
    for name, image in zip(names, np.asarray(want)):
        png = np.asarray(Image.open(tmp_path / "translated" / f"{name}.png"), np.float32) / 127.5 - 1
        np.testing.assert_allclose(png, image, atol=1.5 / 127.5)


@pytest.mark.parametrize("method", ["sdedit", "ddib", "otald"])
def test_baselines_through_the_cli(setup, tmp_path, method):
    _, folder, root = setup
    config = _config(folder, root, method=method, guidance=3.0)
    config.data.target = str(root / "dogs")
    metrics = run(config, str(tmp_path), "translate")
    assert len(os.listdir(tmp_path / "translated")) == 3
    assert metrics["unet_calls_per_image"] == 4
    assert metrics["unet_inputs_per_image"] == {"sdedit": 8, "ddib": 6, "otald": 6}[method]
    assert np.isfinite(metrics["frechet"]) and "frechet_floor" in metrics  # 6 dogs >= 2 x 3 outputs
    if method == "sdedit":  # starts at LSB's initial SNR
        from jot.diffusion import bridge

        pipe = sd.load(folder)
        assert metrics["sdedit_start_step"] == pytest.approx(float(bridge.snr_matched_step(pipe.schedule, 0.2, sigma=2.3)))
    if method == "otald":
        assert metrics["fit_images"] == [3, 6] and metrics["fit_seconds"] > 0


def test_bad_settings_are_clear_errors(setup, tmp_path):
    _, folder, root = setup
    with pytest.raises(UserError, match=r"config.translate.target_prompt is empty"):
        run(_config(folder, root, target_prompt=""), str(tmp_path), "translate")
    with pytest.raises(UserError, match=r"method='dmd'; expected one of"):
        run(_config(folder, root, method="dmd"), str(tmp_path), "translate")
    with pytest.raises(UserError, match=r"data.target"):
        run(_config(folder, root, method="otald"), str(tmp_path), "translate")
    with pytest.raises(UserError, match=r"nfe=1"):
        run(_config(folder, root, nfe=1), str(tmp_path), "translate")
    config = _config(folder, root)
    config.data.size = 12
    with pytest.raises(UserError, match=r"size=12.*multiple of 8"):
        run(config, str(tmp_path), "translate")
    config = _config(folder, root)
    config.model.path = str(root / "nowhere")
    with pytest.raises(UserError, match=r"cannot load the model"):
        run(config, str(tmp_path), "translate")
    config = _config(folder, root, textual_inversion=(str(root / "cats" / "cats1.png"),))
    with pytest.raises(UserError, match=r"cannot load the model"):
        run(config, str(tmp_path), "translate")
