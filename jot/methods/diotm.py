"""DIOTM: displacement-interpolation OT maps with the HJB regulariser (``jot.losses.displacement``).

Networks: forward map ``T``, backward map ``S`` (``jot.models.mlp.ResidualMap``) and the
time-dependent value function ``V`` (``jot.models.mlp.TimePotential``).

One train step follows Algorithm 1 of the paper, every update on its own fresh batch:

1. draw ``x, y, t`` (batch 0 of the step) and the interpolants ``x_t``, ``y_t`` of the current
   maps; update ``V`` on ``L_V + lambda R`` (line 4: the regulariser);
2. ``loss.k_t`` times (``_common.inner_updates`` over batches ``1..k_t``): draw fresh ``x, y, t`` and
   update ``T`` and ``S`` against the updated ``V``.

So a step consumes ``k_t + 1`` source and ``k_t + 1`` target batches (``batches_per_step``).
The map optimisers decay over ``k_t * train.steps`` updates, ``V``'s over ``train.steps``.
With ``model.noise_dim > 0`` the maps take auxiliary noise ``z ~ N(0, I)`` in training and at
test time (``transport(..., rng)``; ``rng=None`` gives ``z = 0``).
"""
import jax
import jax.numpy as jnp
import ml_collections

from jot import losses
from jot.methods import _common, _ot_eval
from jot.methods._common import State

MAPS = ("T", "S")
REGULARIZERS = ("hjb", "r1", "otm", "none")


def check_config(config: ml_collections.ConfigDict) -> None:
    _common.check_config(config, REGULARIZERS)


def batches_per_step(config: ml_collections.ConfigDict) -> dict[str, int]:
    k = _common.k_t(config)
    return {"x": k + 1, "y": k + 1}


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
    shape = _common.stacked(batch, "x").shape[2:]
    keys = jax.random.split(rng, 4)
    nets = {n: _common.init_network(config, n, shape, k) for n, k in zip(("T", "S", "V"), keys[:3])}
    params = {n: p for n, (_, p) in nets.items()}
    opt_state = {n: _optimizer(config, n).init(p) for n, p in params.items()}
    ema = {n: params[n] for n in MAPS} if config.train.ema else {}
    return State(step=jnp.zeros((), jnp.int32), rng=keys[3], params=params, opt_state=opt_state, ema=ema,
                 graphdefs=_common.graphdefs({n: g for n, (g, _) in nets.items()}))


def _optimizer(config: ml_collections.ConfigDict, name: str):
    if name == "V":
        return _common.optimizer(config, config.train.lr_potential)
    return _common.optimizer(config, config.train.lr_map, updates_per_step=_common.k_t(config))


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    counts = batches_per_step(config)
    xs, ys = _common.stacked(batch, "x", counts["x"]), _common.stacked(batch, "y", counts["y"])
    n = xs.shape[1]
    k = _common.k_t(config)
    lc = config.loss
    cost = dict(tau=lc.tau, reduce=lc.cost_reduce)
    opt_map, opt_v = _optimizer(config, "T"), _optimizer(config, "V")
    rng = jax.random.fold_in(state.rng, state.step)
    keys = jax.random.split(rng, k + 1)

    def draws(key):
        kt, ks, kzx, kzy = jax.random.split(key, 4)
        return (_common.sample_times(config, kt, n), _common.sample_times(config, ks, n),
                _common.noise(config, kzx, n), _common.noise(config, kzy, n))

    # 1. Value-function step on batch 0 and the interpolants of the current maps.
    params, opt_state = state.params, state.opt_state
    x, y = xs[0], ys[0]
    t_x, t_y, z_x, z_y = draws(keys[0])
    T = _common.module(state, "T", params["T"])
    S = _common.module(state, "S", params["S"])
    x_t = losses.interpolate(x, T(x, z_x), t_x)
    y_t = losses.interpolate(S(y, z_y), y, t_y)

    def loss_V(p):
        V = _common.module(state, "V", p)
        return losses.value_loss(V, t_x, x_t, t_y, y_t, **cost, regularizer=lc.regularizer, weight=lc.reg_weight,
                                 hjb_kind=lc.hjb_kind, x=x, y=y)

    (lv, aux_v), g_v = jax.value_and_grad(loss_V, has_aux=True)(params["V"])
    new_v, os_v = _common.apply_grads(opt_v, params["V"], opt_state["V"], g_v)
    params, opt_state = {**params, "V": new_v}, {**opt_state, "V": os_v}
    V = _common.module(state, "V", new_v)

    # 2. k_t map steps on fresh batches 1..k_t against the updated value function.
    def map_update(carry, inputs):
        p_maps, os_maps = carry
        x, y, key = inputs
        t_x, t_y, z_x, z_y = draws(key)

        def loss_T(p):
            T = _common.module(state, "T", p)
            return losses.forward_map_loss(lambda u: T(u, z_x), V, x, t_x, **cost)

        def loss_S(p):
            S = _common.module(state, "S", p)
            return losses.backward_map_loss(lambda u: S(u, z_y), V, y, t_y, **cost)

        (lt, aux_t), g_t = jax.value_and_grad(loss_T, has_aux=True)(p_maps["T"])
        (ls, aux_s), g_s = jax.value_and_grad(loss_S, has_aux=True)(p_maps["S"])
        new_t, os_t = _common.apply_grads(opt_map, p_maps["T"], os_maps["T"], g_t)
        new_s, os_s = _common.apply_grads(opt_map, p_maps["S"], os_maps["S"], g_s)
        return ({"T": new_t, "S": new_s}, {"T": os_t, "S": os_s}), {
            "loss_T": lt, "loss_S": ls, "cost_T": aux_t["cost"], "cost_S": aux_s["cost"]}

    maps0 = ({m: params[m] for m in MAPS}, {m: opt_state[m] for m in MAPS})
    (p_maps, os_maps), map_metrics = _common.inner_updates(map_update, maps0, (xs[1:], ys[1:], keys[1:]))
    params, opt_state = {**params, **p_maps}, {**opt_state, **os_maps}
    ema = state.ema
    if config.train.ema:
        ema = {m: _common.ema_update(state.ema[m], params[m], config.train.ema) for m in MAPS}

    metrics = {name: v[-1] for name, v in map_metrics.items()}
    metrics.update(loss_V=lv, v_x=aux_v["v_x"], v_y=aux_v["v_y"], reg=aux_v.get("reg", jnp.zeros(())))
    metrics["loss"] = metrics["loss_T"] + metrics["loss_S"] + lv
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)
    return new_state, metrics


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Forward map ``T(x, z)`` (EMA parameters when kept; ``z ~ N(0, I)`` from ``rng``, or 0)."""
    return _common.apply_map(config, state, "T", x, rng)


def transport_backward(config: ml_collections.ConfigDict, state: State, y: jax.Array,
                       rng: jax.Array | None = None) -> jax.Array:
    """Backward map ``S(y, z)``."""
    return _common.apply_map(config, state, "S", y, rng)


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    return _ot_eval.evaluate(config, state, data, workdir, transport, transport_backward)
