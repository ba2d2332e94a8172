"""jot.methods.rdmd through the generic loop: outputs, the teacher kept out of checkpoints,
exact resume, the generator's initialisations, config errors, and learning a 2D translation."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import rdmd_2d
from datasets_for_tests import InterruptAt
from jot import data, train
from jot.errors import UserError
from jot.methods import rdmd
from jot.train import loop


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("teacher"))
    loop.train(rdmd_2d.get_config("teacher_test"), wd)
    return wd


def _config(teacher_dir, **fields):
    c = rdmd_2d.get_config("test")
    c.teacher.workdir = teacher_dir
    for k, v in fields.items():
        section, name = k.split("__")
        c[section][name] = v
    return c


def test_trains_writes_outputs_and_keeps_the_teacher_out_of_checkpoints(tmp_path, teacher_dir):
    c = _config(teacher_dir)
    state = loop.train(c, str(tmp_path))
    assert int(state.step) == c.train.steps
    z = np.load(tmp_path / "transport.npz")
    assert set(z.files) == {"x", "Tx", "y"} and z["Tx"].shape == z["x"].shape == (256, 2)
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert {"w2", "l2_to_ot", "cost"} <= set(metrics)
    np.testing.assert_allclose(metrics["cost"], np.mean(np.sum((z["Tx"] - z["x"]) ** 2, 1)), rtol=1e-5)
    assert os.path.exists(tmp_path / "transport.png")
    # The generator moved, and the fake model left the teacher's parameters.
    teacher = jax.device_get(state.pretrained.params)
    moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(jax.device_get(state.params["fake"])),
                                                  jax.tree.leaves(teacher))]
    assert max(moved) > 0
    # A reader restores the run: the teacher comes back from its own workdir, G(x) is reproduced.
    run = train.restore(str(tmp_path))
    assert run.state.pretrained is not None
    tx = np.asarray(jax.jit(lambda s, x: rdmd.transport(run.config, s, x))(run.state, z["x"]))
    np.testing.assert_allclose(tx, z["Tx"], rtol=1e-5, atol=1e-5)


def test_interrupt_and_resume_matches_uninterrupted_run(tmp_path, teacher_dir):
    c = _config(teacher_dir)
    full = loop.train(c, str(tmp_path / "full"))
    k = loop.batch_counts(rdmd, c)["x"]
    assert k == c.loss.k_fake + 1
    with pytest.raises(KeyboardInterrupt):
        loop.train(c, str(tmp_path / "cut"), dataset=InterruptAt(data.build(c), at=4 * k))
    assert sorted(os.listdir(tmp_path / "cut" / "checkpoints")) == ["3"]
    resumed = loop.train(c, str(tmp_path / "cut"))
    assert int(resumed.step) == c.train.steps
    for a, b in zip(jax.tree.leaves(jax.device_get((full.params, full.ema, full.opt_state))),
                    jax.tree.leaves(jax.device_get((resumed.params, resumed.ema, resumed.opt_state)))):
        np.testing.assert_array_equal(a, b)


def _initial_state(c):
    teacher = rdmd.load_pretrained(c)
    batch = loop._host_batch(data.build(c), 0, rdmd.batches_per_step(c))
    return rdmd.init(c, jax.random.PRNGKey(0), batch, teacher).replace(pretrained=teacher), teacher


def test_generator_initialisations(teacher_dir):
    x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    c = _config(teacher_dir, model__init="identity")
    state, _ = _initial_state(c)
    np.testing.assert_array_equal(np.asarray(rdmd.transport(c, state, x)), x)
    c = _config(teacher_dir, model__init="teacher", model__init_t=0.4)
    state, teacher = _initial_state(c)
    s_star = 0.4 * (teacher.schedule.num_steps - 1)
    a = float(teacher.schedule.alpha_bar_at(jnp.float32(s_star)))
    eps = teacher.eps()(jnp.asarray(np.sqrt(a) * x), jnp.full((32,), s_star))
    expected = x - np.sqrt((1 - a) / a) * np.asarray(eps)  # the teacher's x0-prediction at s*
    np.testing.assert_allclose(np.asarray(rdmd.transport(c, state, x)), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected - x).max() > 1e-4  # the teacher's denoiser is not the identity


def test_bad_config_values_raise_user_errors(tmp_path, teacher_dir):
    cases = [
        ({"teacher__workdir": ""}, r"config.teacher.workdir is empty"),
        ({"teacher__workdir": str(tmp_path / "nope")}, r"config.teacher.workdir=.* is not a folder"),
        ({"loss__lam": -0.1}, r"config.loss.lam=-0.1"),
        ({"loss__k_fake": 0}, r"config.loss.k_fake=0"),
        ({"loss__time_weight": "snr"}, r"config.loss.time_weight='snr'; expected one of \['dmd', 'kl', 'x0'\]"),
        ({"loss__t_min": 0.9, "loss__t_max": 0.5}, r"0 <= t_min < t_max <= 1"),
        ({"loss__cost_reduce": "max"}, r"config.loss.cost_reduce='max'"),
        ({"model__init": "noise"}, r"config.model.init='noise'; expected 'teacher'"),
        ({"model__init_t": 0.0}, r"config.model.init_t=0.0"),
        ({"teacher__label": -3}, r"config.teacher.label=-3"),
    ]
    for i, (fields, message) in enumerate(cases):
        with pytest.raises(UserError, match=message):
            loop.train(_config(teacher_dir, **fields), str(tmp_path / f"run{i}"))
        assert not os.path.exists(tmp_path / f"run{i}" / "checkpoints")
    # A conditioned label for an unconditional teacher, and a teacher that is not a dsm run.
    with pytest.raises(UserError, match=r"unconditional \(num_classes=0\); set config.teacher.label=-1"):
        loop.train(_config(teacher_dir, teacher__label=1), str(tmp_path / "label"))
    other = str(tmp_path / "rdmd_run")
    loop.train(_config(teacher_dir, train__steps=3), other)
    with pytest.raises(UserError, match=r"holds a 'rdmd' run; the teacher must be a dsm run"):
        loop.train(_config(other), str(tmp_path / "not_dsm"))


def test_dsm_mlp_kind_is_checked(tmp_path):
    c = rdmd_2d.get_config("teacher_test")
    c.model.kind = "transformer"
    with pytest.raises(UserError, match=r"config.model.kind='transformer'; expected 'unet' \(images\) or 'mlp'"):
        loop.train(c, str(tmp_path))


@pytest.mark.slow
def test_rdmd_learns_a_translation_between_gaussians(tmp_path):
    """A trained 2D teacher of N((4, 4), I); RDMD from the identity reaches the target (W2^2 of the
    identity is 32) while the transport cost keeps it near the OT map x + (4, 4)."""
    ct = rdmd_2d.get_config("teacher_test")
    ct.mesh.data = 1
    ct.model.num_steps, ct.model.width, ct.model.blocks = 1000, 64, 2
    ct.train.update(steps=1500, lr=3e-3, batch_size=256, ema=0.99, checkpoint_every=1500, log_every=500)
    loop.train(ct, str(tmp_path / "teacher"))
    c = _config(str(tmp_path / "teacher"), model__init="identity", loss__lam=0.01)
    c.mesh.data = 1
    c.train.update(steps=300, lr_G=3e-3, log_every=100, checkpoint_every=300)
    loop.train(c, str(tmp_path / "rdmd"))
    metrics = json.load(open(tmp_path / "rdmd" / "metrics.json"))
    assert metrics["w2"] < 1.0 and metrics["l2_to_ot"] < 1.5, metrics
    z = np.load(tmp_path / "rdmd" / "transport.npz")
    np.testing.assert_allclose(z["Tx"].mean(0), [4.0, 4.0], atol=0.7)
    np.testing.assert_allclose(z["Tx"].std(0), [1.0, 1.0], atol=0.25)


@pytest.mark.slow
def test_digits_with_a_domain_conditioned_unet_teacher(tmp_path):
    from configs import dsm_digits, rdmd_digits
    from jot.metrics import image

    loop.train(dsm_digits.get_config("test"), str(tmp_path / "teacher"))
    c = rdmd_digits.get_config("test")
    c.teacher.workdir = str(tmp_path / "teacher")
    c.data.size = 8
    with pytest.raises(UserError, match=r"config.data.size=8 but the teacher .* data.size=16"):
        loop.train(c, str(tmp_path / "bad"))
    c.data.size = 16
    c.teacher.label = -1
    with pytest.raises(UserError, match=r"conditioned on 2 labels; set config.teacher.label"):
        loop.train(c, str(tmp_path / "bad"))
    c.teacher.label = 1
    loop.train(c, str(tmp_path / "rdmd"))
    z = np.load(tmp_path / "rdmd" / "transport.npz")
    assert z["Tx"].shape == z["x"].shape == z["y"].shape and z["x"].shape[1:] == (16, 16, 1)
    metrics = json.load(open(tmp_path / "rdmd" / "metrics.json"))
    np.testing.assert_allclose(metrics["cost"], np.mean((z["Tx"] - z["x"]) ** 2), rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr"], image.psnr(np.clip(z["Tx"], -1, 1), z["y"]).mean(), rtol=1e-5)
    assert np.isfinite(metrics["frechet"]) and metrics["frechet_source"] > 0
