"""Semi-discrete OT onto a finite target set by stochastic semi-dual ascent (Genevay et al. 2016).

Target points ``y_1..y_m`` with uniform weights ``b_j = 1/m``, a source measure given by
samples (drawn with replacement, ``batch`` per step). With the per-coordinate quadratic cost
``c(x, y) = ||x - y||^2 / d`` (``d`` the dimension, so step sizes do not depend on it), the
semi-dual of OT is

    max_g  F(g) = E_x[ min_j (c(x, y_j) - g_j) ] + sum_j b_j g_j,

a concave function whose gradient is ``b_j - P_x(j = argmin_k c(x, y_k) - g_k)``: the weights
``g`` are raised on under-served targets until every Laguerre cell receives mass ``b_j``. With
``epsilon > 0`` the ``min`` is replaced by the soft-min ``-eps log sum_j exp((g_j - c)/eps)``.
The map sends ``x`` to the target of its cell, ``T(x) = y_{argmax_j (g_j - c(x, y_j))}``
(soft: the softmax-weighted average). Each fit is one jitted ``lax.scan`` of Adam steps.
"""
from __future__ import annotations

from functools import partial

import flax.struct
import jax
import jax.numpy as jnp
import optax


def _cost(x: jax.Array, y: jax.Array) -> jax.Array:
    """``[n, m]`` costs ``||x_i - y_j||^2 / d``."""
    d = x.shape[-1]
    return (jnp.sum(x * x, 1)[:, None] + jnp.sum(y * y, 1)[None, :] - 2.0 * x @ y.T) / d


@flax.struct.dataclass
class SemidiscreteMap:
    """``T(x)`` onto the target points ``y`` (``[m, d]``) with dual weights ``g`` (``[m]``)."""

    y: jax.Array
    g: jax.Array
    epsilon: float = flax.struct.field(pytree_node=False, default=0.0)

    def assign(self, x: jax.Array) -> jax.Array:
        """Index of each point's Laguerre cell, ``argmax_j g_j - c(x, y_j)``."""
        return jnp.argmax(self.g[None, :] - _cost(x, self.y), axis=1)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 2 or x.shape[1] != self.y.shape[1]:
            raise ValueError(f"expected points of shape [n, {self.y.shape[1]}], got {x.shape}.")
        if self.epsilon > 0:
            w = jax.nn.softmax((self.g[None, :] - _cost(x, self.y)) / self.epsilon, axis=1)
            return w @ self.y
        return self.y[self.assign(x)]


@partial(jax.jit, static_argnames=("steps", "batch", "epsilon"))
def _ascent(x, y, rng, lr, *, steps, batch, epsilon):
    opt = optax.adam(lr)
    g = jnp.zeros(y.shape[0], y.dtype)

    def neg_semi_dual(g, xb):
        scores = g[None, :] - _cost(xb, y)
        smin = epsilon * jax.nn.logsumexp(scores / epsilon, axis=1) if epsilon > 0 else jnp.max(scores, axis=1)
        return jnp.mean(smin) - jnp.mean(g)

    def body(carry, key):
        g, opt_state = carry
        xb = x[jax.random.randint(key, (batch,), 0, x.shape[0])]
        loss, grad = jax.value_and_grad(neg_semi_dual)(g, xb)
        updates, opt_state = opt.update(grad, opt_state)
        return (optax.apply_updates(g, updates), opt_state), loss

    (g, _), losses = jax.lax.scan(body, (g, opt.init(g)), jax.random.split(rng, steps))
    return g, losses


def fit(
    x: jax.Array,
    y: jax.Array,
    rng: jax.Array,
    *,
    steps: int = 2000,
    batch: int = 256,
    lr: float = 1e-2,
    epsilon: float = 0.0,
) -> SemidiscreteMap:
    """Fits the semi-discrete map from source samples ``x`` (``[n, d]``) onto targets ``y`` (``[m, d]``).

    Returns a ``SemidiscreteMap`` (a pytree: pass it to jitted code). ``lr`` is Adam's step on ``g``
    in units of the per-coordinate cost.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [n, d] and [m, d] with the same d; got {x.shape} and {y.shape}.")
    if steps < 1 or batch < 1:
        raise ValueError(f"steps={steps} and batch={batch} must both be >= 1.")
    g, _ = _ascent(x, y, rng, lr, steps=steps, batch=batch, epsilon=epsilon)
    return SemidiscreteMap(y=y, g=g, epsilon=epsilon)
