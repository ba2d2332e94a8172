"""RDMD: regularised distribution matching distillation (Rakitin, Shchekotov & Vetrov 2024), a
one-step unpaired translator ``G: x -> y`` distilled from a diffusion model of the target domain
(losses and formulas: ``jot.losses.dmd``).

Networks, all of the teacher's architecture (``jot.models.unet.UNet`` for images,
``jot.models.point_eps.EpsMLP`` for points):

- ``eps_real``: the frozen teacher, the EMA noise predictor of a finished ``dsm`` run of the
  target domain (``config.teacher.workdir``; ``teacher.label`` is the target's class for a
  domain-conditioned model, -1 for an unconditional one). ``load_pretrained`` reads it once;
  the loop keeps it out of the checkpoints.
- ``eps_fake``: the online model of G's outputs, initialised from the teacher.
- ``G``: the denoiser of a noise predictor ``eps_G`` at the fixed step ``s* = model.init_t (S-1)``
  (``a* = alpha_bar(s*)``) applied to the scaled source sample, without noise::

      G(x) = x0_G(sqrt(a*) x, s*) = x - sqrt((1 - a*) / a*) eps_G(sqrt(a*) x, s*).

  ``model.init="teacher"`` starts ``eps_G`` from the teacher (G is then the teacher's one-step
  denoiser of the source sample read as a step-``s*`` sample: the strong initialisation of the
  paper), ``"identity"`` from a fresh network whose output layer is zero (``G(x) = x``).

One train step (one jitted function; the step consumes ``k_fake + 1`` source batches):

1. ``loss.k_fake`` fake-model updates (``_common.inner_updates`` over batches ``0..k_fake-1``): the denoising
   loss ``L_fake`` on ``stop_grad(G(x))`` at steps ``s ~ U[0, S-1]``;
2. one generator update on batch ``k_fake`` with the updated fake model:
   ``L_DMD(G(x)) + loss.lam * c(x, G(x))`` at steps ``s ~ U[t_min, t_max] (S-1)``;
   ``c = ||x - y||^2`` summed (``loss.cost_reduce="sum"``, points) or averaged (``"mean"``,
   images) over features, the same reduction as the surrogate.

Time weighting of the DMD direction (``loss.time_weight``):

- ``"dmd"``: DMD's per-example normalisation ``1 / mean|y - x0_real(y_s)|``, no other weight;
- ``"kl"``: ``w = snr(s)``, no normalisation: the exact gradient of ``E_s KL(p_s^G || p_s^target)``;
- ``"x0"``: ``w = 1``, no normalisation: the gradient of ``E_s KL_s / snr(s)``.

``transport`` applies ``G`` (EMA parameters when ``train.ema > 0``). ``evaluate`` writes the
same artifacts as the OT methods: ``transport.npz`` (``x``, ``Tx``, ``y``), and for points the
exact ``w2`` / ``l2_to_ot`` of ``jot.methods._ot_eval`` (plus ``transport.png``); for images the
transport cost, PSNR against ``y`` (meaningful for paired data such as the digits' twins) and
the Frechet distance of ``jot.metrics.frechet``.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx, struct

from jot.diffusion import schedules
from jot.errors import UserError
from jot.losses import dmd
from jot.methods import _common

TIME_WEIGHTS = ("dmd", "kl", "x0")
INITS = ("teacher", "identity")


@struct.dataclass
class Teacher:
    """The frozen target-domain model: ``params`` of the noise predictor (graph ``graphdef``) and
    its ``schedule``; ``model`` is the teacher run's ``config.model`` (frozen, to build fresh
    networks of its architecture), ``label`` the target class (None: unconditional)."""

    params: Any
    schedule: schedules.Schedule
    graphdef: Any = struct.field(pytree_node=False)
    model: Any = struct.field(pytree_node=False)
    label: int | None = struct.field(pytree_node=False, default=None)

    def eps(self, params=None):
        """``eps_fn(x, s, cond)`` of ``params`` (default: the teacher's) with the target label."""
        net = nnx.merge(self.graphdef, self.params if params is None else params)
        label = self.label

        def fn(x, s, cond=None):
            c = None if label is None else jnp.full((x.shape[0],), label, jnp.int32)
            return net(x, s, c)

        return fn


@struct.dataclass
class State(_common.State):
    """``_common.State`` with ``params``/``opt_state``: ``"G"`` (the generator's ``eps_G``) and
    ``"fake"``; ``ema``: ``{"G": ...}`` when ``train.ema > 0``; and ``pretrained``: the ``Teacher``
    (None in checkpoints)."""

    pretrained: Any = None


def k_fake(config: ml_collections.ConfigDict) -> int:
    k = config.loss.k_fake
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"config.loss.k_fake={k!r}: fake-model updates per generator update must be an integer >= 1.")
    return k


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``UserError`` naming the field and the fix for out-of-range RDMD fields."""
    t, lc, m = config.teacher, config.loss, config.model
    if not t.workdir:
        raise UserError("config.teacher.workdir is empty; point it at a finished dsm run of the target domain "
                        "(e.g. --config.teacher.workdir=runs/dsm_digits16), trained first.")
    if not os.path.isdir(t.workdir):
        raise UserError(f"config.teacher.workdir={t.workdir!r} is not a folder; train the teacher there first "
                        "(a dsm run, e.g. configs/rdmd_2d.py:teacher) or fix the path.")
    if not isinstance(t.label, int) or t.label < -1:
        raise UserError(f"config.teacher.label={t.label!r}; expected the target domain's class (>= 0) for a "
                        "conditioned teacher, or -1 for an unconditional one.")
    lam = lc.lam
    if not isinstance(lam, (int, float)) or not lam >= 0:
        raise UserError(f"config.loss.lam={lam!r}; the transport cost weight lambda must be a number >= 0.")
    k_fake(config)
    if lc.time_weight not in TIME_WEIGHTS:
        raise UserError(f"config.loss.time_weight={lc.time_weight!r}; expected one of {list(TIME_WEIGHTS)} "
                        "(jot.methods.rdmd docstring).")
    if not (0.0 <= lc.t_min < lc.t_max <= 1.0):
        raise UserError(f"config.loss.t_min={lc.t_min!r}, t_max={lc.t_max!r}: the generator's diffusion times are "
                        "fractions of the schedule with 0 <= t_min < t_max <= 1 (DMD: 0.02 and 0.98).")
    if lc.cost_reduce not in ("sum", "mean"):
        raise UserError(f"config.loss.cost_reduce={lc.cost_reduce!r}; expected 'sum' (points) or 'mean' (images).")
    if m.init not in INITS:
        raise UserError(f"config.model.init={m.init!r}; expected 'teacher' (the teacher's denoiser at step "
                        "model.init_t) or 'identity'.")
    if not (0.0 < m.init_t <= 1.0):
        raise UserError(f"config.model.init_t={m.init_t!r}; the generator's fixed step is a fraction of the "
                        "schedule in (0, 1].")
    _common.optimizer(config, 1.0)


def batches_per_step(config: ml_collections.ConfigDict) -> dict[str, int]:
    return {"x": k_fake(config) + 1}


def load_pretrained(config: ml_collections.ConfigDict) -> Teacher:
    """Reads the teacher (EMA noise predictor, schedule, architecture) from ``teacher.workdir``."""
    from jot import train
    from jot.methods import dsm

    run = train.restore(config.teacher.workdir)
    if run.config.method != "dsm":
        raise UserError(f"config.teacher.workdir={config.teacher.workdir!r} holds a {run.config.method!r} run; the "
                        "teacher must be a dsm run of the target domain.")
    for field in ("name", "size", "thickness", "split_seed"):
        mine, theirs = config.data.get(field), run.config.data.get(field)
        if theirs is not None and mine != theirs:
            raise UserError(f"config.data.{field}={mine!r} but the teacher in {config.teacher.workdir} was trained "
                            f"with data.{field}={theirs!r}; set --config.data.{field}={theirs!r}.")
    classes = int(run.config.model.num_classes)
    label = int(config.teacher.label)
    if classes > 0 and not 0 <= label < classes:
        raise UserError(f"the teacher in {config.teacher.workdir} is conditioned on {classes} labels; set "
                        f"config.teacher.label to the target domain's label (0..{classes - 1}; 1 for the thick "
                        f"digits of dsm_digits), got {label}.")
    if classes == 0 and label != -1:
        raise UserError(f"the teacher in {config.teacher.workdir} is unconditional (num_classes=0); set "
                        f"config.teacher.label=-1, got {label}.")
    params = jax.device_get(_common.map_params(run.config, run.state, "eps"))
    return Teacher(params=params, schedule=dsm.schedule(run.config), graphdef=run.state.graphdefs["eps"],
                   model=ml_collections.FrozenConfigDict(run.config.model), label=None if classes == 0 else label)


def _fresh(teacher: Teacher, shape: tuple[int, ...], rng: jax.Array) -> dict:
    """A fresh network of the teacher's architecture (zero output layer) as a pure dict."""
    from jot.methods import dsm

    cfg = ml_collections.ConfigDict({"model": ml_collections.ConfigDict(teacher.model)})
    net = dsm._build(cfg, shape, nnx.Rngs(params=rng))
    return _common.split(net)[1]


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict, pretrained: Teacher) -> State:
    x = _common.stacked(batch, "x")[0]
    k_g, k_state = jax.random.split(rng)
    teacher_params = pretrained.params
    g = teacher_params if config.model.init == "teacher" else _fresh(pretrained, x.shape[1:], k_g)
    g = jax.tree.map(jnp.asarray, g)
    fake = jax.tree.map(jnp.asarray, teacher_params)
    params = {"G": g, "fake": fake}
    opt_state = {"G": _opt(config, "G").init(g), "fake": _opt(config, "fake").init(fake)}
    ema = {"G": g} if config.train.ema else {}
    return State(step=jnp.zeros((), jnp.int32), rng=k_state, params=params, opt_state=opt_state, ema=ema,
                 graphdefs=_common.graphdefs({"G": pretrained.graphdef, "fake": pretrained.graphdef}))


def _opt(config: ml_collections.ConfigDict, name: str):
    if name == "fake":
        return _common.optimizer(config, config.train.lr_fake, updates_per_step=k_fake(config))
    return _common.optimizer(config, config.train.lr_G)


def generator_step(config: ml_collections.ConfigDict, teacher: Teacher) -> float:
    """The generator's fixed (fractional) step ``s* = model.init_t (S - 1)``."""
    return float(config.model.init_t) * (teacher.schedule.num_steps - 1)


def generator(config: ml_collections.ConfigDict, teacher: Teacher, params) -> Any:
    """``G(x) = x - sqrt((1 - a*) / a*) eps_G(sqrt(a*) x, s*)`` (module docstring) for ``eps_G`` = ``params``."""
    eps = teacher.eps(params)
    s_star = generator_step(config, teacher)
    a = teacher.schedule.alpha_bar_at(jnp.float32(s_star))

    def G(x):
        s = jnp.full((x.shape[0],), s_star, jnp.float32)
        return x - jnp.sqrt((1.0 - a) / a) * eps(jnp.sqrt(a) * x, s)

    return G


def _time_weighting(config: ml_collections.ConfigDict, teacher: Teacher, s: jax.Array):
    kind = config.loss.time_weight
    if kind == "dmd":
        return None, True
    if kind == "kl":
        return teacher.schedule.snr(s), False
    return jnp.ones_like(s), False


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    teacher = state.pretrained
    k = k_fake(config)
    xs = _common.stacked(batch, "x", k + 1)
    n = xs.shape[1]
    lc = config.loss
    sched = teacher.schedule
    top = float(sched.num_steps - 1)
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), k + 1)
    eps_real = teacher.eps()
    G_now = generator(config, teacher, state.params["G"])
    opt_fake, opt_g = _opt(config, "fake"), _opt(config, "G")

    # 1. k_fake updates of the fake model on G's (detached) outputs, batches 0..k-1.
    def fake_update(carry, inputs):
        p, o = carry
        x, key = inputs
        ks, kn = jax.random.split(key)
        y = jax.lax.stop_gradient(G_now(x))
        s = jax.random.uniform(ks, (n,), maxval=top)
        noise = jax.random.normal(kn, y.shape, y.dtype)
        lf, grads = jax.value_and_grad(
            lambda q: dmd.fake_loss(teacher.eps(q), y, noise, s, sched.alpha_bar_at(s))[0])(p)
        p, o = _common.apply_grads(opt_fake, p, o, grads)
        return (p, o), lf

    (p_fake, o_fake), fake_losses = _common.inner_updates(fake_update, (state.params["fake"], state.opt_state["fake"]),
                                                 (xs[:k], keys[:k]))

    # 2. One generator update on batch k against the updated fake model.
    x = xs[k]
    ks, kn = jax.random.split(keys[k])
    s = jax.random.uniform(ks, (n,), minval=lc.t_min * top, maxval=lc.t_max * top)
    noise = jax.random.normal(kn, x.shape, x.dtype)
    weight, normalize = _time_weighting(config, teacher, s)
    eps_fake = teacher.eps(p_fake)

    def loss_g(p):
        return dmd.rdmd_loss(generator(config, teacher, p), eps_real, eps_fake, x, noise, s, sched.alpha_bar_at(s),
                             lam=lc.lam, weight=weight, normalize=normalize, reduce=lc.cost_reduce)

    (lg, aux), grads = jax.value_and_grad(loss_g, has_aux=True)(state.params["G"])
    p_g, o_g = _common.apply_grads(opt_g, state.params["G"], state.opt_state["G"], grads)
    ema = {"G": _common.ema_update(state.ema["G"], p_g, config.train.ema)} if config.train.ema else {}
    metrics = {"loss": lg, "loss_fake": fake_losses[-1], "dmd": aux["dmd"], "cost": aux["cost"],
               "dmd_grad_norm": aux["grad_norm"], "dmd_norm": aux["norm"]}
    new = state.replace(step=state.step + 1, params={"G": p_g, "fake": p_fake},
                        opt_state={"G": o_g, "fake": o_fake}, ema=ema)
    return new, metrics


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """``G(x)`` with the EMA parameters when kept (one network evaluation; ``rng`` is unused)."""
    return generator(config, state.pretrained, _common.map_params(config, state, "G"))(x)


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    """Held-out metrics and ``transport.npz`` (module docstring; images: ``_ot_eval.evaluate_images``)."""
    from jot.methods import _ot_eval

    out = _ot_eval.evaluate(config, state, data, workdir, transport, None)
    if np.ndim(data["x"]) == 2:
        n = min(len(data["x"]), len(data["y"]))
        x = np.asarray(data["x"])[:n]
        tx = np.asarray(jax.jit(lambda s, u: transport(config, s, u))(state, x))
        out["cost"] = float(np.mean(np.sum((tx - x) ** 2, axis=1)))
    return out
