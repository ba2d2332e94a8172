"""Pixel UNet and the dsm method: shapes, conditioning, errors, and the loss at init/after steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dsm_digits
from jot.methods import dsm
from jot.models.unet import EpsModel, UNet


def _unet(num_classes=2):
    return UNet(in_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                image_size=16, num_classes=num_classes, num_heads=2, num_groups=4, rngs=nnx.Rngs(0))


def test_unet_shape_zero_init_and_label_conditioning():
    model = _unet()
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 1))
    s, c0 = jnp.array([0.0, 10.5, 99.0]), jnp.zeros(3, jnp.int32)
    out = model(x, s, c0)
    assert out.shape == x.shape and float(jnp.max(jnp.abs(out))) == 0.0  # zero-initialised output conv
    graphdef, params = nnx.split(model)
    leaves, treedef = jax.tree.flatten(params)  # perturb the zero-initialised layers
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(treedef, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    eps = jax.jit(lambda p, x, s, c: EpsModel(graphdef, p)(x, s, c))
    a, b = eps(params, x, s, c0), eps(params, x, s, jnp.ones(3, jnp.int32))
    assert float(jnp.mean(jnp.abs(a - b))) > 1e-3  # the domain label changes the prediction
    fixed = jax.jit(lambda p, x, s: EpsModel(graphdef, p, label=1)(x, s, None))(params, x, s)
    np.testing.assert_allclose(np.asarray(fixed), np.asarray(b), rtol=1e-5, atol=1e-6)
    t2 = eps(params, x, s + 1.0, c0)
    assert float(jnp.mean(jnp.abs(a - t2))) > 1e-4  # ... and so does the step


def test_unet_input_errors_name_the_problem():
    model = _unet()
    with pytest.raises(ValueError, match=r"1 channels; got shape \(2, 16, 16, 3\)"):
        model(jnp.zeros((2, 16, 16, 3)), jnp.zeros(2), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match=r"cond is missing but the UNet has num_classes=2"):
        model(jnp.zeros((2, 16, 16, 1)), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"image_size=10 is not divisible by 2\^2"):
        UNet(in_channels=1, channels=8, channel_mult=(1, 2, 2), image_size=10, rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_dsm_initial_loss_is_noise_energy_and_training_lowers_it():
    config = dsm_digits.get_config("test")
    config.train.lr = 3e-3
    rng = np.random.default_rng(0)
    batch = {"x": rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32),
             "y": rng.uniform(-1, 1, (8, 16, 16, 1)).astype(np.float32)}
    state = jax.jit(lambda r, b: dsm.init(config, r, b))(jax.random.PRNGKey(0), batch)
    step = jax.jit(lambda s, b: dsm.train_step(config, s, b))
    state, m0 = step(state, batch)
    # Zero-initialised output: the first loss is exactly mean(eps^2) for the step's noise.
    k_eps = jax.random.split(jax.random.fold_in(state.rng, 0))[1]
    noise = jax.random.normal(k_eps, (16, 16, 16, 1))
    np.testing.assert_allclose(float(m0["loss"]), float(jnp.mean(noise**2)), rtol=1e-5)
    losses = []
    for _ in range(40):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert np.mean(losses[-10:]) < 0.6 * float(m0["loss"]), losses
    state2, _ = step(state, batch)  # ema <- 0.999 ema + 0.001 params (the new params)
    expected = jax.tree.map(lambda e, p: 0.999 * e + 0.001 * p, state.ema["eps"], state2.params["eps"])
    for got, want in zip(jax.tree.leaves(state2.ema["eps"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
