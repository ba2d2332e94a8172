"""The train state carries its networks' graph definitions as a static field: not leaves,
hashable in the tree structure, a jitted donating step traced once, kept through
``jax.eval_shape`` and a checkpoint round trip, and no module-level cache of them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import diotm_2d, dsm_digits, otm_2d
from jot import data
from jot.methods import _common, diotm, dsm, otm
from jot.train import loop
from jot.train.checkpoint import Checkpointer


def _ot_state(method, module):
    c = module.get_config("test")
    c.loss.k_t = 2
    batch = loop._host_batch(data.build(c), 0, loop.batch_counts(method, c))
    return c, batch, jax.jit(lambda r, b: method.init(c, r, b))(jax.random.PRNGKey(0), batch)


def _dsm_state():
    c = dsm_digits.get_config("test")
    rng = np.random.default_rng(0)
    batch = {k: rng.uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32) for k in ("x", "y")}
    return c, batch, jax.jit(lambda r, b: dsm.init(c, r, b))(jax.random.PRNGKey(0), batch)


def _states():
    return {"diotm": (diotm, *_ot_state(diotm, diotm_2d)), "otm": (otm, *_ot_state(otm, otm_2d)),
            "dsm": (dsm, *_dsm_state())}


@pytest.fixture(scope="module")
def states():
    return _states()


NAMES = {"diotm": ("S", "T", "V"), "otm": ("T", "v"), "dsm": ("eps",)}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_graphdefs_are_static_and_hashable(states, name):
    method, c, batch, state = states[name]
    assert tuple(sorted(state.graphdefs)) == NAMES[name] == tuple(sorted(state.params))
    assert all(isinstance(g, nnx.GraphDef) for g in state.graphdefs.values())
    leaves, treedef = jax.tree.flatten(state)
    assert leaves and all(isinstance(x, jax.Array) for x in leaves)
    assert not any(isinstance(x, nnx.GraphDef) for x in leaves)
    # the graphdefs live in the tree structure, which must hash and compare for jit's cache
    hash(treedef)
    _, again = jax.tree.flatten(jax.jit(lambda r, b: method.init(c, r, b))(jax.random.PRNGKey(1), batch))
    assert again == treedef and hash(again) == hash(treedef)
    # merging a graphdef with the state's parameters gives the network's parameters back
    for net in NAMES[name]:
        got = nnx.to_pure_dict(nnx.state(_common.module(state, net, state.params[net]), nnx.Param))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(state.params[net]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", sorted(NAMES))
def test_donating_train_step_traces_once(states, name):
    method, c, batch, state = states[name]
    state = jax.tree.map(jnp.copy, state)  # the module's fixture state is not donated
    traces = []

    def step(s, b):
        traces.append(1)
        return method.train_step(c, s, b)

    jitted = jax.jit(step, donate_argnums=0)
    steps = []
    for _ in range(3):
        state, metrics = jitted(state, batch)
        steps.append(int(state.step))
        assert np.isfinite(float(metrics["loss"]))
    assert steps == [1, 2, 3]
    assert len(traces) == 1
    assert state.graphdefs == states[name][3].graphdefs


@pytest.mark.parametrize("name", ["diotm", "dsm"])
def test_eval_shape_and_checkpoint_restore_keep_the_graphdefs(states, name, tmp_path):
    method, c, batch, state = states[name]
    abstract = jax.eval_shape(lambda r, b: method.init(c, r, b), jax.random.PRNGKey(0), batch)
    assert abstract.graphdefs == state.graphdefs
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), create=True)
    ckpt.save(0, state)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    restored = ckpt.restore(0, target)
    ckpt.close()
    assert restored.graphdefs == state.graphdefs
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = jnp.asarray(batch["x"][0] if name == "diotm" else batch["x"])
    if name == "diotm":
        np.testing.assert_array_equal(np.asarray(diotm.transport(c, restored, x)), np.asarray(diotm.transport(c, state, x)))
    else:
        s = jnp.full((x.shape[0],), 3.0)
        cond = jnp.zeros((x.shape[0],), jnp.int32)
        np.testing.assert_array_equal(np.asarray(dsm.eps_model(c, restored)(x, s, cond)),
                                      np.asarray(dsm.eps_model(c, state)(x, s, cond)))


def test_no_module_level_graphdef_cache():
    for mod in (_common, diotm, otm, dsm):
        assert not hasattr(mod, "_graphdef_cached")
        assert not hasattr(mod, "graphdef")
        cached = [k for k, v in vars(mod).items() if callable(v) and hasattr(v, "cache_info")]
        assert cached == [], (mod.__name__, cached)
