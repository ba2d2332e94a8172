"""OTM: the semi-dual (max-min) formulation of optimal transport (Rout et al. 2022,
Fan et al. 2022), the baseline of DIOTM::

    sup_v inf_T  E_x[ c(x, T(x)) - v(T(x)) ] + E_y[ v(y) ]

``T`` is the transport map (source to target) and ``v`` the potential (discriminator).
"""
from typing import Callable

import jax
import jax.numpy as jnp

from jot.losses import _checks, costs
from jot.losses.regularizers import r1_regularizer

Map = Callable[[jax.Array], jax.Array]
Potential = Callable[[jax.Array], jax.Array]


def map_loss(
    T: Map, v: Potential, x: jax.Array, *, tau: float = 1.0, reduce: costs.Reduce = "sum"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Map loss ``L_T = E_x[ c(x, T(x)) - v(T(x)) ]`` (minimised over ``T``).

    Returns ``(loss, aux)`` with ``aux = {"cost": E c(x, T(x)), "v_fake": E v(T(x))}``.
    """
    _checks.batch_matrix("x", x)
    tx = T(x)
    _checks.same_shape("x", x, "T(x)", tx)
    cost = costs.quadratic(x, tx, tau=tau, reduce=reduce)
    v_fake = v(tx)
    _checks.per_example("v(T(x))", v_fake, x.shape[0])
    loss = jnp.mean(cost - v_fake)
    return loss, {"cost": jnp.mean(cost), "v_fake": jnp.mean(v_fake)}


def potential_loss(
    v: Potential, tx: jax.Array, y: jax.Array, *, r1_weight: float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Potential loss ``L_v = E_x[ v(T(x)) ] - E_y[ v(y) ] + r1_weight * R1(v; y)``, with
    ``R1(v; y) = (1/2) E_y ||grad_y v(y)||^2`` (``jot.losses.regularizers.r1_regularizer``).

    ``tx`` are the transported source points ``T(x)``, treated as data (gradients are
    stopped). Minimised over ``v``. Returns ``(loss, aux)``.
    """
    _checks.batch_matrix("tx", tx)
    _checks.batch_matrix("y", y)
    if jnp.shape(tx)[1:] != jnp.shape(y)[1:]:
        raise ValueError(
            f"T(x) and y must be points of the same shape, got {jnp.shape(tx)[1:]} and {jnp.shape(y)[1:]}."
        )
    v_fake = v(jax.lax.stop_gradient(tx))
    v_real = v(y)
    _checks.per_example("v(T(x))", v_fake, tx.shape[0])
    _checks.per_example("v(y)", v_real, y.shape[0])
    loss = jnp.mean(v_fake) - jnp.mean(v_real)
    aux = {"v_fake": jnp.mean(v_fake), "v_real": jnp.mean(v_real)}
    if r1_weight:
        r1 = r1_regularizer(v, y)
        loss = loss + r1_weight * r1
        aux["r1"] = r1
    return loss, aux
