"""``sd_dsm``: a text-conditioned SD UNet trained through the generic loop, with a frozen CLIP
text encoder and prompts tokenised byte by byte."""
import json
import os

import jax
import numpy as np
import pytest
import transformers
from tokenizers import pre_tokenizers

from configs import sd_dsm as sd_dsm_config
from jot import train
from jot.errors import UserError
from jot.methods import sd_dsm
from jot.models.sd.clip import CLIPTokenizer
from test_sd_load import pipeline  # noqa: F401  (the tiny saved StableDiffusionPipeline fixture)

PROMPTS = ["a thin digit", "a thick digit", "", "Digit 7, thick!", "UPPER  case   spaces"]


def test_byte_level_tokenizer_matches_transformers(tmp_path):
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    names = symbols + [c + "</w>" for c in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(names)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    ref = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=24)
    want = np.asarray(ref(PROMPTS, padding="max_length", max_length=24, truncation=True).input_ids)
    got = CLIPTokenizer.byte_level(model_max_length=24)(PROMPTS)
    assert len(CLIPTokenizer.byte_level()) == 514
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sd_dsm"))
    config = sd_dsm_config.get_config("test")
    config.mesh.data = 1
    config.train.progress = False
    state = train.train(config, workdir)
    return config, workdir, jax.device_get(state)


def test_training_updates_the_unet_and_leaves_the_text_encoder_frozen(trained):
    config, workdir, state = trained
    fresh = sd_dsm.init(config, jax.random.PRNGKey(config.seed),
                        {"x": np.zeros((2, 16, 16, 1), np.float32), "y": np.zeros((2, 16, 16, 1), np.float32)})
    assert int(state.step) == config.train.steps
    for a, b in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(fresh.frozen)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit-identical after training
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params))]
    assert sum(moved) > len(moved) // 2
    assert set(state.opt_state) == {"unet"} and set(state.graphdefs) == {"unet", "text_encoder"}
    restored = train.restore(workdir)
    for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_evaluation_reports_own_swapped_and_empty_prompts(trained):
    _, workdir, _ = trained
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    for frac in ("0.1", "0.5", "0.9"):
        own, swapped, uncond = (metrics[f"{k}_loss_s{frac}"] for k in ("eval", "swapped", "uncond"))
        assert all(np.isfinite([own, swapped, uncond]))
        assert own != swapped and own != uncond  # the prompt reaches the UNet


def test_prompt_embeddings_differ_per_domain_and_the_empty_prompt_comes_last(trained):
    config, _, state = trained
    ids = sd_dsm.prompt_ids(config)
    assert ids.shape == (3, config.model.text.max_length)
    np.testing.assert_array_equal(ids[2], CLIPTokenizer.byte_level(model_max_length=ids.shape[1])([""])[0])
    table = np.asarray(sd_dsm.text_embeddings(state, ids))
    assert table.shape == (3, ids.shape[1], config.model.text.hidden_size)
    assert np.abs(table[0] - table[1]).max() > 1e-3


@pytest.mark.parametrize("field, value, message", [
    ("model.prediction_type", "sample", r"prediction_type='sample'; expected one of \['epsilon', 'v_prediction'\]"),
    ("data.prompts", ("only one",), r"has 1 prompts but config.loss.domains=\('x', 'y'\) has 2 domains"),
    ("loss.cond_dropout", 1.0, r"cond_dropout=1.0; expected a probability in \[0, 1\)"),
    ("data.prompts", ("a thin digit", "a very very thick digit"), r"has 19 tokens .* raise max_length to 21"),
    ("model.dtype", "float16", r"model.dtype='float16'; expected 'float32' or 'bfloat16'"),
])
def test_config_errors_name_the_fix(field, value, message):
    config = sd_dsm_config.get_config("test")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(UserError, match=message):
        sd_dsm.check_config(config)


def test_v_prediction_trains_the_velocity_target(tmp_path):
    """One step's loss with prediction_type=v_prediction is the velocity loss of the same draw."""
    config = sd_dsm_config.get_config("test")
    batch = {k: np.random.default_rng(i).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32) for i, k in
             enumerate(("x", "y"))}
    losses = {}
    for kind in ("epsilon", "v_prediction"):
        config.model.prediction_type = kind
        state = sd_dsm.init(config, jax.random.PRNGKey(0), batch)
        _, metrics = jax.jit(lambda s, b, c=config: sd_dsm.train_step(c, s, b))(state, batch)
        losses[kind] = float(metrics["loss"])
    # The same network, noise and steps: eps and v targets differ, so the losses differ.
    assert np.isfinite(list(losses.values())).all() and losses["epsilon"] != losses["v_prediction"]


def test_remat_changes_nothing_and_bfloat16_keeps_float32_parameters():
    config = sd_dsm_config.get_config("test")
    batch = {k: np.random.default_rng(i).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32) for i, k in
             enumerate(("x", "y"))}
    out = {}
    for name, remat, dtype in (("plain", False, "float32"), ("remat", True, "float32"), ("bf16", False, "bfloat16")):
        config.model.remat, config.model.dtype = remat, dtype
        state = sd_dsm.init(config, jax.random.PRNGKey(0), batch)
        new, metrics = jax.jit(lambda s, b, c=config: sd_dsm.train_step(c, s, b))(state, batch)
        out[name] = (float(metrics["loss"]), new, float(metrics["grad_norm"]))
    # Rematerialisation recomputes the same forward pass: the same loss and gradient.
    np.testing.assert_allclose(out["remat"][0], out["plain"][0], rtol=1e-6)
    np.testing.assert_allclose(out["remat"][2], out["plain"][2], rtol=1e-5)
    loss, state, _ = out["bf16"]
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    assert np.isfinite(loss) and abs(loss - out["plain"][0]) < 0.05 * out["plain"][0]  # bf16 rounding only


def test_fine_tuning_a_diffusers_folder_starts_from_its_unet_and_keeps_vae_and_text_encoder_frozen(pipeline, tmp_path):  # noqa: F811
    from PIL import Image

    from jot.methods import textual_inversion
    from jot.models import sd

    _, folder = pipeline
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    config = sd_dsm_config.get_config("test")
    config.model.path = str(folder)
    config.data = type(config.data)({"name": "folder", "source": str(tmp_path / "a"), "target": str(tmp_path / "b"),
                                     "size": 16, "channels": 3, "prompts": ("a red square", "a blue square")})
    config.train.update(steps=2, batch_size=2, progress=False, checkpoint_every=2)
    config.mesh.data = 1
    workdir = str(tmp_path / "ft")
    loaded = sd.load(folder)
    start = nnx_state(loaded.unet)
    state = train.train(config, workdir)
    # The UNet started from the folder's weights and moved; VAE and text encoder are the folder's, bit for bit.
    fresh = sd_dsm.init(config, jax.random.PRNGKey(0), {}, sd_dsm.load_pretrained(config))
    for a, b in zip(jax.tree.leaves(fresh.params["unet"]), start):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert any(not np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(state.params["unet"]), start))
    for a, b in zip(jax.tree.leaves(state.pretrained.vae), nnx_state(loaded.vae)):
        np.testing.assert_array_equal(np.asarray(a), b)
    for a, b in zip(jax.tree.leaves(state.pretrained.text_encoder), nnx_state(loaded.text_encoder)):
        np.testing.assert_array_equal(np.asarray(a), b)
    # The latents are the VAE's (8x8x4 for 16x16 images), and checkpoints hold no pretrained part.
    assert sd_dsm.latents(state.pretrained, np.zeros((1, 16, 16, 3), np.float32)).shape == (1, 8, 8, 4)
    assert train.restore(workdir).state.pretrained is not None
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))  # no held-out images (data.num_eval = 0)
    # Textual inversion into the fine-tuned run reads its frozen parts and trained UNet.
    pre = textual_inversion.load_pretrained(type(config)({"model": {"workdir": workdir, "path": ""},
                                                          "textual_inversion": {"tokens": ("<sq>",)}}))
    for a, b in zip(jax.tree.leaves(pre.unet), jax.tree.leaves(state.ema["unet"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert pre.vae is not None and pre.tokenizer.added_tokens == ["<sq>"]


def nnx_state(module):
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(module)))]
