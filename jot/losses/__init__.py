"""Pure loss functions: callables and arrays in, ``(scalar, aux dict)`` out.

No Flax, no optax, no globals: close the callables over your parameters and take
``jax.grad(..., has_aux=True)``. Each docstring states the formula it implements.

    from jot import losses
    loss, aux = losses.semi_dual.map_loss(T, v, x, tau=0.1)
"""
from jot.losses import costs, denoising, dmd, displacement, regularizers, semi_dual
from jot.losses.costs import quadratic, quadratic_scale
from jot.losses.denoising import epsilon_loss, velocity_loss
from jot.losses.dmd import dmd_direction, dmd_surrogate, fake_loss, generator_loss, rdmd_loss, x0_prediction
from jot.losses.displacement import backward_map_loss, forward_map_loss, interpolate, value_loss
from jot.losses.regularizers import hjb_penalty, hjb_residual, r1_penalty, r1_regularizer
from jot.losses.semi_dual import map_loss, potential_loss

__all__ = [
    "backward_map_loss",
    "costs",
    "denoising",
    "displacement",
    "dmd",
    "dmd_direction",
    "dmd_surrogate",
    "epsilon_loss",
    "fake_loss",
    "forward_map_loss",
    "generator_loss",
    "hjb_penalty",
    "hjb_residual",
    "interpolate",
    "map_loss",
    "potential_loss",
    "quadratic",
    "quadratic_scale",
    "r1_penalty",
    "r1_regularizer",
    "rdmd_loss",
    "regularizers",
    "semi_dual",
    "value_loss",
    "velocity_loss",
    "x0_prediction",
]
