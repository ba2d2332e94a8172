"""DIOTM: optimal transport maps by displacement interpolation (Choi et al., DIOTM).

Two maps, forward ``T: mu -> nu`` and backward ``S: nu -> mu``, and one time-dependent
value function ``V(t, z)``. McCann interpolants::

    x_t = (1 - t) x + t T(x)            y_t = t y + (1 - t) S(y)

The dual of the displacement-interpolation (barycentre) problem gives (paper Eq. 18)::

    J(V, T, S) = E_t { E_x[ t c(x, T(x)) - V(t, x_t) ] + E_y[ (1 - t) c(y, S(y)) + V(t, y_t) ] }

``V`` maximises ``J``; ``T`` and ``S`` minimise it. At ``t = 1`` the ``x`` half is OTM.
With the HJB regulariser (Eq. 19-20) the value-function loss is::

    L_V = E_{t,x}[ V(t, x_t) ] - E_{t,y}[ V(t, y_t) ] + lambda * R

where ``R`` is one of (``z`` runs over both interpolants ``x_t``, ``y_t`` with their times)::

    "hjb":  E (d_t V(t, z) + ||grad_z V(t, z)||^2 / (4k))^2          (paper Eq. 19)
    "r1":   (1/2) E ||grad_z V(t, z)||^2                            (R1 on the interpolants)
    "otm":  (1/2) (E_y ||grad_y V(1, y)||^2 + E_x ||grad_x V(0, x)||^2)
    "none": 0

``"otm"`` is the OTM-style penalty on real data at the two ends of the path, where ``V(1, .)``
plays OTM's potential for ``T`` and ``-V(0, .)`` the potential for ``S`` (choice: both ends,
the paper's Table 3 formula was lost in the text). Both R1 forms use
``jot.losses.regularizers.r1_regularizer``, the definition OTM uses.
"""
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from jot.losses import _checks, costs
from jot.losses.regularizers import hjb_penalty, r1_regularizer

Map = Callable[[jax.Array], jax.Array]
TimePotential = Callable[[jax.Array, jax.Array], jax.Array]
Regularizer = Literal["hjb", "r1", "otm", "none"]


def _bcast(t: jax.Array, like: jax.Array) -> jax.Array:
    return t.reshape(t.shape + (1,) * (like.ndim - 1))


def interpolate(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
    """McCann interpolant ``(1 - t) a + t b`` with one ``t`` per example (``t`` shape ``[n]``)."""
    _checks.same_shape("a", a, "b", b)
    _checks.times(t, a.shape[0])
    tb = _bcast(t, a)
    return (1.0 - tb) * a + tb * b


def forward_map_loss(
    T: Map, V: TimePotential, x: jax.Array, t: jax.Array, *, tau: float = 1.0, reduce: costs.Reduce = "sum"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L_T = E_{t,x}[ t c(x, T(x)) - V(t, x_t) ]``, ``x_t = (1 - t) x + t T(x)``.

    Returns ``(loss, aux)``; ``aux["x_t"]`` holds the interpolants for the value-function step.
    """
    _checks.batch_matrix("x", x)
    _checks.times(t, x.shape[0])
    tx = T(x)
    _checks.same_shape("x", x, "T(x)", tx)
    xt = interpolate(x, tx, t)
    cost = costs.quadratic(x, tx, tau=tau, reduce=reduce)
    v = V(t, xt)
    _checks.per_example("V(t, x_t)", v, x.shape[0])
    loss = jnp.mean(t * cost - v)
    return loss, {"cost": jnp.mean(cost), "v": jnp.mean(v), "x_t": xt}


def backward_map_loss(
    S: Map, V: TimePotential, y: jax.Array, t: jax.Array, *, tau: float = 1.0, reduce: costs.Reduce = "sum"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L_S = E_{t,y}[ (1 - t) c(y, S(y)) + V(t, y_t) ]``, ``y_t = t y + (1 - t) S(y)``."""
    _checks.batch_matrix("y", y)
    _checks.times(t, y.shape[0])
    sy = S(y)
    _checks.same_shape("y", y, "S(y)", sy)
    yt = interpolate(sy, y, t)
    cost = costs.quadratic(y, sy, tau=tau, reduce=reduce)
    v = V(t, yt)
    _checks.per_example("V(t, y_t)", v, y.shape[0])
    loss = jnp.mean((1.0 - t) * cost + v)
    return loss, {"cost": jnp.mean(cost), "v": jnp.mean(v), "y_t": yt}


def value_loss(
    V: TimePotential,
    t_x: jax.Array,
    x_t: jax.Array,
    t_y: jax.Array,
    y_t: jax.Array,
    *,
    tau: float = 1.0,
    reduce: costs.Reduce = "sum",
    regularizer: Regularizer = "hjb",
    weight: float = 1.0,
    hjb_kind: Literal["square", "abs"] = "square",
    x: jax.Array | None = None,
    y: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L_V = E[ V(t, x_t) ] - E[ V(t, y_t) ] + weight * R`` (minimised over ``V``).

    ``x_t`` and ``y_t`` are the forward and backward interpolants (gradients stopped here)
    with their times ``t_x``, ``t_y``. ``regularizer`` picks ``R`` (see module docstring);
    the HJB residual uses the per-coordinate cost scale ``k`` of ``(tau, reduce)``.
    ``regularizer="otm"`` needs the real samples ``x`` (source) and ``y`` (target).
    """
    _checks.batch_matrix("x_t", x_t)
    _checks.batch_matrix("y_t", y_t)
    _checks.times(t_x, x_t.shape[0])
    _checks.times(t_y, y_t.shape[0])
    x_t, y_t = jax.lax.stop_gradient(x_t), jax.lax.stop_gradient(y_t)
    v_x, v_y = V(t_x, x_t), V(t_y, y_t)
    _checks.per_example("V(t, x_t)", v_x, x_t.shape[0])
    _checks.per_example("V(t, y_t)", v_y, y_t.shape[0])
    loss = jnp.mean(v_x) - jnp.mean(v_y)
    aux = {"v_x": jnp.mean(v_x), "v_y": jnp.mean(v_y)}
    if regularizer == "none":
        return loss, aux
    t_all = jnp.concatenate([t_x, t_y])
    z_all = jnp.concatenate([x_t, y_t])
    if regularizer == "hjb":
        scale = costs.quadratic_scale(tau, x_t.shape[1:], reduce)
        reg = jnp.mean(hjb_penalty(V, t_all, z_all, scale=scale, kind=hjb_kind))
    elif regularizer == "r1":
        reg = r1_regularizer(lambda z: V(t_all, z), z_all)
    elif regularizer == "otm":
        if x is None or y is None:
            raise ValueError("regularizer='otm' penalises V at the real samples: pass x= (source) and y= (target).")
        _checks.batch_matrix("x", x)
        _checks.batch_matrix("y", y)
        ones, zeros = jnp.ones((y.shape[0],), y.dtype), jnp.zeros((x.shape[0],), x.dtype)
        reg = r1_regularizer(lambda z: V(ones, z), y) + r1_regularizer(lambda z: V(zeros, z), x)
    else:
        raise ValueError(f"regularizer must be 'hjb', 'r1', 'otm' or 'none', got {regularizer!r}.")
    aux["reg"] = reg
    return loss + weight * reg, aux
