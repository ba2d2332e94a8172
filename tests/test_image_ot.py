"""Image OT maps: the UNet map and convolutional potentials (``jot.models.image_ot``), the
``model.kind="unet"`` route of OTM / DIOTM, their image evaluation and ``configs/*_images.py``."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import diotm_images, otm_images
from jot.errors import UserError
from jot.methods import _common, _ot_eval
from jot.models import image_ot
from jot.train import loop


def _x(n=4, size=16, ch=1, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, size, size, ch), minval=-1.0, maxval=1.0)


def test_unet_map_is_identity_at_init_and_uses_its_noise():
    m = image_ot.UNetMap((16, 16, 1), channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                         noise_dim=3, num_groups=4, rngs=nnx.Rngs(0))
    x = _x()
    z1, z2 = jnp.zeros((4, 3)), jnp.ones((4, 3))
    np.testing.assert_array_equal(np.asarray(m(x, z1)), np.asarray(x))
    # With every parameter random (the zero-initialised convolutions included), the map depends on x and on z.
    g, params = nnx.split(m)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    m = nnx.merge(g, jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)]))
    a, b = np.asarray(m(x, z1)), np.asarray(m(x, z2))
    assert a.shape == x.shape
    assert np.abs(a - np.asarray(x)).max() > 1e-3
    assert np.abs(a - b).max() > 1e-4
    np.testing.assert_array_equal(np.asarray(m(x)), a)  # z defaults to 0
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        m(x, jnp.zeros((4, 2)))


def test_conv_potential_is_one_scalar_per_image_and_depends_on_time():
    V = image_ot.ConvPotential((16, 16, 1), channels=8, channel_mult=(1, 2, 2), num_groups=4, rngs=nnx.Rngs(0))
    x = _x(5)
    a = np.asarray(V(jnp.full((5,), 0.2), x))
    b = np.asarray(V(jnp.full((5,), 0.7), x))
    assert a.shape == (5,)
    assert np.abs(a - b).max() > 1e-5
    # Per-example: one image's value does not depend on the others in the batch.
    np.testing.assert_allclose(np.asarray(V(jnp.full((1,), 0.2), x[2:3])), a[2:3], rtol=1e-5, atol=1e-6)
    # Smooth in (t, x): the HJB residual's derivatives exist and are finite.
    from jot.losses import hjb_residual

    r = hjb_residual(lambda t, z: V(t, z), jnp.full((5,), 0.3), x, scale=0.01)
    assert r.shape == (5,) and np.all(np.isfinite(np.asarray(r)))
    v = image_ot.ConvPotential((16, 16, 1), channels=8, channel_mult=(1, 2), time_conditioned=False, num_groups=4,
                               rngs=nnx.Rngs(0))
    assert v(x).shape == (5,)
    with pytest.raises(TypeError, match="V\\(t, x\\)"):
        V(x)
    with pytest.raises(ValueError, match="square NHWC"):
        image_ot.ConvPotential((16, 8, 1), channels=8, rngs=nnx.Rngs(0))


def test_inner_updates_equal_a_scan():
    def body(c, x):
        c = c * 0.5 + jnp.sum(x)
        return c, {"c": c, "x2": x * 2}

    xs = jnp.arange(12.0).reshape(3, 4)
    want_c, want = jax.lax.scan(body, jnp.float32(1.0), xs)
    got_c, got = _common.inner_updates(body, jnp.float32(1.0), xs)
    np.testing.assert_allclose(got_c, want_c)
    for k in want:
        np.testing.assert_allclose(got[k], want[k])


def test_point_networks_refuse_images_with_the_fix():
    c = diotm_images.get_config("test")
    c.model.kind = "mlp"
    with pytest.raises(UserError, match="model.kind=unet"):
        _common.init_network(c, "T", (16, 16, 1), jax.random.PRNGKey(0))
    c.model.kind = "conv"
    with pytest.raises(UserError, match="'mlp'.*'unet'"):
        _common.init_network(c, "T", (16, 16, 1), jax.random.PRNGKey(0))


@pytest.mark.parametrize("config_module", [diotm_images, otm_images], ids=["diotm", "otm"])
def test_image_maps_train_and_evaluate_on_digits(tmp_path, config_module):
    c = config_module.get_config("test")
    c.mesh.data = 1
    workdir = str(tmp_path / "run")
    state = loop.train(c, workdir)
    assert int(state.step) == c.train.steps
    m = __import__("json").load(open(os.path.join(workdir, "metrics.json")))
    data = np.load(os.path.join(workdir, "transport.npz"))
    x, tx, y = data["x"], data["Tx"], data["y"]
    assert x.shape == tx.shape == y.shape == (361, 16, 16, 1)
    # The metrics are those of the arrays written beside them.
    np.testing.assert_allclose(m["cost"], np.mean((tx - x) ** 2), rtol=1e-5)
    from jot.metrics import image

    np.testing.assert_allclose(m["psnr"], image.psnr(np.clip(tx, -1, 1), y).mean(), rtol=1e-6)
    assert ("psnr_backward" in m) == (c.method == "diotm")
    assert 0 < m["frechet_source"] < 50
    png = Image.open(os.path.join(workdir, "transport.png"))
    rows = 4 if c.method == "diotm" else 3
    assert png.size == (16 * 16, rows * 16)


def test_image_fid_protocol_samples_every_source_k_times(monkeypatch):
    """``eval.fid_samples_per_source`` maps each test source k times with fresh noise, clipped,
    against the reference ``y``; a deterministic map once."""
    from jot.metrics import fid

    seen = {}

    class Recorder:
        def __init__(self, weights, *, batch_size):
            seen["weights"], seen["batch_size"] = weights, batch_size

        def __call__(self, a, b):
            seen["a"], seen["b"] = a, b
            return {"fid": 1.0, "kid": 0.0, "kid_std": 0.0}

    monkeypatch.setattr(fid, "FID", Recorder)
    c = diotm_images.get_config("test")
    c.model.noise_dim = 2
    c.eval.fid_weights = "w.safetensors"
    c.eval.fid_samples_per_source = 3
    x, y = np.asarray(_x(5)), np.asarray(_x(7, seed=1))

    def transport(config, state, u, rng):  # a "map" that adds 2 z_0 (exceeds [-1, 1] so clipping shows)
        return u + 2.0 * _common.noise(config, rng, u.shape[0])[:, :1, None, None]

    rng = jax.random.PRNGKey(3)
    tx = _ot_eval.apply_in_chunks(lambda s, u, r: transport(c, s, u, r), None, x, rng, 4)
    out = _ot_eval.inception_scores(c, None, x, y, tx, transport, rng, 4)
    assert seen["weights"] == "w.safetensors" and out["fid_samples"] == 15 and out["fid_reference"] == 7
    a = seen["a"]
    assert a.shape == (15, 16, 16, 1) and a.min() >= -1 and a.max() <= 1
    np.testing.assert_array_equal(a[:5], np.clip(tx, -1, 1))
    assert np.abs(a[5:10] - a[:5]).max() > 1e-3 and np.abs(a[10:] - a[5:10]).max() > 1e-3
    np.testing.assert_array_equal(seen["b"], y)
    out = _ot_eval.inception_scores(c, None, x, y, tx, transport, None, 4)  # deterministic: one sample
    assert out["fid_samples"] == 5


@pytest.mark.slow
def test_diotm_image_maps_learn_thin_to_thick(tmp_path):
    """200 steps of tiny DIOTM image maps move held-out thin digits most of the way to the thick
    domain (Frechet distance to the twins below a quarter of the sources') and towards their own
    twins (PSNR 4 dB above the untranslated sources'), in both directions."""
    c = diotm_images.get_config("test")
    c.mesh.data = 1
    c.train.steps, c.train.log_every, c.train.checkpoint_every = 200, 100, 200
    c.train.ema = 0.9
    loop.train(c, str(tmp_path / "run"))
    m = __import__("json").load(open(tmp_path / "run" / "metrics.json"))
    from jot.data import digits
    from jot.metrics import image

    sp = digits.split(c.data.size, c.data.thickness, c.data.split_seed)
    source_psnr = float(image.psnr(sp.test_x, sp.test_y).mean())
    assert m["frechet"] < 0.25 * m["frechet_source"], m
    assert m["psnr"] > source_psnr + 4.0, (m, source_psnr)
    assert m["psnr_backward"] > source_psnr + 4.0, (m, source_psnr)
