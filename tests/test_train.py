"""The generic loop with OTM/DIOTM: learning, sharding, resume, NaN guard."""
import json
import os

import jax
import numpy as np
import pytest

from configs import diotm_2d, otm_2d
from jot.data import toy
from jot.methods import diotm, otm
from jot.train import loop
from datasets_for_tests import InterruptAt


def _config(module=diotm_2d, **train):
    c = module.get_config("test")
    for k, v in train.items():
        c.train[k] = v
    return c


def _params(state):
    return jax.tree.leaves(jax.device_get(state.params))


@pytest.mark.slow
def test_diotm_learns_translation_between_gaussians(tmp_path):
    c = _config(steps=600, log_every=100, checkpoint_every=600, ema=0.0)
    c.data.target_mean = (3.0, -2.0)
    c.train.lr_map = c.train.lr_potential = 2e-3
    state = loop.train(c, str(tmp_path))
    x = np.random.default_rng(5).normal(size=(512, 2)).astype(np.float32)
    tx = np.asarray(diotm.transport(c, state, x))
    err = np.mean(np.sum((tx - (x + np.array([3.0, -2.0]))) ** 2, -1))
    assert err < 0.15, err  # the identity map is 13 away
    sy = np.asarray(diotm.transport_backward(c, state, x + np.array([3.0, -2.0], np.float32)))
    assert np.mean(np.sum((sy - x) ** 2, -1)) < 0.15
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert metrics["w2"] < 0.5 and metrics["l2_to_ot"] < 0.5 and metrics["w2_backward"] < 0.5


def test_one_step_on_eight_devices_equals_one_device(tmp_path):
    assert jax.device_count() == 8
    results = []
    for n in (1, 8):
        c = _config(steps=2, checkpoint_every=2)
        c.mesh.data = n
        state = loop.train(c, str(tmp_path / f"d{n}"))
        results.append(_params(state))
        if n == 8:
            assert len(state.params["T"]["lift"]["kernel"].sharding.device_set) == 8
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("module", [diotm_2d, otm_2d])
def test_interrupt_and_resume_matches_uninterrupted_run(tmp_path, module):
    c = _config(module, steps=12, checkpoint_every=4)
    full = loop.train(c, str(tmp_path / "full"))
    from jot import data

    # the source stream of a step is dataset batches step * count + j, count = k_t + 1.
    k = loop.batch_counts(otm if module is otm_2d else diotm, c)["x"]
    with pytest.raises(KeyboardInterrupt):
        loop.train(c, str(tmp_path / "cut"), dataset=InterruptAt(data.build(c), at=9 * k))
    assert sorted(os.listdir(tmp_path / "cut" / "checkpoints")) == ["4", "8"]
    resumed = loop.train(c, str(tmp_path / "cut"))
    assert int(resumed.step) == 12
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(jax.device_get(full.ema)), jax.tree.leaves(jax.device_get(resumed.ema))):
        np.testing.assert_array_equal(a, b)


class _PoisonAt:
    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def train_batch(self, step):
        b = self.inner.train_batch(step)
        if step >= self.at:
            b = {k: np.full_like(v, np.nan) for k, v in b.items()}
        return b

    def eval_data(self):
        return self.inner.eval_data()


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    c = _config(steps=20, log_every=5, checkpoint_every=5)
    from jot import data

    with pytest.raises(loop.TrainingDiverged, match=r"at step 15; last good checkpoint: step 10"):
        poison = 12 * loop.batch_counts(diotm, c)["x"]  # the first dataset batch of step 12
        loop.train(c, str(tmp_path), dataset=_PoisonAt(data.build(c), at=poison))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "5"]


def test_otm_moves_mass_toward_the_target(tmp_path):
    c = _config(otm_2d, steps=150, log_every=50, checkpoint_every=150)
    c.data.target_mean = (3.0, 3.0)
    c.train.lr_map = c.train.lr_potential = 2e-3
    state = loop.train(c, str(tmp_path))
    x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
    moved = np.asarray(otm.transport(c, state, x)).mean(0)
    assert np.all(moved > 1.5), moved  # identity would stay at 0; the target mean is 3


def test_bad_inputs_raise_clear_errors(tmp_path):
    c = _config()
    c.mesh.data = 16
    with pytest.raises(ValueError, match="config.mesh.data=16 x fsdp=1 needs 16 devices but 8"):
        loop.train(c, str(tmp_path / "a"))
    c = _config(batch_size=60)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        loop.train(c, str(tmp_path / "b"))
    c = _config()
    c.method = "diotmm"
    with pytest.raises(ValueError, match="unknown method 'diotmm'"):
        loop.train(c, str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        loop.evaluate(_config(), str(tmp_path / "empty"))


def test_gaussians_dataset_follows_config():
    c = _config()
    c.data.target_mean, c.data.target_std = (10.0, -10.0), 0.5
    from jot import data

    y = np.concatenate([data.build(c).train_batch(s)["y"] for s in range(20)])
    np.testing.assert_allclose(y.mean(0), [10, -10], atol=0.1)
    assert y.std(0) == pytest.approx([0.5, 0.5], rel=0.1)
    assert isinstance(data.build(c), toy.PointClouds)
