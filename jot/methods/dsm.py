"""DSM: trains the pixel-space UNet noise predictor (``jot.models.unet``) by denoising score
matching in epsilon form (``jot.losses.denoising.epsilon_loss``), with an EMA of the parameters.

One step: images ``x0`` are the batch entries named in ``config.loss.domains`` (``("x", "y")``
trains one network on both translation domains, with the domain index ``0, 1, ...`` as the
class label when ``config.model.num_classes > 0``; ``config.loss.cond = "label"`` uses
``batch["label"]`` instead, ``"none"`` trains an unconditional network). Steps are drawn as
``s ~ U[0, S-1]`` (continuous, ``loss.continuous_steps``; the samplers query fractional steps)
or uniformly over the integers; ``eps ~ N(0, I)``; one Adam step on the (optionally
min-SNR-weighted) loss; ``ema <- d ema + (1 - d) params``.

``transport`` translates source-domain (label 0) images to the target domain (label 1) with
DDIB (``jot.diffusion.samplers.invert_then_sample``) using the EMA parameters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jot.diffusion import samplers, schedules
from jot.errors import UserError
from jot.losses import denoising
from jot.methods import _common
from jot.methods._common import State
from jot.models import unet


def schedule(config: ml_collections.ConfigDict) -> schedules.Schedule:
    """The VP schedule of ``config.model`` (``schedule``, ``num_steps``)."""
    return schedules.make(config.model.schedule, config.model.num_steps)


def _build(config: ml_collections.ConfigDict, image_shape: tuple[int, ...], rngs: nnx.Rngs) -> nnx.Module:
    """The noise predictor of ``config.model``: the UNet (``kind="unet"``, the default) for images of
    shape ``(H, W, C)``, or ``jot.models.point_eps.EpsMLP`` (``kind="mlp"``: ``width``, ``blocks``,
    ``time_dim``, ``num_classes``) for points of shape ``(d,)``."""
    kind = config.model.get("kind", "unet")
    if kind == "mlp":
        from jot.models import point_eps

        if len(image_shape) != 1:
            raise UserError(f"config.model.kind='mlp' is for points [B, d]; the data has shape {image_shape}. "
                            "Use config.model.kind='unet' for images.")
        m = config.model
        return point_eps.EpsMLP(image_shape[0], width=m.width, blocks=m.blocks, time_dim=m.time_dim,
                                num_classes=m.num_classes, rngs=rngs)
    if kind != "unet":
        raise UserError(f"config.model.kind={kind!r}; expected 'unet' (images) or 'mlp' (points).")
    size, _, channels = image_shape
    return unet.from_config(config.model, in_channels=channels, image_size=size, rngs=rngs)


def _images_and_cond(config: ml_collections.ConfigDict, batch: dict) -> tuple[jax.Array, jax.Array | None]:
    keys = tuple(config.loss.domains)
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"config.loss.domains={keys} but the batch has no {missing}; batch keys: {sorted(batch)}.")
    x0 = jnp.concatenate([batch[k] for k in keys], axis=0)
    mode = config.loss.cond
    if mode == "none":
        return x0, None
    if mode == "domain":
        if config.model.num_classes < len(keys):
            raise ValueError(
                f"config.loss.cond='domain' with keys {keys} needs config.model.num_classes >= {len(keys)}, "
                f"got {config.model.num_classes}."
            )
        cond = jnp.concatenate([jnp.full((batch[k].shape[0],), i, jnp.int32) for i, k in enumerate(keys)])
        return x0, cond
    if mode == "label":
        return x0, jnp.concatenate([batch["label"]] * len(keys)).astype(jnp.int32)
    raise ValueError(f"config.loss.cond={mode!r}; expected 'domain', 'label' or 'none'.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
    x0, _ = _images_and_cond(config, batch)
    k_params, k_state = jax.random.split(rng)
    gdef, p_eps = _common.split(_build(config, x0.shape[1:], nnx.Rngs(params=k_params)))
    params = {"eps": p_eps}
    opt_state = {"eps": _common.optimizer(config, config.train.lr).init(p_eps)}
    ema = {"eps": p_eps} if config.train.ema else {}
    return State(step=jnp.zeros((), jnp.int32), rng=k_state, params=params, opt_state=opt_state, ema=ema,
                 graphdefs=_common.graphdefs({"eps": gdef}))


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    x0, cond = _images_and_cond(config, batch)
    sched = schedule(config)
    k_s, k_eps = jax.random.split(jax.random.fold_in(state.rng, state.step))
    n = x0.shape[0]
    s = _common.diffusion_steps(config, k_s, n, sched.num_steps)
    noise = jax.random.normal(k_eps, x0.shape, x0.dtype)
    gamma = config.loss.snr_gamma or None

    def loss_fn(p):
        model = _common.module(state, "eps", p)
        return denoising.epsilon_loss(model, x0, noise, s, sched.alpha_bar_at(s), cond=cond, snr_gamma=gamma)

    loss, grads = jax.value_and_grad(loss_fn)(state.params["eps"])
    tx = _common.optimizer(config, config.train.lr)
    params, opt_state = _common.apply_grads(tx, state.params["eps"], state.opt_state["eps"], grads)
    ema = {"eps": _common.ema_update(state.ema["eps"], params, config.train.ema)} if config.train.ema else {}
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params={"eps": params}, opt_state={"eps": opt_state}, ema=ema), metrics


def eps_model(
    config: ml_collections.ConfigDict,
    state: State,
    *,
    label: int | None = None,
    use_ema: bool = True,
) -> unet.EpsModel:
    """The trained ``eps_fn(x, s, cond)`` (EMA parameters by default) for images of the shape
    it was trained on (the UNet's graph definition is ``state.graphdefs["eps"]``); ``label``
    fixes the domain."""
    params = _common.map_params(config, state, "eps") if use_ema else state.params["eps"]
    return unet.EpsModel(state.graphdefs["eps"], params, label)


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array) -> jax.Array:
    """DDIB translation of label-0 images ``x`` to label 1 with ``config.translate`` (``nfe``, ``end_step``)."""
    return samplers.invert_then_sample(
        eps_model(config, state, label=0), eps_model(config, state, label=1), x,
        schedule=schedule(config), nfe=config.translate.nfe, end=config.translate.end_step,
    )


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    """Held-out denoising loss (EMA model) at fixed steps ``s = S/10, S/2, 9S/10`` and fixed noise."""
    x0, cond = _images_and_cond(config, {k: jnp.asarray(v) for k, v in data.items()})
    sched = schedule(config)
    model = eps_model(config, state)
    noise = jax.random.normal(jax.random.PRNGKey(0), x0.shape, x0.dtype)
    out = {}
    for frac in (0.1, 0.5, 0.9):
        s = jnp.full((x0.shape[0],), frac * (sched.num_steps - 1), jnp.float32)
        loss = jax.jit(denoising.epsilon_loss)(model, x0, noise, s, sched.alpha_bar_at(s), cond=cond)
        out[f"eval_loss_s{frac:.1f}"] = float(loss)
    return out
