"""End to end, as a user runs it: train ``dsm`` (tiny ``test`` preset), then ``--mode=translate``.

Trains through ``launch.main.run(config, workdir, "train")``, translates in-process with DDIB and
in-process with LSB, and through the CLI (``python -m launch.main ... --mode=translate``) with OT-ALD, each pointing
``translate.model_workdir`` at the training run, and checks what lands in the workdir.
"""
import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import dsm_digits, translate_digits
from jot import train
from jot.data import digits
from jot.methods import dsm
from jot.translate import lsb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16  # the test preset's image size
HELDOUT_KEYS = [f"{stat}_{tag}" for stat in ("w2sq", "marginal_w2sq", "bures_w2sq", "diag_bures_w2sq")
                for tag in ("before", "after", "floor")]
HELDOUT_KEYS += ["var_ratio_mean", "var_ratio_std", "var_ratio_floor_std", "var_ratio_total", "collapse_fraction",
                 "num_eval"]


def _check_outputs(workdir, method, num_images, nfe, source):
    files = {ext: os.path.join(workdir, f"translate_{method}.{ext}") for ext in ("npz", "png", "json")}
    assert all(os.path.exists(p) for p in files.values()), sorted(os.listdir(workdir))

    with np.load(files["npz"]) as z:
        assert set(z.files) == {"x", "translated", "y", "label"}
        x, out = z["x"], z["translated"]
        assert x.shape == out.shape == (num_images, SIZE, SIZE, 1)  # one output per input
        np.testing.assert_array_equal(x, source[:num_images])
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
        # x0_hat is clipped to [-1, 1] while sampling, and the last DDIM step returns x0_hat.
        assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5, (out.min(), out.max())
        assert z["y"].shape == x.shape and z["label"].shape == (num_images,)

    png = Image.open(io.BytesIO(open(files["png"], "rb").read()))
    png.load()
    shown = min(num_images, 16)
    assert png.format == "PNG" and png.mode == "L"
    assert png.size == (shown * SIZE, 2 * SIZE)  # (width, height): sources above translations
    pixels = np.asarray(png, dtype=np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(pixels[:SIZE], np.concatenate(list(x[:shown, ..., 0]), axis=1), atol=1 / 127.5 + 1e-6)

    metrics = json.load(open(files["json"]))
    keys = {"method", "nfe", "num_images", "seconds_per_image", "frechet", "psnr"}
    if method == "otald":
        keys |= {"fit_seconds"} | {f"heldout_{k}" for k in HELDOUT_KEYS}
    assert set(metrics) == keys, sorted(metrics)
    assert metrics["method"] == method and metrics["nfe"] == nfe and metrics["num_images"] == num_images
    assert all(np.isfinite(metrics[k]) for k in keys - {"method"})
    assert metrics["seconds_per_image"] > 0 and metrics["frechet"] >= 0 and 0 < metrics["psnr"] < 60
    # PSNR in the JSON is that of the saved images against the saved true twins.
    mse = np.mean((out - z_y(files["npz"])) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(metrics["psnr"], np.mean(10 * np.log10(4.0 / mse)), rtol=1e-4)
    return metrics


def z_y(path):
    with np.load(path) as z:
        return z["y"]


@pytest.mark.slow
def test_train_dsm_then_translate_from_launcher_and_cli(tmp_path):
    from launch import main

    model_dir, ddib_dir, cli_dir = (str(tmp_path / d) for d in ("dsm", "ddib", "otald"))
    train_config = dsm_digits.get_config("test")
    train_config.mesh.data = 1  # sharding has its own tests; one device compiles fastest
    main.run(train_config, model_dir, "train")
    ckpt = os.path.join(model_dir, "checkpoints")
    assert sorted(int(s) for s in os.listdir(ckpt) if s.isdigit())[-1] == train_config.train.steps

    source = digits.split(SIZE).test_x

    # 1) In-process through the launcher's run(), DDIB with the preset's NFE.
    config = translate_digits.get_config("test")
    config.translate.method = "ddib"
    config.translate.model_workdir = model_dir
    metrics = main.run(config, ddib_dir, "translate")
    assert metrics["nfe"] == config.translate.nfe == 4
    assert not os.path.exists(os.path.join(ddib_dir, "checkpoints"))  # it read the model, trained nothing
    on_disk = _check_outputs(ddib_dir, "ddib", config.translate.num_images, 4, source)
    assert on_disk == pytest.approx(metrics)

    # LSB: the model's domain labels are its two conditions; the files hold lsb.translate's output.
    config.translate.method = "lsb"
    lsb_dir = str(tmp_path / "lsb")
    metrics = main.run(config, lsb_dir, "translate")
    _check_outputs(lsb_dir, "lsb", config.translate.num_images, 4, source)
    model = train.restore(model_dir)
    t = config.translate
    want = lsb.translate(jnp.asarray(source[: t.num_images]), jax.random.PRNGKey(config.seed), nfe=4,
                         schedule=dsm.schedule(model.config), eps_fn=dsm.eps_model(model.config, model.state),
                         cond_source=0, cond_target=1, sigma=t.lsb_sigma, t0=t.lsb_t0, guidance=t.guidance, clip=1.0)
    with np.load(os.path.join(lsb_dir, "translate_lsb.npz")) as z:
        np.testing.assert_allclose(z["translated"], np.asarray(want), atol=1e-5)

    # 2) The CLI, OT-ALD (the config's default method) with an overridden NFE.
    cmd = [sys.executable, "-m", "launch.main", "--config=configs/translate_digits.py:test",
           f"--workdir={cli_dir}", "--mode=translate", f"--config.translate.model_workdir={model_dir}",
           "--config.translate.nfe=6"]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")  # reuse the test session's compile cache
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _check_outputs(cli_dir, "otald", 8, 6, source)
    assert "psnr" in proc.stdout and "frechet" in proc.stdout  # the printed metrics table
    # Latent statistics on held-out images: the test preset inverts 16 target and 8 source test
    # images; 8 mapped latents are compared with 8 target latents, next to the other 8.
    assert metrics["heldout_num_eval"] == 8 and metrics["heldout_w2sq_floor"] > 0, metrics
    assert "heldout_w2sq_floor" in proc.stdout and "heldout_var_ratio_mean" in proc.stdout
