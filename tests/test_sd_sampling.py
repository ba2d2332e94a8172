"""Sampling with a loaded Stable Diffusion pipeline: jot's DDIM with ``pipe.eps_fn`` against
diffusers' DDIMScheduler loop with the PyTorch UNet, on tiny random diffusers-format pipelines."""

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_sd_load import save_tiny_pipeline

from jot.diffusion import samplers
from jot.diffusion.samplers import ddim_sample
from jot.models import sd

torch.set_num_threads(1)  # the test machine is small and shared; more threads only spin

PROMPTS = ["a photo of the cat", "the dog"]
NFE = 4


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def pipeline(request, tmp_path_factory):
    """A tiny random StableDiffusionPipeline with SD's DDIM settings, saved and loaded back."""
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=request.param,
    )
    pipe, folder = save_tiny_pipeline(tmp_path_factory.mktemp("sd"), scheduler)
    return pipe, sd.load(folder)


def _rel_err(name, got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max()) / scale
    print(f"{name}: max rel err {err:.2e}, output scale {scale:.3f}")
    assert scale > 0.01
    return err


def _torch_embeddings(pipe, prompts):
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(ids.input_ids).last_hidden_state


def _reference_ddim(pipe, latents, text, uncond, guidance):
    """diffusers' DDIM loop (as StableDiffusionPipeline runs it), NHWC in and out."""
    scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(NFE)
    x = torch.from_numpy(latents.transpose(0, 3, 1, 2))
    if uncond is not None:
        context = torch.cat([uncond.expand_as(text), text])
    with torch.no_grad():
        for t in scheduler.timesteps:
            if uncond is None:
                out = pipe.unet(x, t, encoder_hidden_states=text).sample
            else:
                out_uncond, out_cond = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample.chunk(2)
                out = out_uncond + guidance * (out_cond - out_uncond)
            x = scheduler.step(out, t, x).prev_sample
    return scheduler, x.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("guidance", [None, 3.0], ids=["no-cfg", "cfg"])
def test_ddim_matches_diffusers(pipeline, guidance):
    pipe, parts = pipeline
    assert parts.prediction_type == pipe.scheduler.config.prediction_type
    text = _torch_embeddings(pipe, PROMPTS)
    uncond = None if guidance is None else _torch_embeddings(pipe, [""])
    assert _rel_err("encode_prompt", parts.encode_prompt(PROMPTS), text.numpy()) <= 1e-4
    latents = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype(np.float32)

    scheduler, want = _reference_ddim(pipe, latents, text, uncond, guidance)
    steps = parts.ddim_steps(NFE)
    np.testing.assert_array_equal(steps[:-1], scheduler.timesteps.numpy())
    assert steps[-1] == 0  # set_alpha_to_one=False: the last step lands on alpha_bar[0]

    if guidance is None:
        eps_fn = parts.eps_fn(text.numpy())
    else:
        eps_fn = parts.eps_fn(text.numpy(), uncond=uncond.numpy(), guidance=guidance)
    got = ddim_sample(eps_fn, jnp.asarray(latents), schedule=parts.schedule, steps=steps)
    err = _rel_err(f"ddim {parts.prediction_type} guidance={guidance}", got, want)
    assert err <= 1e-4
    assert np.abs(want - latents).max() > 0.1  # the sampler moved the latents


def test_new_prompts_and_guidance_reuse_the_compiled_sampler(pipeline):
    pipe, parts = pipeline
    text = parts.encode_prompt(PROMPTS)
    uncond = parts.encode_prompt([""])
    latents = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 4)), jnp.float32)
    steps = parts.ddim_steps(NFE)
    first = ddim_sample(parts.eps_fn(text, uncond=uncond, guidance=3.0), latents, schedule=parts.schedule, steps=steps)
    traces = samplers._sample._cache_size()
    other = parts.eps_fn(parts.encode_prompt(["the cat", "a dog"]), uncond=uncond, guidance=5.0)
    second = ddim_sample(other, latents, schedule=parts.schedule, steps=parts.ddim_steps(NFE) + 0.0)
    assert samplers._sample._cache_size() == traces
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-3


def test_vae_encode_decode_match_diffusers(pipeline):
    pipe, parts = pipeline
    images = np.random.default_rng(2).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    scaling = pipe.vae.config.scaling_factor
    with torch.no_grad():
        mean = pipe.vae.encode(torch.from_numpy(images.transpose(0, 3, 1, 2))).latent_dist.mean
        decoded = pipe.vae.decode(mean).sample
    latents = parts.encode(images)
    assert _rel_err("encode", latents, mean.numpy().transpose(0, 2, 3, 1) * scaling) <= 1e-4
    assert _rel_err("decode", parts.decode(latents), decoded.numpy().transpose(0, 2, 3, 1)) <= 1e-4
    sample = parts.encode(images, jax.random.PRNGKey(0))
    assert sample.shape == latents.shape and np.abs(np.asarray(sample - latents)).max() > 0


def test_ddim_steps_grids():
    config = {"num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": True}
    np.testing.assert_array_equal(sd.ddim_steps(config, 4), [751, 501, 251, 1, -1])
    np.testing.assert_array_equal(sd.ddim_steps(dict(config, set_alpha_to_one=False), 4), [751, 501, 251, 1, 0])
    for spacing in ("trailing", "linspace"):
        scheduler = diffusers.DDIMScheduler(timestep_spacing=spacing)
        scheduler.set_timesteps(7)
        np.testing.assert_array_equal(
            sd.ddim_steps({"timestep_spacing": spacing}, 7)[:-1], scheduler.timesteps.numpy()
        )
    with pytest.raises(ValueError, match=r"timestep_spacing='karras' is not supported"):
        sd.ddim_steps({"timestep_spacing": "karras"}, 4)


def test_errors(pipeline):
    _, parts = pipeline
    text = parts.encode_prompt(PROMPTS)
    with pytest.raises(ValueError, match=r"text_embeddings has shape \(2, 77\); expected \[B or 1, L, 32\]"):
        parts.eps_fn(text[..., 0])
    with pytest.raises(ValueError, match=r"uncond has length 5 but text_embeddings have length 77"):
        parts.eps_fn(text, uncond=text[:1, :5])
    x = jnp.zeros((3, 8, 8, 4))
    with pytest.raises(ValueError, match=r"text embeddings have batch 2 but the latents have batch 3"):
        parts.eps_fn(text)(x, jnp.zeros(3), None)
    with pytest.raises(ValueError, match=r"nfe=3 but steps has 5 entries"):
        ddim_sample(parts.eps_fn(text), x, schedule=parts.schedule, nfe=3, steps=parts.ddim_steps(4))
    with pytest.raises(ValueError, match=r"start=10.0 was given together with steps"):
        ddim_sample(parts.eps_fn(text), x, schedule=parts.schedule, start=10.0, steps=parts.ddim_steps(4))
    with pytest.raises(ValueError, match=r"needs nfe .* or steps"):
        ddim_sample(parts.eps_fn(text), x, schedule=parts.schedule)
    with pytest.raises(ValueError, match=r"prediction_type='sample' is not supported"):
        sd.check_prediction_type("sample")
