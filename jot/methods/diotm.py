"""DIOTM: displacement-interpolation OT maps with the HJB regulariser (``jot.losses.displacement``).

Networks: forward map ``T``, backward map ``S`` (``jot.models.mlp.ResidualMap``) and the
time-dependent value function ``V`` (``jot.models.mlp.TimePotential``). One train step is
``loss.k_t`` updates of ``T`` and ``S`` (a ``lax.scan`` over ``k_t`` fresh batches) followed by
one update of ``V`` on interpolants of the updated maps (Algorithm 1 of the paper).
"""
import jax
import jax.numpy as jnp
import ml_collections

from jot import losses
from jot.methods import _common, _ot_eval
from jot.methods._common import State

MAPS = ("T", "S")


def batches_per_step(config: ml_collections.ConfigDict) -> int:
    return int(config.loss.k_t)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
    dim = _common.stacked(batch, "x").shape[-1]
    keys = jax.random.split(rng, 4)
    params = {n: _common.init_params(config, n, dim, k) for n, k in zip(("T", "S", "V"), keys[:3])}
    lrs = {"T": config.train.lr_map, "S": config.train.lr_map, "V": config.train.lr_potential}
    opt_state = {n: _common.optimizer(config, lrs[n]).init(p) for n, p in params.items()}
    ema = {n: params[n] for n in MAPS} if config.train.ema else {}
    return State(step=jnp.zeros((), jnp.int32), rng=keys[3], params=params, opt_state=opt_state, ema=ema)


def _callables(config, dim, params, z_x=None, z_y=None):
    T = _common.module(config, "T", dim, params["T"])
    S = _common.module(config, "S", dim, params["S"])
    V = _common.module(config, "V", dim, params["V"])
    return (lambda x: T(x, z_x)), (lambda y: S(y, z_y)), V


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    xs, ys = _common.stacked(batch, "x"), _common.stacked(batch, "y")
    k, n, dim = xs.shape
    lc = config.loss
    cost = dict(tau=lc.tau, reduce=lc.cost_reduce)
    opt_map = _common.optimizer(config, config.train.lr_map)
    opt_v = _common.optimizer(config, config.train.lr_potential)
    rng = jax.random.fold_in(state.rng, state.step)
    map_keys = jax.random.split(rng, k + 1)

    def map_update(carry, inputs):
        params, opt_state = carry
        x, y, key = inputs
        kt, ks, kzx, kzy = jax.random.split(key, 4)
        t_x, t_y = _common.sample_times(config, kt, n), _common.sample_times(config, ks, n)
        z_x, z_y = _common.noise(config, kzx, n), _common.noise(config, kzy, n)
        V = _common.module(config, "V", dim, params["V"])

        def loss_T(p):
            T = _common.module(config, "T", dim, p)
            return losses.forward_map_loss(lambda u: T(u, z_x), V, x, t_x, **cost)

        def loss_S(p):
            S = _common.module(config, "S", dim, p)
            return losses.backward_map_loss(lambda u: S(u, z_y), V, y, t_y, **cost)

        (lt, aux_t), g_t = jax.value_and_grad(loss_T, has_aux=True)(params["T"])
        (ls, aux_s), g_s = jax.value_and_grad(loss_S, has_aux=True)(params["S"])
        new_t, os_t = _common.apply_grads(opt_map, params["T"], opt_state["T"], g_t)
        new_s, os_s = _common.apply_grads(opt_map, params["S"], opt_state["S"], g_s)
        params = {**params, "T": new_t, "S": new_s}
        opt_state = {**opt_state, "T": os_t, "S": os_s}
        return (params, opt_state), {"loss_T": lt, "loss_S": ls, "cost_T": aux_t["cost"], "cost_S": aux_s["cost"]}

    (params, opt_state), map_metrics = jax.lax.scan(
        map_update, (state.params, state.opt_state), (xs, ys, map_keys[:k])
    )

    # Value-function step on interpolants of the updated maps (last batch of the stack).
    kt, ks, kzx, kzy = jax.random.split(map_keys[k], 4)
    x, y = xs[-1], ys[-1]
    t_x, t_y = _common.sample_times(config, kt, n), _common.sample_times(config, ks, n)
    T, S, _ = _callables(config, dim, params, _common.noise(config, kzx, n), _common.noise(config, kzy, n))
    x_t = losses.interpolate(x, T(x), t_x)
    y_t = losses.interpolate(S(y), y, t_y)

    def loss_V(p):
        V = _common.module(config, "V", dim, p)
        return losses.value_loss(
            V, t_x, x_t, t_y, y_t, **cost, regularizer=lc.regularizer, weight=lc.reg_weight, hjb_kind=lc.hjb_kind
        )

    (lv, aux_v), g_v = jax.value_and_grad(loss_V, has_aux=True)(params["V"])
    new_v, os_v = _common.apply_grads(opt_v, params["V"], opt_state["V"], g_v)
    params = {**params, "V": new_v}
    opt_state = {**opt_state, "V": os_v}
    ema = state.ema
    if config.train.ema:
        ema = {m: _common.ema_update(state.ema[m], params[m], config.train.ema) for m in MAPS}

    metrics = {name: v[-1] for name, v in map_metrics.items()}
    metrics.update(loss_V=lv, v_x=aux_v["v_x"], v_y=aux_v["v_y"], reg=aux_v.get("reg", jnp.zeros(())))
    metrics["loss"] = metrics["loss_T"] + metrics["loss_S"] + lv
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)
    return new_state, metrics


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array) -> jax.Array:
    """Forward map ``T(x)`` (EMA parameters when kept; auxiliary noise set to zero)."""
    return _common.module(config, "T", x.shape[-1], _common.map_params(config, state, "T"))(x)


def transport_backward(config: ml_collections.ConfigDict, state: State, y: jax.Array) -> jax.Array:
    """Backward map ``S(y)``."""
    return _common.module(config, "S", y.shape[-1], _common.map_params(config, state, "S"))(y)


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    return _ot_eval.evaluate(config, state, data, workdir, transport, transport_backward)
