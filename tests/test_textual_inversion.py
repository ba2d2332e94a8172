"""The ``textual_inversion`` method through the loop: only the placeholder rows train, the frozen
model stays out of checkpoints and is bit-identical, resume is exact, and the written file is
what diffusers' ``load_textual_inversion`` reads."""
import json
import os

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from configs import sd_dsm as sd_dsm_config
from configs import textual_inversion as ti_config
from jot import train
from jot.methods import textual_inversion
from jot.models.sd import textual_inversion as ti_files
from jot.train.checkpoint import Checkpointer
from test_sd_load import pipeline  # noqa: F401  (the tiny saved StableDiffusionPipeline fixture)


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory):
    """A few steps of the sd_dsm test preset: the frozen model to invert into."""
    workdir = str(tmp_path_factory.mktemp("sd_dsm"))
    config = sd_dsm_config.get_config("test")
    config.mesh.data = 1
    config.train.progress = False
    train.train(config, workdir)
    return workdir


def _config(sd_run, steps):
    c = ti_config.get_config("test")
    c.model.workdir = sd_run
    c.train.steps = steps
    c.train.lr_schedule = "constant"
    c.train.progress = False
    c.mesh.data = 1
    return c


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def test_only_the_placeholder_rows_train_and_the_model_stays_frozen(sd_run, tmp_path):
    config = _config(sd_run, 3)
    workdir = str(tmp_path / "ti")
    state = train.train(config, workdir)
    source = train.restore(sd_run).state
    pre = state.pretrained
    # The frozen UNet (EMA weights) and text encoder are those of the sd_dsm run, bit for bit.
    for a, b in zip(_leaves(pre.unet), _leaves(source.ema["unet"])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(pre.text_encoder), _leaves(source.frozen["text_encoder"])):
        np.testing.assert_array_equal(a, b)
    # The rows started at the embedding of init_text ("digit") and moved.
    first = textual_inversion.init(config, jax.random.PRNGKey(0), {}, pre).params["embeddings"]
    rows = np.asarray(state.params["embeddings"])
    assert rows.shape == (1, sd_dsm_config.get_config("test").model.text.hidden_size)
    assert np.abs(rows - np.asarray(first)).max() > 1e-4
    # Checkpoints hold the trained part only.
    checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        step = checkpoints.latest_step()
        names = os.listdir(os.path.join(workdir, "checkpoints", str(step)))
    finally:
        checkpoints.close()
    assert step == 3 and names
    restored = train.restore(workdir)
    assert restored.state.pretrained is not None
    np.testing.assert_array_equal(np.asarray(restored.state.params["embeddings"]), rows)
    # The file: diffusers' format, the learned row under the token.
    saved = ti_files.load_embeddings([os.path.join(workdir, ti_files.FILE_NAME)])
    assert list(saved) == ["<thick>"]
    np.testing.assert_array_equal(saved["<thick>"], rows)
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert {"loss_s0.5", "ref0_loss_s0.5", "ref1_loss_s0.5", "fd", "ref0_fd", "ref1_fd", "fd_floor"} <= set(metrics)
    assert all(np.isfinite(v) and v >= 0 for k, v in metrics.items() if "fd" in k)


def test_resume_is_exact(sd_run, tmp_path):
    straight = train.train(_config(sd_run, 4), str(tmp_path / "straight"))
    train.train(_config(sd_run, 2), str(tmp_path / "resumed"))
    resumed = train.train(_config(sd_run, 4), str(tmp_path / "resumed"))
    np.testing.assert_array_equal(np.asarray(resumed.params["embeddings"]), np.asarray(straight.params["embeddings"]))
    for a, b in zip(_leaves(resumed.opt_state), _leaves(straight.opt_state)):
        np.testing.assert_array_equal(a, b)


def test_inversion_into_a_diffusers_folder_writes_what_diffusers_loads(pipeline, tmp_path):  # noqa: F811
    pipe, folder = pipeline
    images = tmp_path / "concept"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    c = ti_config.get_config()
    c.model.path = str(folder)
    c.data.source = str(images)
    c.data.size = 16
    c.textual_inversion.tokens = ("<cat>",)
    c.textual_inversion.templates = ("a photo of a {}",)
    c.train.steps, c.train.batch_size, c.train.lr, c.train.log_every = 2, 2, 1e-2, 1
    c.train.progress = False
    c.mesh.data = 1
    workdir = str(tmp_path / "ti")
    state = train.train(c, workdir)
    path = os.path.join(workdir, ti_files.FILE_NAME)
    pipe.load_textual_inversion(path)
    ids = pipe.tokenizer(["a photo of a <cat>"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        want = pipe.text_encoder(ids)[0].numpy()
    got = textual_inversion.text_embeddings(state.pretrained, state.pretrained.tokenizer(["a photo of a <cat>"]),
                                            state.params["embeddings"])
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * max(1.0, np.abs(want).max()))
    # jot's loader reads the file back into the pipeline's prompts.
    from jot.models import sd

    loaded = sd.load(folder, textual_inversion=[path])
    np.testing.assert_allclose(np.asarray(loaded.encode_prompt(["a photo of a <cat>"])), want,
                               atol=1e-5 * max(1.0, np.abs(want).max()))
    assert loaded.tokenizer.added_tokens == ["<cat>"]


@pytest.mark.parametrize("field, value, message", [
    ("model.workdir", "", r"set exactly one"),
    ("textual_inversion.templates", ("a photo",), r"each template needs one '\{\}'"),
    ("textual_inversion.tokens", (), r"tokens is empty"),
    ("train.ema", 0.9, r"keeps no EMA"),
])
def test_config_errors_name_the_fix(field, value, message):
    from jot.errors import UserError

    c = ti_config.get_config("test")
    c.model.workdir = "somewhere"
    section, name = field.split(".")
    c[section][name] = value
    with pytest.raises(UserError, match=message):
        textual_inversion.check_config(c)


def test_missing_weights_and_empty_image_folders_are_one_clear_error(tmp_path):
    from jot.errors import UserError

    weights, images = tmp_path / "sd", tmp_path / "images"
    weights.mkdir()
    images.mkdir()
    c = ti_config.get_config()
    c.model.path, c.data.source, c.train.progress, c.mesh.data = str(weights), str(images), False, 1
    with pytest.raises(UserError, match=r"image folder '.*images' contains no .png/.jpg/.jpeg files"):
        train.train(c, str(tmp_path / "w1"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "0.png")
    with pytest.raises(UserError, match=r"config.model.path='.*sd' cannot be loaded as Stable Diffusion: .*model_index"):
        train.train(c, str(tmp_path / "w2"))


def test_translate_with_learned_tokens_from_an_sd_dsm_run(sd_run, tmp_path):
    """``--mode=translate --config=configs/lsb_sd.py:digits`` reads the sd_dsm run and the learned
    "<thick>" (the run folder of textual inversion), and writes what the translator returns."""
    from configs import lsb_sd
    from jot.methods import sd_dsm
    from jot.translate import sd as sd_translate
    from jot.translate import text_runner
    from launch.main import run

    ti_dir = str(tmp_path / "ti")
    state = train.train(_config(sd_run, 2), ti_dir)
    config = lsb_sd.get_config("digits")
    config.model.workdir = sd_run
    config.translate.update(textual_inversion=(ti_dir,), source_prompt="a thin digit", target_prompt="a <thick> digit",
                            nfe=3, num_images=4, batch_size=4, progress=False, guidance=3.0)
    config.mesh.data = 1
    out = tmp_path / "out"
    metrics = run(config, str(out), "translate")
    assert metrics["num_images"] == 4 and np.isfinite(metrics["psnr"]) and np.isfinite(metrics["frechet"])
    assert sorted(os.listdir(out / "translated")) == [f"digit_{i:04d}.png" for i in range(4)]

    restored = train.restore(sd_run)
    pipe = sd_dsm.text_pipeline(restored.config, restored.state).with_textual_inversion([ti_dir])
    learned = np.asarray(jax.device_get(state.params["embeddings"]))
    np.testing.assert_allclose(np.asarray(pipe.extra_embeddings), learned, rtol=1e-6)  # the learned row is used
    images = text_runner._images(config)
    want = sd_translate.Translator(pipe, "a thin digit", "a <thick> digit", text_runner.settings(config))(
        images["x"], jax.random.fold_in(jax.random.PRNGKey(config.seed), 0))
    want = np.clip(np.asarray(want), -1, 1)
    for i in range(4):
        png = np.asarray(Image.open(out / "translated" / f"digit_{i:04d}.png"), np.float32) / 127.5 - 1
        np.testing.assert_allclose(png, want[i, ..., 0], atol=1.5 / 127.5)
