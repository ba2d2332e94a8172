"""OTM: the semi-dual OT map baseline (``jot.losses.semi_dual``; Rout et al. 2022, Fan et al. 2022).

Networks: map ``T`` (``ResidualMap``) and potential ``v`` (``Potential``). One train step is
``loss.k_t`` map updates (a ``lax.scan`` over ``k_t`` fresh source batches) and one potential
update with optional R1 (``loss.regularizer="r1"``, weight ``loss.reg_weight``).
"""
import jax
import jax.numpy as jnp
import ml_collections

from jot import losses
from jot.methods import _common, _ot_eval
from jot.methods._common import State


def batches_per_step(config: ml_collections.ConfigDict) -> int:
    return int(config.loss.k_t)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
    dim = _common.stacked(batch, "x").shape[-1]
    keys = jax.random.split(rng, 3)
    params = {"T": _common.init_params(config, "T", dim, keys[0]), "v": _common.init_params(config, "v", dim, keys[1])}
    opt_state = {
        "T": _common.optimizer(config, config.train.lr_map).init(params["T"]),
        "v": _common.optimizer(config, config.train.lr_potential).init(params["v"]),
    }
    ema = {"T": params["T"]} if config.train.ema else {}
    return State(step=jnp.zeros((), jnp.int32), rng=keys[2], params=params, opt_state=opt_state, ema=ema)


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    xs, ys = _common.stacked(batch, "x"), _common.stacked(batch, "y")
    k, n, dim = xs.shape
    lc = config.loss
    if lc.regularizer not in ("r1", "none"):
        raise ValueError(f"OTM supports loss.regularizer 'r1' or 'none', got {lc.regularizer!r}.")
    opt_map = _common.optimizer(config, config.train.lr_map)
    opt_v = _common.optimizer(config, config.train.lr_potential)
    rng = jax.random.fold_in(state.rng, state.step)
    keys = jax.random.split(rng, k + 1)
    v = _common.module(config, "v", dim, state.params["v"])

    def map_update(carry, inputs):
        p_t, os_t = carry
        x, key = inputs
        z = _common.noise(config, key, n)

        def loss_T(p):
            T = _common.module(config, "T", dim, p)
            return losses.map_loss(lambda u: T(u, z), v, x, tau=lc.tau, reduce=lc.cost_reduce)

        (lt, aux), g = jax.value_and_grad(loss_T, has_aux=True)(p_t)
        p_t, os_t = _common.apply_grads(opt_map, p_t, os_t, g)
        return (p_t, os_t), {"loss_T": lt, "cost_T": aux["cost"]}

    (p_t, os_t), map_metrics = jax.lax.scan(map_update, (state.params["T"], state.opt_state["T"]), (xs, keys[:k]))

    x, y = xs[-1], ys[-1]
    tx = _common.module(config, "T", dim, p_t)(x, _common.noise(config, keys[k], n))
    r1 = lc.reg_weight if lc.regularizer == "r1" else 0.0

    def loss_v(p):
        return losses.potential_loss(_common.module(config, "v", dim, p), tx, y, r1_weight=r1)

    (lv, aux_v), g_v = jax.value_and_grad(loss_v, has_aux=True)(state.params["v"])
    p_v, os_v = _common.apply_grads(opt_v, state.params["v"], state.opt_state["v"], g_v)
    ema = state.ema
    if config.train.ema:
        ema = {"T": _common.ema_update(state.ema["T"], p_t, config.train.ema)}
    metrics = {name: m[-1] for name, m in map_metrics.items()}
    metrics.update(loss_v=lv, v_fake=aux_v["v_fake"], v_real=aux_v["v_real"])
    metrics["loss"] = metrics["loss_T"] + lv
    new_state = state.replace(
        step=state.step + 1, params={"T": p_t, "v": p_v}, opt_state={"T": os_t, "v": os_v}, ema=ema
    )
    return new_state, metrics


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array) -> jax.Array:
    """Map ``T(x)`` (EMA parameters when kept; auxiliary noise set to zero)."""
    return _common.module(config, "T", x.shape[-1], _common.map_params(config, state, "T"))(x)


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    return _ot_eval.evaluate(config, state, data, workdir, transport, None)
