"""``jot.train.restore``: a trained run read back from its workdir, without a ``Trainer``."""
import json
import os

import jax
import numpy as np
import pytest

from configs import diotm_2d
from jot import train
from jot.methods import _ot_eval, diotm
from jot.train import records


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The ``test`` preset trained for its 20 steps (checkpoints at steps 10 and 20)."""
    workdir = str(tmp_path_factory.mktemp("diotm"))
    config = diotm_2d.get_config("test")
    config.mesh.data = 1  # sharding has its own tests; one device compiles fastest
    state = train.train(config, workdir)
    return workdir, jax.device_get(state)


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def test_restore_gives_the_trained_state_and_the_recorded_config(trained):
    workdir, state = trained
    model = train.restore(workdir)
    assert model.step == 20 and int(model.state.step) == 20
    assert model.method is diotm
    assert model.config == records.read_config(workdir)
    assert json.loads(model.config.to_json_best_effort()) == json.load(open(os.path.join(workdir, "config.json")))
    assert jax.tree.structure(model.state) == jax.tree.structure(state)
    for got, want in zip(_leaves(model.state), _leaves(state)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    mesh = model.mesh
    assert all(x.sharding.is_equivalent_to(jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), x.ndim)
               for x in jax.tree.leaves(model.state))


def test_restore_of_an_earlier_step(trained):
    workdir, state = trained
    model = train.restore(workdir, step=10)
    assert model.step == 10 and int(model.state.step) == 10
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(model.state.params), _leaves(state.params)))
    with pytest.raises(train.NoRun, match="no checkpoint of step 7 in .*; it holds steps 10, 20"):
        train.restore(workdir, step=7)


def test_restored_transport_reproduces_the_saved_evaluation(trained):
    workdir, _ = trained
    model = train.restore(workdir)
    rng_t, _ = _ot_eval.noise_keys(model.config)
    with np.load(os.path.join(workdir, "transport.npz")) as saved:
        x, tx = saved["x"], saved["Tx"]
    got = jax.jit(lambda s, u, r: diotm.transport(model.config, s, u, r))(model.state, x, rng_t)
    np.testing.assert_array_equal(np.asarray(got), tx)


def test_a_given_config_only_changes_neutral_fields(trained, capsys):
    workdir, _ = trained
    given = diotm_2d.get_config("test")
    given.mesh.data = 1
    given.eval.paths = 7  # neutral: taken from the given config
    given.model.width = 64  # result-changing: ignored, with a warning
    model = train.restore(workdir, config=given)
    assert model.config.model.width == 32 and model.config.eval.paths == 7
    assert "model.width: 32 -> 64" in capsys.readouterr().err


def test_restore_of_a_mistyped_workdir_creates_nothing(tmp_path):
    typo = tmp_path / "runz" / "diotm"
    with pytest.raises(train.NoRun, match=f"no run at '{typo}'"):
        train.restore(str(typo))
    assert isinstance(train.NoRun("x"), FileNotFoundError) and isinstance(train.NoRun("x"), train.UserError)
    assert not os.path.exists(tmp_path / "runz")
