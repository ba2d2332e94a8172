"""SD-DSM: trains a text-conditioned Stable Diffusion UNet (``jot.models.sd``) by denoising
score matching, one prompt per domain, through the generic loop.

One step: images ``x0`` are the batch entries named in ``config.loss.domains`` (``("x", "y")``
for the translation domains); domain ``i`` is conditioned on the CLIP text embeddings of
``config.data.prompts[i]``, replaced with probability ``config.loss.cond_dropout`` by the
embeddings of the empty prompt (so one network also predicts unconditionally, as
classifier-free guidance needs). Steps ``s ~ U[0, S-1]`` (continuous) or uniform integers;
``eps ~ N(0, I)``; the loss is ``jot.losses.denoising.epsilon_loss`` or, with
``model.prediction_type = "v_prediction"``, ``velocity_loss`` (SD 2.x); one Adam step on the
UNet and an EMA of its parameters. The text encoder is frozen: it is part of the state (so a
trained run holds the whole model, and textual inversion can train embeddings through it)
but no optimiser touches it.

The model is either

- the SD architecture built from ``config.model.unet`` (sizes) and ``config.model.text`` (a
  CLIP text encoder, randomly initialised from the seed and frozen; prompts are tokenised byte
  by byte), trained from scratch in pixel space: the offline digits preset; or
- with ``config.model.path``, a diffusers Stable Diffusion folder, fine-tuned: the UNet
  starts from its weights; the VAE (images -> scaled latents at the step's edge), text encoder
  and tokenizer are frozen pretrained networks (``load_pretrained``), kept out of checkpoints.
``model.remat`` rematerialises UNet blocks in the backward pass; ``model.dtype = "bfloat16"``
computes in bfloat16 with float32 parameters.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct

from jot.diffusion import schedules
from jot.errors import UserError
from jot.losses import denoising
from jot.methods import _common
from jot.models.sd import clip as sd_clip
from jot.models.sd import unet as sd_unet

PREDICTION_TYPES = ("epsilon", "v_prediction")


@struct.dataclass
class Pretrained:
    """A frozen text-conditioned model: UNet, text encoder and (latent models) VAE parameters
    and the schedule as leaves; static: graph definitions, the tokenizer, the prediction type."""

    unet: Any
    text_encoder: Any
    schedule: schedules.Schedule
    vae: Any
    graphdefs: Any = struct.field(pytree_node=False)
    tokenizer: Any = struct.field(pytree_node=False)
    prediction_type: str = struct.field(pytree_node=False)
    token_ids: tuple = struct.field(pytree_node=False, default=())


def attention_kernel(config: ml_collections.ConfigDict) -> str:
    """``config.model.attention_kernel`` (default ``"auto"``): the attention implementation of the
    SD networks (``jot.models.sd.layers.resolve_attention``: cuDNN fused attention on a CUDA GPU for
    bf16/fp16, XLA otherwise; ``"xla"``; ``"cudnn"``). A bad value is a ``UserError``."""
    from jot.models import sd

    value = config.model.get("attention_kernel", "auto")
    try:
        return sd.check_attention(value)
    except ValueError as e:
        raise UserError(f"config.model.attention_kernel: {e}") from None


def pretrained_from_folder(path: str, attention: str = "auto") -> Pretrained:
    """The networks of a diffusers Stable Diffusion folder (``jot.models.sd.load``, with the
    attention implementation ``attention``) as a ``Pretrained``; an unreadable folder is a
    ``UserError``."""
    from jot.models import sd

    try:
        pipe = sd.load(path, attention=attention)
    except (OSError, ValueError) as e:
        raise UserError(f"config.model.path={path!r} cannot be loaded as Stable Diffusion: {e}") from e
    unet_g, unet = _common.split(pipe.unet)
    text_g, text = _common.split(pipe.text_encoder)
    vae_g, vae = _common.split(pipe.vae)
    return Pretrained(unet=unet, text_encoder=text, schedule=pipe.schedule, vae=vae,
                      graphdefs=_common.graphdefs({"unet": unet_g, "text_encoder": text_g, "vae": vae_g}),
                      tokenizer=pipe.tokenizer, prediction_type=pipe.prediction_type)


def pretrained_from_run(workdir: str) -> Pretrained:
    """The trained model of a finished ``sd_dsm`` run in ``workdir`` (``trained``)."""
    from jot import train

    run = train.restore(workdir)
    if run.config.method != "sd_dsm":
        raise UserError(f"config.model.workdir={workdir!r} holds a {run.config.method!r} run; a text-conditioned "
                        "model is an sd_dsm run (or a diffusers folder via config.model.path).")
    return trained(run.config, run.state)


def trained(config: ml_collections.ConfigDict, state: "State") -> Pretrained:
    """The model a run trained (EMA UNet when it keeps one) as a ``Pretrained``: from scratch,
    its frozen random text encoder and byte-level tokenizer in pixel space; fine-tuned, the
    frozen parts of its Stable Diffusion folder."""
    unet = _common.map_params(config, state, "unet")
    if state.pretrained is not None:  # a fine-tuned Stable Diffusion: its frozen parts, the trained UNet
        pre = jax.device_get(state.pretrained)
        return pre.replace(unet=unet, graphdefs=_common.graphdefs({**pre.graphdefs, "unet": state.graphdefs["unet"]}))
    return Pretrained(
        unet=unet, text_encoder=state.frozen["text_encoder"], schedule=schedule(config), vae=None,
        graphdefs=_common.graphdefs({"unet": state.graphdefs["unet"], "text_encoder": state.graphdefs["text_encoder"]}),
        tokenizer=sd_clip.CLIPTokenizer.byte_level(model_max_length=config.model.text.max_length),
        prediction_type=config.model.prediction_type)


def text_pipeline(config: ml_collections.ConfigDict, state: "State"):
    """The trained model as a ``jot.models.sd.StableDiffusion`` (the hook ``jot.translate``'s
    prompt translation reads a run with)."""
    return pipeline(trained(config, state))


def pipeline(pre: Pretrained):
    """``pre`` as a ``jot.models.sd.StableDiffusion`` (``vae`` None for pixel-space models), the
    form ``jot.translate.sd`` translates with."""
    from jot.models.sd.pipeline import StableDiffusion

    merge = lambda name, params: None if params is None else nnx.merge(pre.graphdefs[name], params)  # noqa: E731
    return StableDiffusion(
        unet=merge("unet", pre.unet), vae=merge("vae", pre.vae), text_encoder=merge("text_encoder", pre.text_encoder),
        tokenizer=pre.tokenizer, scheduler_config={"num_train_timesteps": pre.schedule.num_steps},
        schedule=pre.schedule, prediction_type=pre.prediction_type)


def latents(pre: Pretrained | None, images: jax.Array) -> jax.Array:
    """Images in the UNet's space: scaled VAE latents (posterior mean) for a latent model, else the pixels."""
    if pre is None or pre.vae is None:
        return images
    return nnx.merge(pre.graphdefs["vae"], pre.vae).encode(images)


@struct.dataclass
class State:
    """``params["unet"]`` is trained (Adam state in ``opt_state``, EMA in ``ema``). From
    scratch, ``frozen["text_encoder"]`` is the frozen random CLIP text encoder; fine-tuning,
    ``pretrained`` holds the frozen text encoder and VAE (attached by the loop, None in
    checkpoints). ``graphdefs`` holds the graph definitions (static)."""

    step: jax.Array
    rng: jax.Array
    params: dict
    opt_state: dict
    ema: dict
    frozen: dict
    graphdefs: Any = struct.field(pytree_node=False)
    pretrained: Any = None


def schedule(config: ml_collections.ConfigDict) -> schedules.Schedule:
    """The VP schedule of ``config.model`` (``schedule``, ``num_steps``, optional ``beta_start``/``beta_end``)."""
    m = config.model
    return schedules.make(m.schedule, m.num_steps, beta_start=m.get("beta_start") or None,
                          beta_end=m.get("beta_end") or None)


def _dtype(config: ml_collections.ConfigDict):
    name = config.model.get("dtype", "float32")
    if name not in ("float32", "bfloat16"):
        raise UserError(f"config.model.dtype={name!r}; expected 'float32' or 'bfloat16' (parameters stay float32).")
    return jnp.dtype(name)


def check_config(config: ml_collections.ConfigDict) -> None:
    """The method's fields, each checked with a message naming the fix."""
    if config.model.prediction_type not in PREDICTION_TYPES:
        raise UserError(f"config.model.prediction_type={config.model.prediction_type!r}; expected one of "
                        f"{list(PREDICTION_TYPES)}.")
    domains, prompts = tuple(config.loss.domains), tuple(config.data.prompts)
    if len(prompts) != len(domains):
        raise UserError(f"config.data.prompts={prompts} has {len(prompts)} prompts but config.loss.domains={domains} "
                        f"has {len(domains)} domains; give one prompt per domain, in the same order.")
    if not 0.0 <= config.loss.cond_dropout < 1.0:
        raise UserError(f"config.loss.cond_dropout={config.loss.cond_dropout!r}; expected a probability in [0, 1).")
    _dtype(config)
    _common.optimizer(config, 1.0)
    if config.model.get("path"):
        import os

        if not os.path.isdir(config.model.path):
            raise UserError(f"config.model.path={config.model.path!r} is not a folder; point it at a diffusers Stable "
                            "Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), "
                            "or set it to '' to train the config.model.unet architecture from scratch.")
        return  # prompts are tokenised by the model's own tokenizer
    untruncated, room = sd_clip.CLIPTokenizer.byte_level(model_max_length=4096), config.model.text.max_length - 2
    for p in prompts:
        n = len(untruncated.token_ids(p))
        if n > room:
            raise UserError(f"config.data.prompts: {p!r} has {n} tokens but config.model.text.max_length="
                            f"{config.model.text.max_length} leaves room for {room} (with the start and end tokens); "
                            f"shorten the prompt or raise max_length to {n + 2}.")


def unet_config(config: ml_collections.ConfigDict, channels: int) -> sd_unet.UNetConfig:
    """The SD UNet of ``config.model.unet``: one level per entry of ``block_out_channels``,
    cross-attention on the levels where ``attention`` is true."""
    u = config.model.unet
    levels = len(u.block_out_channels)
    attention = tuple(u.attention)
    if len(attention) != levels:
        raise UserError(f"config.model.unet.attention={attention} needs one entry per level of block_out_channels="
                        f"{tuple(u.block_out_channels)}.")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return sd_unet.UNetConfig(
        in_channels=channels, out_channels=channels, block_out_channels=tuple(u.block_out_channels),
        down_block_types=down, up_block_types=up, layers_per_block=(u.layers_per_block,) * levels,
        heads=(u.heads,) * levels, transformer_layers_per_block=(1,) * levels,
        cross_attention_dim=config.model.text.hidden_size, norm_num_groups=u.norm_num_groups,
    )


def text_config(config: ml_collections.ConfigDict, vocab_size: int) -> sd_clip.CLIPTextConfig:
    t = config.model.text
    return sd_clip.CLIPTextConfig(vocab_size=vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                                  num_hidden_layers=t.layers, num_attention_heads=t.heads,
                                  max_position_embeddings=t.max_length)


def _tokenizer(config: ml_collections.ConfigDict) -> sd_clip.CLIPTokenizer:
    return sd_clip.CLIPTokenizer.byte_level(model_max_length=config.model.text.max_length)


def load_pretrained(config: ml_collections.ConfigDict) -> Pretrained | None:
    """Fine-tuning (``config.model.path``): the diffusers folder's networks; from scratch: None."""
    return pretrained_from_folder(config.model.path, attention_kernel(config)) if config.model.get("path") else None


def prompt_ids(config: ml_collections.ConfigDict, pretrained: Pretrained | None = None) -> np.ndarray:
    """Token ids ``[P + 1, L]`` of ``config.data.prompts`` followed by the empty prompt (the
    pretrained model's tokenizer when fine-tuning)."""
    tokenizer = _tokenizer(config) if pretrained is None else pretrained.tokenizer
    return tokenizer(list(config.data.prompts) + [""])


def _images_and_domains(config: ml_collections.ConfigDict, batch: dict) -> tuple[jax.Array, jax.Array]:
    keys = tuple(config.loss.domains)
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"config.loss.domains={keys} but the batch has no {missing}; batch keys: {sorted(batch)}.")
    x0 = jnp.concatenate([batch[k] for k in keys], axis=0)
    domain = jnp.concatenate([jnp.full((batch[k].shape[0],), i, jnp.int32) for i, k in enumerate(keys)])
    return x0, domain


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict, pretrained: Pretrained | None = None) -> State:
    k_unet, k_text, k_state = jax.random.split(rng, 3)
    if pretrained is not None:  # fine-tuning: the UNet starts from the pretrained weights
        p_unet = jax.tree.map(jnp.copy, pretrained.unet)
        return State(
            step=jnp.zeros((), jnp.int32), rng=k_state, params={"unet": p_unet},
            opt_state={"unet": _common.optimizer(config, config.train.lr).init(p_unet)},
            ema={"unet": p_unet} if config.train.ema else {}, frozen={},
            graphdefs=_common.graphdefs({"unet": pretrained.graphdefs["unet"]}),
        )
    x0, _ = _images_and_domains(config, batch)
    dtype = _dtype(config)
    unet = sd_unet.UNet2DConditionModel(unet_config(config, x0.shape[-1]), dtype=dtype, param_dtype=jnp.float32,
                                        remat=config.model.remat, attention=attention_kernel(config),
                                        rngs=nnx.Rngs(params=k_unet))
    text = sd_clip.CLIPTextModel(text_config(config, len(_tokenizer(config))), dtype=jnp.float32,
                                 param_dtype=jnp.float32, rngs=nnx.Rngs(params=k_text))
    g_unet, p_unet = _common.split(unet)
    g_text, p_text = _common.split(text)
    return State(
        step=jnp.zeros((), jnp.int32), rng=k_state, params={"unet": p_unet},
        opt_state={"unet": _common.optimizer(config, config.train.lr).init(p_unet)},
        ema={"unet": p_unet} if config.train.ema else {}, frozen={"text_encoder": p_text},
        graphdefs=_common.graphdefs({"unet": g_unet, "text_encoder": g_text}),
    )


def text_embeddings(state: State, ids: jax.Array) -> jax.Array:
    """The frozen text encoder's hidden states ``[N, L, D]`` for token ids ``[N, L]``."""
    pre = state.pretrained
    if pre is not None:
        return nnx.merge(pre.graphdefs["text_encoder"], pre.text_encoder)(ids)
    return _common.module(state, "text_encoder", state.frozen["text_encoder"])(ids)


def _schedule(config: ml_collections.ConfigDict, state: State) -> schedules.Schedule:
    return schedule(config) if state.pretrained is None else state.pretrained.schedule


def _prediction_type(config: ml_collections.ConfigDict, state: State) -> str:
    return config.model.prediction_type if state.pretrained is None else state.pretrained.prediction_type


def _unet_fn(state: State, params):
    """``f(x, s, text) -> UNet output`` for ``params`` of the UNet."""
    unet = _common.module(state, "unet", params)
    return lambda x, s, text: unet(x, s, text).astype(x.dtype)


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    x0, domain = _images_and_domains(config, batch)
    x0 = latents(state.pretrained, x0)
    sched = _schedule(config, state)
    k_s, k_eps, k_drop = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    n = x0.shape[0]
    s = _common.diffusion_steps(config, k_s, n, sched.num_steps)
    noise = jax.random.normal(k_eps, x0.shape, x0.dtype)
    table = jax.lax.stop_gradient(text_embeddings(state, jnp.asarray(prompt_ids(config, state.pretrained))))
    drop = jax.random.bernoulli(k_drop, config.loss.cond_dropout, (n,))
    cond = table[jnp.where(drop, table.shape[0] - 1, domain)]
    gamma = config.loss.snr_gamma or None
    loss_of = denoising.velocity_loss if _prediction_type(config, state) == "v_prediction" else denoising.epsilon_loss

    def loss_fn(p):
        return loss_of(_unet_fn(state, p), x0, noise, s, sched.alpha_bar_at(s), cond=cond, snr_gamma=gamma)

    loss, grads = jax.value_and_grad(loss_fn)(state.params["unet"])
    tx = _common.optimizer(config, config.train.lr)
    params, opt_state = _common.apply_grads(tx, state.params["unet"], state.opt_state["unet"], grads)
    ema = {"unet": _common.ema_update(state.ema["unet"], params, config.train.ema)} if config.train.ema else {}
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "dropped": jnp.mean(drop.astype(jnp.float32))}
    return state.replace(step=state.step + 1, params={"unet": params}, opt_state={"unet": opt_state}, ema=ema), metrics


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array) -> jax.Array:
    raise NotImplementedError("sd_dsm trains a text-conditioned model; translate with jot.translate (LSB, DDIB).")


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    """Held-out denoising loss (EMA UNet) at fixed steps ``s = S/10, S/2, 9S/10`` and fixed noise,
    with each domain's own prompt (``eval_loss_s*``), with the next domain's prompt
    (``swapped_loss_s*``; a model that uses its text is worse there) and with the empty prompt
    (``uncond_loss_s*``)."""
    x0, domain = _images_and_domains(config, {k: jnp.asarray(v) for k, v in data.items()})
    if x0.shape[0] == 0:
        return {}  # no held-out images (config.data.num_eval = 0)
    x0 = latents(state.pretrained, x0)
    sched = _schedule(config, state)
    params = _common.map_params(config, state, "unet")
    table = text_embeddings(state, jnp.asarray(prompt_ids(config, state.pretrained)))
    num = len(config.loss.domains)
    conds = {"eval": table[domain], "swapped": table[(domain + 1) % num], "uncond": table[jnp.full_like(domain, num)]}
    loss_of = denoising.velocity_loss if _prediction_type(config, state) == "v_prediction" else denoising.epsilon_loss
    noise = jax.random.normal(jax.random.PRNGKey(0), x0.shape, x0.dtype)

    @jax.jit
    def loss_at(params, s, cond):
        return loss_of(_unet_fn(state, params), x0, noise, s, sched.alpha_bar_at(s), cond=cond)

    out = {}
    for frac in (0.1, 0.5, 0.9):
        s = jnp.full((x0.shape[0],), frac * (sched.num_steps - 1), jnp.float32)
        for name, cond in conds.items():
            out[f"{name}_loss_s{frac:.1f}"] = float(loss_at(params, s, cond))
    return out
