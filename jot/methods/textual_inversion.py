"""Textual inversion (Gal et al. 2023): one new token embedding per placeholder token, learned
from images with a frozen text-conditioned diffusion model (LSB's App. C.2 uses it to name a
domain).

The model is frozen and comes from ``config.model.path`` (a diffusers Stable Diffusion
folder, trained in VAE latents) or ``config.model.workdir`` (a finished ``sd_dsm`` run, in
its pixel space); ``load_pretrained`` reads it once and the loop keeps it out of the
checkpoints. The trainable parameters are only the ``[K, D]`` rows of the placeholder tokens
(``textual_inversion.tokens``), initialised from the mean token embedding of
``textual_inversion.init_text`` ("a photo" by default); the text encoder's own table is never
touched (``CLIPTextModel(..., extra_embeddings=...)``), so the UNet, VAE and table are
bit-identical afterwards.

One step: images ``x0`` (the batch entry ``textual_inversion.key``; VAE latents for a
diffusers model), each with a prompt drawn from ``textual_inversion.templates`` with ``{}``
replaced by the placeholder tokens; steps and noise as in ``sd_dsm``; the epsilon (or
velocity) loss of the frozen UNet; one AdamW step (``train.lr``, ``train.weight_decay``) on
the embedding rows.

``evaluate`` writes ``learned_embeds.safetensors`` (one per token: ``learned_embeds.safetensors``
for one token, ``learned_embeds-<i>.safetensors`` otherwise) in the format diffusers'
``load_textual_inversion`` reads, and reports the held-out denoising loss with the first
template's prompt and with each of ``textual_inversion.reference_prompts``.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from jot.diffusion import samplers
from jot.errors import UserError
from jot.losses import denoising
from jot.metrics import frechet
from jot.methods import _common, sd_dsm
from jot.models.sd import clip as sd_clip
from jot.models.sd import pipeline as sd_pipeline
from jot.models.sd import textual_inversion as ti_files


Pretrained = sd_dsm.Pretrained


@struct.dataclass
class State:
    """``params["embeddings"]``: the ``[K, D]`` placeholder rows; ``pretrained``: the frozen
    model, attached by the loop (None in checkpoints)."""

    step: jax.Array
    rng: jax.Array
    params: dict
    opt_state: dict
    pretrained: Any = None


def _tokens(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    tokens = config.textual_inversion.tokens
    tokens = (tokens,) if isinstance(tokens, str) else tuple(tokens)
    if not tokens:
        raise UserError("config.textual_inversion.tokens is empty; give the placeholder token(s), e.g. '<cat>'.")
    return tokens


def check_config(config: ml_collections.ConfigDict) -> None:
    ti = config.textual_inversion
    _tokens(config)
    m = config.model
    if bool(m.get("path")) == bool(m.get("workdir")):
        raise UserError(
            f"config.model.path={m.get('path')!r}, config.model.workdir={m.get('workdir')!r}: set exactly one, the "
            "frozen model to invert into (a diffusers Stable Diffusion folder, or a finished sd_dsm run)."
        )
    if not ti.templates or any("{}" not in t for t in ti.templates):
        raise UserError(f"config.textual_inversion.templates={tuple(ti.templates)}: each template needs one '{{}}' "
                        "where the placeholder goes, e.g. 'a photo of a {}'.")
    if config.train.ema:
        raise UserError(f"config.train.ema={config.train.ema}: textual inversion keeps no EMA; set it to 0.")
    if config.model.get("path") and not os.path.isdir(config.model.path):
        raise UserError(f"config.model.path={config.model.path!r} is not a folder; point it at a diffusers Stable "
                        "Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).")


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW(train.lr, train.weight_decay) with the loop's schedule and clipping options."""
    t = config.train
    base = _common.optimizer(config, t.lr)  # schedule + clipping + Adam
    return optax.chain(base, optax.add_decayed_weights(-t.lr * t.weight_decay)) if t.weight_decay else base


def load_pretrained(config: ml_collections.ConfigDict) -> Pretrained:
    """Reads the frozen model (``model.path`` or ``model.workdir``) and adds the placeholder tokens."""
    m = config.model
    pre = sd_dsm.pretrained_from_run(m.workdir) if m.get("workdir") else sd_dsm.pretrained_from_folder(m.path, sd_dsm.attention_kernel(config))
    num_embeddings = _module(pre, "text_encoder", pre.text_encoder).num_embeddings
    try:
        ids = pre.tokenizer.add_tokens(list(_tokens(config)))
    except ValueError as e:
        raise UserError(f"config.textual_inversion.tokens: {e}") from e
    if ids[0] != num_embeddings:
        raise UserError(f"the tokenizer has {ids[0]} tokens but the text encoder's table {num_embeddings} rows; the "
                        "model's tokenizer and text encoder do not belong together.")
    return pre.replace(token_ids=tuple(ids))


def _module(pre: Pretrained, name: str, params):
    from flax import nnx

    return nnx.merge(pre.graphdefs[name], params)


def prompts(config: ml_collections.ConfigDict) -> list[str]:
    """The templates with ``{}`` replaced by the placeholder tokens (space-separated)."""
    return [t.format(" ".join(_tokens(config))) for t in config.textual_inversion.templates]


def text_embeddings(pre: Pretrained, ids: jax.Array, extra: jax.Array | None) -> jax.Array:
    """Hidden states ``[N, L, D]`` of the frozen text encoder for ``ids`` with the placeholder rows ``extra``."""
    return _module(pre, "text_encoder", pre.text_encoder)(ids, extra_embeddings=extra)


_latents = sd_dsm.latents


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict, pretrained: Pretrained) -> State:
    ti = config.textual_inversion
    text = _module(pretrained, "text_encoder", pretrained.text_encoder)
    rows = sd_clip.initial_embeddings(text, pretrained.tokenizer, ti.init_text, len(pretrained.token_ids))
    params = {"embeddings": rows.astype(jnp.float32)}
    return State(step=jnp.zeros((), jnp.int32), rng=rng, params=params,
                 opt_state={"embeddings": _optimizer(config).init(params["embeddings"])})


def _loss_of(pre: Pretrained):
    return denoising.velocity_loss if pre.prediction_type == "v_prediction" else denoising.epsilon_loss


def _unet_fn(pre: Pretrained):
    unet = _module(pre, "unet", pre.unet)
    return lambda x, s, text: unet(x, s, text).astype(x.dtype)


def train_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> tuple[State, dict]:
    pre = state.pretrained
    x0 = _latents(pre, batch[config.textual_inversion.key])
    ids = jnp.asarray(pre.tokenizer(prompts(config)))
    k_s, k_eps, k_t = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    n, top = x0.shape[0], pre.schedule.num_steps - 1
    s = jax.random.uniform(k_s, (n,), maxval=float(top))
    noise = jax.random.normal(k_eps, x0.shape, x0.dtype)
    which = jax.random.randint(k_t, (n,), 0, ids.shape[0])

    def loss_fn(rows):
        cond = text_embeddings(pre, ids, rows)[which]
        return _loss_of(pre)(_unet_fn(pre), x0, noise, s, pre.schedule.alpha_bar_at(s), cond=cond)

    loss, grads = jax.value_and_grad(loss_fn)(state.params["embeddings"])
    rows, opt_state = _common.apply_grads(_optimizer(config), state.params["embeddings"],
                                          state.opt_state["embeddings"], grads)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "embedding_norm": jnp.linalg.norm(rows)}
    return state.replace(step=state.step + 1, params={"embeddings": rows},
                         opt_state={"embeddings": opt_state}), metrics


def transport(config: ml_collections.ConfigDict, state: State, x: jax.Array) -> jax.Array:
    raise NotImplementedError("textual inversion learns embeddings; translate with them through jot.translate.")


def save(config: ml_collections.ConfigDict, state: State, folder: str) -> list[str]:
    """Writes one diffusers-format embedding file per placeholder token into ``folder``."""
    rows = np.asarray(jax.device_get(state.params["embeddings"]), np.float32)
    tokens = _tokens(config)
    paths = []
    for i, token in enumerate(tokens):
        name = ti_files.FILE_NAME if len(tokens) == 1 else ti_files.FILE_NAME.replace(".safetensors", f"-{i}.safetensors")
        paths.append(str(ti_files.save_embeddings(os.path.join(folder, name), {token: rows[i:i + 1]})))
    return paths


def sample(config: ml_collections.ConfigDict, state: State, prompt_embeddings: jax.Array, rng: jax.Array,
           n: int, shape: tuple[int, ...]) -> jax.Array:
    """``n`` DDIM samples (``textual_inversion.sample_nfe`` steps) of the frozen model for one
    prompt's embeddings ``[L, D]``, with classifier-free guidance ``textual_inversion.guidance``
    against the empty prompt when it is not 1; images (decoded for latent models)."""
    pre, ti = state.pretrained, config.textual_inversion
    guidance = float(ti.get("guidance", 1.0))
    uncond = None if guidance == 1.0 else text_embeddings(pre, jnp.asarray(pre.tokenizer([""])), None)
    eps = sd_pipeline.SDEps(graphdef=pre.graphdefs["unet"], params=pre.unet, schedule=pre.schedule,
                            context=prompt_embeddings[None], uncond=uncond, guidance=jnp.float32(guidance),
                            prediction_type=pre.prediction_type)
    x = samplers.ddim_sample(eps, jax.random.normal(rng, (n,) + tuple(shape)), schedule=pre.schedule,
                             nfe=int(ti.sample_nfe), clip=1.0 if pre.vae is None else None)
    if pre.vae is not None:
        x = _module(pre, "vae", pre.vae).decode(x)
    return x


def evaluate(config: ml_collections.ConfigDict, state: State, data: dict, workdir: str | None) -> dict:
    """Held-out metrics of the frozen model on ``data[textual_inversion.key]`` with the first
    template's prompt (no prefix) and with each ``reference_prompts[i]`` (prefix ``ref<i>_``):

    - ``loss_s*``: the denoising loss at steps ``S/10, S/2, 9S/10`` with fixed noise;
    - ``fd``: Frechet distance (``jot.metrics.frechet``) between ``textual_inversion.num_samples``
      DDIM samples and as many held-out images, next to ``fd_floor``, the distance between two
      disjoint held-out sets of that size (0 samples: not computed).

    Writes the embedding files into ``workdir``."""
    pre = state.pretrained
    if workdir is not None:
        save(config, state, workdir)
    images = data.get(config.textual_inversion.key, ())
    if len(images) == 0:
        return {}  # no held-out images (config.data.num_eval = 0)
    images = np.asarray(images)
    x0 = _latents(pre, jnp.asarray(images))
    refs = list(config.textual_inversion.get("reference_prompts", ()))
    ids = jnp.asarray(pre.tokenizer([prompts(config)[0]] + refs))
    table = text_embeddings(pre, ids, state.params["embeddings"])
    noise = jax.random.normal(jax.random.PRNGKey(0), x0.shape, x0.dtype)

    @jax.jit
    def loss_at(s, cond):
        cond = jnp.broadcast_to(cond[None], (x0.shape[0],) + cond.shape)
        return _loss_of(pre)(_unet_fn(pre), x0, noise, s, pre.schedule.alpha_bar_at(s), cond=cond)

    out = {}
    names = [""] + [f"ref{i}_" for i in range(len(refs))]
    for frac in (0.1, 0.5, 0.9):
        s = jnp.full((x0.shape[0],), frac * (pre.schedule.num_steps - 1), jnp.float32)
        for i, name in enumerate(names):
            out[f"{name}loss_s{frac:.1f}"] = float(loss_at(s, table[i]))
    n = min(int(config.textual_inversion.get("num_samples", 0)), len(images) // 2)
    if n >= 2:
        held, other = images[:n], images[n:2 * n]
        out["fd_floor"] = frechet.frechet_distance(other, held)
        for i, name in enumerate(names):
            x = sample(config, state, table[i], jax.random.PRNGKey(1), n, x0.shape[1:])
            out[f"{name}fd"] = frechet.frechet_distance(np.asarray(x), held)
    return out
