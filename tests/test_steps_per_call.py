"""``train.steps_per_call`` (several steps per jitted call) and device-drawn batches in the loop:
same state as one step per call, exact resume, call boundaries, the NaN guard, the config record."""
import os
import signal

import jax
import numpy as np
import pytest

from configs import diotm_2d, otm_2d
from jot import data
from jot.errors import UserError
from jot.train import loop, records
from datasets_for_tests import InterruptAt


def _config(module=diotm_2d, sampler="host", per_call=1, **train):
    c = module.get_config("test")
    c.data.sampler = sampler
    c.train.steps_per_call = per_call
    c.train.steps = 13  # not a multiple of the calls' length
    for k, v in train.items():
        c.train[k] = v
    return c


def _leaves(state):
    return jax.tree.leaves(jax.device_get((state.params, state.opt_state, state.ema)))


def _assert_same(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _calls(per_call, start, tc):
    """The (first step, length) of every call the loop makes from ``start``."""
    out, step = [], start
    while step < tc.steps:
        n = min(per_call, loop._boundary(step, tc) - step)
        n = n if n == per_call else 1
        out.append((step, n))
        step += n
    return out


def test_calls_end_on_every_log_checkpoint_and_eval_step_with_two_lengths_at_most():
    c = diotm_2d.get_config("g8g")
    tc = c.train
    assert set(n for _, n in _calls(50, 0, tc)) == {50}  # 50 divides log_every=250 and checkpoint_every
    tc.steps, tc.log_every, tc.checkpoint_every, tc.eval_every = 1013, 100, 300, 250
    calls = _calls(40, 0, tc)
    ends = {s + n for s, n in calls}
    assert {n for _, n in calls} == {40, 1}
    for every in (100, 300, 250):
        assert set(range(every, 1013, every)) <= ends
    assert calls[-1] == (1012, 1) and sum(n for _, n in calls) == 1013
    assert _calls(40, 37, tc)[:3] == [(37, 40), (77, 1), (78, 1)]  # a resume from a stop between boundaries


@pytest.mark.parametrize("module,sampler", [(diotm_2d, "host"), (diotm_2d, "device"), (otm_2d, "device")])
def test_steps_per_call_gives_the_state_of_one_step_per_call(tmp_path, module, sampler):
    one = loop.train(_config(module, sampler, 1), str(tmp_path / "one"))
    four = loop.train(_config(module, sampler, 4), str(tmp_path / "four"))
    assert int(four.step) == 13
    _assert_same(one, four)


def test_device_and_host_samplers_are_different_streams_of_the_same_shapes(tmp_path):
    host = data.build(_config(sampler="host")).train_batch(3)
    device = data.build(_config(sampler="device")).train_batch(3)
    assert {k: v.shape for k, v in host.items()} == {k: v.shape for k, v in device.items()}
    assert not np.array_equal(host["x"], device["x"])


def test_signal_between_boundaries_with_device_batches_resumes_exactly(tmp_path, monkeypatch):
    c = _config(sampler="device", per_call=4)
    full = loop.train(c, str(tmp_path / "full"))
    reference = loop.train(_config(sampler="device", per_call=1), str(tmp_path / "one"))
    _assert_same(full, reference)

    call_args = loop.Trainer.call_args

    def signal_at_5(self, step, n):
        if step == 5:  # the call of steps 5..8: stop after it, at step 9 (no log or checkpoint there)
            os.kill(os.getpid(), signal.SIGINT)
        return call_args(self, step, n)

    monkeypatch.setattr(loop.Trainer, "call_args", signal_at_5)
    workdir = str(tmp_path / "cut")
    with pytest.raises(loop.Interrupted) as e:
        loop.train(c, workdir)
    assert e.value.step == 9
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == ["9"]
    monkeypatch.setattr(loop.Trainer, "call_args", call_args)
    resumed = loop.train(c, workdir)
    assert int(resumed.step) == 13
    _assert_same(full, resumed)


def test_interrupted_host_stacked_run_resumes_exactly(tmp_path):
    c = _config(per_call=4, checkpoint_every=4)
    full = loop.train(c, str(tmp_path / "full"))
    k = loop.batch_counts(loop.methods.get(c.method), c)["x"]
    with pytest.raises(KeyboardInterrupt):
        loop.train(c, str(tmp_path / "cut"), dataset=InterruptAt(data.build(c), at=9 * k))
    assert sorted(os.listdir(tmp_path / "cut" / "checkpoints"), key=int) == ["4", "8"]
    resumed = loop.train(c, str(tmp_path / "cut"))
    _assert_same(full, resumed)


class _PoisonStep:
    """Host dataset whose batches of step ``at`` (and later) are NaN."""

    def __init__(self, inner, at, count):
        self.inner, self.at, self.count = inner, at, count

    def train_batch(self, index):
        b = self.inner.train_batch(index)
        return {k: np.full_like(v, np.nan) for k, v in b.items()} if index // self.count >= self.at else b

    def eval_data(self):
        return self.inner.eval_data()


def test_nan_guard_names_the_first_bad_step_inside_a_call(tmp_path):
    c = _config(per_call=5, steps=20, checkpoint_every=5)
    k = loop.batch_counts(loop.methods.get(c.method), c)["x"]
    with pytest.raises(loop.TrainingDiverged, match=r"from step 8, detected at step 10; last good checkpoint: step 5"):
        loop.train(c, str(tmp_path), dataset=_PoisonStep(data.build(c), at=7, count=k))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["5"]


def test_steps_per_call_is_neutral_and_the_sampler_is_not():
    saved = _config()
    assert records.config_changes(saved, _config(per_call=50)) == []
    [change] = records.config_changes(saved, _config(sampler="device"))
    assert (change.field, change.old, change.new) == ("data.sampler", "host", "device")
    with pytest.raises(UserError, match=r"config.train.steps_per_call=0: expected an integer >= 1"):
        records.validate_config(_config(per_call=0))
    bad = _config()
    bad.data.sampler = "gpu"
    with pytest.raises(UserError, match=r"config.data.sampler='gpu': expected 'host' or 'device'"):
        records.validate_config(bad)
