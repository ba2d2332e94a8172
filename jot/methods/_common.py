"""Pieces shared by the adversarial OT methods (OTM, DIOTM): networks held as
``(graphdef, params)``, the graph definitions static in the train state, optimisers, EMA,
time sampling and the train-state container."""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct
from flax.core import FrozenDict

from jot.errors import UserError


@struct.dataclass
class State:
    """Train state of a method with several networks.

    ``params``/``opt_state``/``ema`` map a network name (``"T"``, ``"S"``, ``"V"``, ``"v"``)
    to its parameters as a pure nested dict, its optax state, and (maps only) the EMA of
    its parameters. ``rng`` is a raw ``uint32[2]`` key; per-step keys are
    ``fold_in(rng, step)``.

    ``graphdefs`` maps each network name to its ``nnx.GraphDef``, built once by ``init``
    (``init_network``). It is a static field (``pytree_node=False``): not a leaf, so neither
    traced, donated nor checkpointed, but part of the tree structure, where it must be
    hashable and comparable; hence a ``FrozenDict`` (see ``graphdefs``). A restore takes it
    from its target (``jax.eval_shape`` of ``init``). ``module`` merges it with parameters.
    """

    step: jax.Array
    rng: jax.Array
    params: dict
    opt_state: dict
    ema: dict
    graphdefs: FrozenDict = struct.field(pytree_node=False)


def _constructor(config: ml_collections.ConfigDict, name: str, shape: tuple[int, ...]
                 ) -> Callable[[nnx.Rngs], nnx.Module]:
    """The network ``name`` for points of ``shape`` (one example, no batch axis):
    ``config.model.kind = "mlp"`` (points ``(d,)``; ``jot.models.mlp``) or ``"unet"`` (images
    ``(H, W, C)``; ``jot.models.image_ot``: UNet maps, convolutional potentials)."""
    m = config.model
    kind = m.get("kind", "mlp")
    if kind == "unet":
        from jot.models import image_ot

        if name in ("T", "S"):
            return lambda rngs: image_ot.map_from_config(m, shape, rngs)
        if name in ("V", "v"):
            return lambda rngs: image_ot.potential_from_config(m, shape, time_conditioned=name == "V", rngs=rngs)
        raise ValueError(f"unknown network {name!r}")
    if kind != "mlp":
        raise UserError(f"config.model.kind={kind!r}; expected 'mlp' (point clouds) or 'unet' (images).")
    if len(shape) != 1:
        raise UserError(f"config.model.kind='mlp' takes points of shape (d,), but the data gives {tuple(shape)}; "
                        "for images set --config.model.kind=unet (configs/diotm_images.py).")
    from jot.models import mlp

    dim = shape[0]
    if name in ("T", "S"):
        return lambda rngs: mlp.ResidualMap(dim, width=m.width, blocks=m.map_blocks, noise_dim=m.noise_dim, rngs=rngs)
    if name == "V":
        return lambda rngs: mlp.TimePotential(dim, width=m.width, time_dim=m.time_dim, depth=m.potential_depth,
                                              time_scale=m.time_scale, rngs=rngs)
    if name == "v":
        return lambda rngs: mlp.Potential(dim, width=m.width, depth=m.potential_depth, rngs=rngs)
    raise ValueError(f"unknown network {name!r}")


def split(model: nnx.Module) -> tuple[nnx.GraphDef, dict]:
    """``model`` as its static graph definition and its parameters as a pure nested dict."""
    gdef, params = nnx.split(model)
    return gdef, nnx.to_pure_dict(params)


def init_network(config: ml_collections.ConfigDict, name: str, shape: int | tuple[int, ...],
                 rng: jax.Array) -> tuple[nnx.GraphDef, dict]:
    """Network ``name`` for points of ``shape`` (an int ``d`` for ``(d,)``), initialised from
    ``rng``, as ``(graphdef, params)`` (``split``)."""
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    return split(_constructor(config, name, shape)(nnx.Rngs(params=rng)))


def graphdefs(mapping: dict[str, nnx.GraphDef]) -> FrozenDict:
    """The value of ``State.graphdefs``: a hashable mapping from network name to graphdef."""
    return FrozenDict(mapping)


def module(state: State, name: str, params: Any) -> nnx.Module:
    """The network ``name`` of ``state``: its graph definition merged with ``params``
    (``state.params[name]``, the EMA, or parameters being differentiated; inside or outside jit)."""
    return nnx.merge(state.graphdefs[name], params)


def optimizer(config: ml_collections.ConfigDict, lr: float, *, updates_per_step: int = 1) -> optax.GradientTransformation:
    """Adam(b1, b2) with optional global-norm clipping and a constant or cosine schedule.

    The schedule runs over this optimiser's own updates, ``train.steps * updates_per_step``
    (a map updated ``k_t`` times per outer step decays over ``k_t * steps`` updates), so every
    optimiser reaches its final rate at the last outer step.
    """
    t = config.train
    if t.lr_schedule == "constant":
        schedule = lr
    elif t.lr_schedule == "cosine":
        total = max(1, int(t.steps) * int(updates_per_step))
        schedule = optax.cosine_decay_schedule(lr, decay_steps=total, alpha=t.lr_final_fraction)
    else:
        raise UserError(f"config.train.lr_schedule={t.lr_schedule!r}; expected 'constant' or 'cosine'.")
    chain = [optax.adam(schedule, b1=t.b1, b2=t.b2)]
    if t.grad_clip:
        chain.insert(0, optax.clip_by_global_norm(t.grad_clip))
    return optax.chain(*chain)


def apply_grads(tx: optax.GradientTransformation, params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def inner_updates(body: Callable, carry, xs):
    """``jax.lax.scan(body, carry, xs)`` unrolled at trace time: the few inner updates of one
    step (``loss.k_t`` map updates, RDMD's ``k_fake``), each on its slice ``xs[i]``; returns
    ``(carry, stacked outputs)`` as ``scan`` does. XLA's CPU backend runs convolutions inside a
    while loop far slower than outside one (a DIOTM step of ``configs/diotm_images.py:digits``:
    4.9 s with a one-iteration scan against 0.50 s unrolled), and ``k_t`` is small and static."""
    n = jax.tree.leaves(xs)[0].shape[0]
    outs = []
    for i in range(n):
        carry, out = body(carry, jax.tree.map(lambda a: a[i], xs))
        outs.append(out)
    return carry, jax.tree.map(lambda *o: jnp.stack(o), *outs)


def ema_update(ema, params, decay: float):
    """``decay * ema + (1 - decay) * params``, leaf by leaf."""
    return optax.incremental_update(new_tensors=params, old_tensors=ema, step_size=1.0 - decay)


def k_t(config: ml_collections.ConfigDict) -> int:
    """Map updates per potential update, ``loss.k_t`` (>= 1)."""
    k = config.loss.k_t
    if not isinstance(k, int) or k < 1:
        raise UserError(f"config.loss.k_t={k!r}: map updates per potential update must be an integer >= 1.")
    return k


def check_regularizer(config: ml_collections.ConfigDict, allowed: tuple[str, ...]) -> None:
    """``loss.regularizer`` is one of ``allowed`` (the method's), and ``loss.reg_weight >= 0``."""
    reg = config.loss.regularizer
    if reg not in allowed:
        raise UserError(f"config.loss.regularizer={reg!r} is not available for {config.method}; expected one of "
                        f"{list(allowed)} (jot.losses docstrings give each formula).")
    if reg != "none" and not config.loss.reg_weight >= 0:
        raise UserError(f"config.loss.reg_weight={config.loss.reg_weight!r}; the regulariser weight must be >= 0.")


def check_config(config: ml_collections.ConfigDict, regularizers: tuple[str, ...]) -> None:
    """The OT methods' fields: ``loss.k_t``, ``loss.regularizer``/``reg_weight``, the time
    sampler, the schedule and ``eval.map_noise`` (each raises ``UserError`` naming the fix)."""
    k_t(config)
    check_regularizer(config, regularizers)
    sample_times(config, jax.random.PRNGKey(0), 1)
    optimizer(config, 1.0)
    if config.eval.get("map_noise", "sample") not in ("sample", "zero"):
        raise UserError(f"config.eval.map_noise={config.eval.map_noise!r}; expected 'sample' (z ~ N(0, I)) or "
                        "'zero' (z = 0).")


def sample_times(config: ml_collections.ConfigDict, rng: jax.Array, n: int) -> jax.Array:
    """Times ``t`` in [0, 1]: ``uniform`` (paper default) or ``beta`` (``loss.beta_a``, ``loss.beta_b``)."""
    kind = config.loss.time_sampler
    if kind == "uniform":
        return jax.random.uniform(rng, (n,))
    if kind == "beta":
        if not (config.loss.beta_a > 0 and config.loss.beta_b > 0):
            raise UserError(f"config.loss.beta_a={config.loss.beta_a!r}, beta_b={config.loss.beta_b!r}: the Beta "
                            "time sampler needs both > 0 (Beta(1, 1) is uniform).")
        return jax.random.beta(rng, config.loss.beta_a, config.loss.beta_b, (n,))
    raise UserError(f"config.loss.time_sampler={kind!r}; expected 'uniform' or 'beta'.")


def diffusion_steps(config: ml_collections.ConfigDict, rng: jax.Array, n: int, num_steps: int) -> jax.Array:
    """``n`` training steps of a ``num_steps`` diffusion schedule: ``s ~ U[0, S-1]`` when
    ``loss.continuous_steps`` (the samplers query fractional steps), uniform integers otherwise."""
    top = num_steps - 1
    if config.loss.continuous_steps:
        return jax.random.uniform(rng, (n,), maxval=float(top))
    return jax.random.randint(rng, (n,), 0, top + 1).astype(jnp.float32)


def noise(config: ml_collections.ConfigDict, rng: jax.Array | None, n: int) -> jax.Array | None:
    """Auxiliary map noise ``z ~ N(0, I)`` of size ``model.noise_dim`` (None when 0; zeros
    when ``rng`` is None, the deterministic ``T(x, 0)``)."""
    d = config.model.noise_dim
    if not d:
        return None
    if rng is None:
        return jnp.zeros((n, d), jnp.float32)
    return jax.random.normal(rng, (n, d))


def apply_map(config: ml_collections.ConfigDict, state: "State", name: str, x: jax.Array,
              rng: jax.Array | None = None) -> jax.Array:
    """Test-time map ``name`` (``"T"`` or ``"S"``) on ``x``: EMA parameters when kept; with
    ``model.noise_dim > 0`` the auxiliary noise is ``z ~ N(0, I)`` drawn from ``rng``, or
    ``z = 0`` when ``rng`` is None."""
    net = module(state, name, map_params(config, state, name))
    return net(x, noise(config, rng, x.shape[0]))


def map_params(config: ml_collections.ConfigDict, state: State, name: str) -> Any:
    """Parameters used at test time: the EMA when ``train.ema > 0``."""
    return state.ema[name] if config.train.ema else state.params[name]


def stacked(batch: dict, key: str, count: int | None = None) -> jax.Array:
    """The ``[K, B, ...]`` stack of ``K`` host batches for ``key`` (see ``batches_per_step``);
    with ``count`` the stack must hold exactly that many."""
    a = batch[key]
    if a.ndim < 3:
        raise ValueError(f"batch[{key!r}] must be stacked as [K, B, d], got shape {a.shape}.")
    if count is not None and a.shape[0] != count:
        raise ValueError(
            f"batch[{key!r}] stacks {a.shape[0]} batches but this step consumes {count} (batches_per_step; "
            "the potential step takes batch 0, the map steps batches 1..k_t); build it with "
            "jot.train.loop.batch_counts or pass that many."
        )
    return a
