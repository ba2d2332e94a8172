"""OTM: the semi-dual OT map baseline (``jot.losses.semi_dual``; Rout et al. 2022, Fan et al. 2022).

Networks: map ``T`` (``ResidualMap``) and potential ``v`` (``Potential``). One train step, with
every update on its own fresh batch (the same data flow as DIOTM's Algorithm 1):

1. one potential update on fresh ``x`` (batch 0) and ``y`` with ``T(x)`` of the current map,
   optional R1 (``loss.regularizer="r1"``, weight ``loss.reg_weight``,
   ``jot.losses.regularizers.r1_regularizer``);
2. ``loss.k_t`` map updates (``_common.inner_updates`` over source batches ``1..k_t``).

A step consumes ``k_t + 1`` source batches and one target batch. The map optimiser decays
over ``k_t * train.steps`` updates, the potential's over ``train.steps``.
"""
import jax
import jax.numpy as jnp
import ml_collections

from jot import losses
from jot.methods import _common, _ot_eval
from jot.methods._common import State

REGULARIZERS = ("r1", "none")


def check_config(config: ml_collections.ConfigDict) -> None:
    _common.check_config(config, REGULARIZERS)


def batches_per_step(config: ml_collections.ConfigDict) -> dict[str, int]:
    return {"x": _common.k_t(config) + 1, "y": 1}


def _optimizer(config: ml_collections.ConfigDict, name: str):
    if name == "v":
        return _common.optimizer(config, config.train.lr_potential)
    return _common.optimizer(config, config.train.lr_map, updates_per_step=_common.k_t(config))


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
    shape = _common.stacked(batch, "x").shape[2:]
    keys = jax.random.split(rng, 3)
    nets = {name: _common.init_network(config, name, shape, key) for name, key in zip(("T", "v"), keys[:2])}
    params = {name: p for name, (_, p) in nets.items()}
    opt_state = {name: _optimizer(config, name).init(p) for name, p in params.items()}
    ema = {"T": params["T"]} if config.train.ema else {}
    return State(step=jnp.zeros((), jnp.int32), rng=keys[2], params=params, opt_state=opt_state, ema=ema,
                 graphdefs=_common.graphdefs({name: g for name, (g, _) in nets.items()}))


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    counts = batches_per_step(config)
    xs, ys = _common.stacked(batch, "x", counts["x"]), _common.stacked(batch, "y", counts["y"])
    n = xs.shape[1]
    k = _common.k_t(config)
    lc = config.loss
    opt_map, opt_v = _optimizer(config, "T"), _optimizer(config, "v")
    rng = jax.random.fold_in(state.rng, state.step)
    keys = jax.random.split(rng, k + 1)

    # 1. Potential step on fresh x (batch 0) and y, mapped by the current T.
    x, y = xs[0], ys[0]
    tx = _common.module(state, "T", state.params["T"])(x, _common.noise(config, keys[0], n))
    r1 = lc.reg_weight if lc.regularizer == "r1" else 0.0

    def loss_v(p):
        return losses.potential_loss(_common.module(state, "v", p), tx, y, r1_weight=r1)

    (lv, aux_v), g_v = jax.value_and_grad(loss_v, has_aux=True)(state.params["v"])
    p_v, os_v = _common.apply_grads(opt_v, state.params["v"], state.opt_state["v"], g_v)
    v = _common.module(state, "v", p_v)

    # 2. k_t map steps on fresh source batches 1..k_t against the updated potential.
    def map_update(carry, inputs):
        p_t, os_t = carry
        x, key = inputs
        z = _common.noise(config, key, n)

        def loss_T(p):
            T = _common.module(state, "T", p)
            return losses.map_loss(lambda u: T(u, z), v, x, tau=lc.tau, reduce=lc.cost_reduce)

        (lt, aux), g = jax.value_and_grad(loss_T, has_aux=True)(p_t)
        p_t, os_t = _common.apply_grads(opt_map, p_t, os_t, g)
        return (p_t, os_t), {"loss_T": lt, "cost_T": aux["cost"]}

    (p_t, os_t), map_metrics = _common.inner_updates(map_update, (state.params["T"], state.opt_state["T"]), (xs[1:], keys[1:]))
    ema = state.ema
    if config.train.ema:
        ema = {"T": _common.ema_update(state.ema["T"], p_t, config.train.ema)}
    metrics = {name: m[-1] for name, m in map_metrics.items()}
    metrics.update(loss_v=lv, v_fake=aux_v["v_fake"], v_real=aux_v["v_real"])
    if "r1" in aux_v:
        metrics["reg"] = aux_v["r1"]
    metrics["loss"] = metrics["loss_T"] + lv
    new_state = state.replace(
        step=state.step + 1, params={"T": p_t, "v": p_v}, opt_state={"T": os_t, "v": os_v}, ema=ema
    )
    return new_state, metrics


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Map ``T(x, z)`` (EMA parameters when kept; ``z ~ N(0, I)`` from ``rng``, or 0)."""
    return _common.apply_map(config, state, "T", x, rng)


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    return _ot_eval.evaluate(config, state, data, workdir, transport, None)
