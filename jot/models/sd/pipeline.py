"""Stable Diffusion as a jot model: the loaded pipeline, its schedule and its ``eps_fn`` adapter.

* :func:`schedule_from_config` turns a diffusers ``scheduler_config.json`` into a
  :class:`jot.diffusion.schedules.Schedule` (diffusers timesteps are jot steps).
* :class:`SDEps` is the UNet as ``eps_fn(x, s, cond) -> eps`` for
  ``jot.diffusion.samplers``: a pytree whose leaves are the UNet's parameters, the text
  embeddings, the optional unconditional embeddings and the guidance scale, so new weights or
  prompts reuse a compiled sampler. A "v_prediction" UNet's output is converted to epsilon,
  ``eps = sqrt(a) v + sqrt(1 - a) x_t`` with ``a = alpha_bar(s)``; classifier-free guidance is
  ``eps_uncond + w (eps_cond - eps_uncond)``, one UNet call on the doubled batch.
* :class:`StableDiffusion` holds the networks and offers ``encode_prompt``, ``encode`` /
  ``decode`` (images <-> scaled latents), ``eps_fn`` and ``ddim_steps`` (diffusers'
  DDIMScheduler timestep grid)::

      pipe = sd.load(folder)
      text = pipe.encode_prompt(["a photo of a cat"])
      eps = pipe.eps_fn(text, uncond=pipe.encode_prompt([""]), guidance=7.5)
      z = jax.random.normal(key, (1, 64, 64, 4))
      latents = ddim_sample(eps, z, schedule=pipe.schedule, steps=pipe.ddim_steps(50))
      images = pipe.decode(latents)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jot.diffusion import schedules
from jot.diffusion.schedules import Schedule
from jot.models.sd.clip import CLIPTextModel, CLIPTokenizer
from jot.models.sd.unet import UNet2DConditionModel
from jot.models.sd.vae import AutoencoderKL

PREDICTION_TYPES = ("epsilon", "v_prediction")

# diffusers beta_schedule -> jot.diffusion.schedules family (same betas).
_BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


def check_prediction_type(value: Any) -> str:
    """Returns ``value`` if it is a supported UNet prediction type, else raises ValueError."""
    if value not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type={value!r} is not supported; expected one of {list(PREDICTION_TYPES)} "
            "(set prediction_type in scheduler/scheduler_config.json to what the UNet was trained on)."
        )
    return value


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """The VP schedule of a diffusers DDPM/DDIM/PNDM scheduler config, via ``schedules.make``.

    ``beta_schedule`` "scaled_linear" (SD), "linear" (diffusers' defaults ``beta_start=1e-4``,
    ``beta_end=0.02`` when absent) and "squaredcos_cap_v2" (jot's "cosine"). Raises ValueError
    for any other ``beta_schedule``, for ``trained_betas`` and for ``rescale_betas_zero_snr``.
    """
    if config.get("trained_betas") is not None:
        raise ValueError(
            "scheduler_config sets trained_betas; expected beta_schedule "
            f"{list(_BETA_SCHEDULES)} without trained_betas. Remove trained_betas or use a scheduler "
            "config with one of these beta schedules."
        )
    if config.get("rescale_betas_zero_snr"):
        raise ValueError(
            "scheduler_config sets rescale_betas_zero_snr=True, which is not supported; expected it "
            "absent or false."
        )
    kind = config.get("beta_schedule", "linear")
    if kind not in _BETA_SCHEDULES:
        raise ValueError(
            f"scheduler_config beta_schedule={kind!r} is not supported; expected one of "
            f"{list(_BETA_SCHEDULES)}. Use a scheduler config with one of these."
        )
    return schedules.make(
        _BETA_SCHEDULES[kind],
        int(config.get("num_train_timesteps", 1000)),
        beta_start=float(config.get("beta_start", 0.0001)),
        beta_end=float(config.get("beta_end", 0.02)),
    )


def ddim_steps(config: dict[str, Any], nfe: int) -> np.ndarray:
    """diffusers' DDIMScheduler grid for ``nfe`` steps as a jot step grid (``nfe + 1`` float32).

    The timesteps of ``DDIMScheduler.set_timesteps(nfe)`` (``timestep_spacing`` and
    ``steps_offset`` of ``config``) followed by the last step's destination
    ``t - num_train_timesteps // nfe``; a negative destination is ``-1`` (``alpha_bar = 1``)
    when ``set_alpha_to_one`` (default true) and ``0`` (``alpha_bar[0]``) otherwise. For
    "leading" spacing (Stable Diffusion's) every destination is the next timestep, so
    ``ddim_sample(..., steps=ddim_steps(config, nfe))`` is diffusers' DDIM loop; for "trailing"
    and "linspace" the grid runs through the timesteps themselves.
    """
    n = int(config.get("num_train_timesteps", 1000))
    if isinstance(nfe, bool) or not isinstance(nfe, int) or not 1 <= nfe <= n:
        raise ValueError(f"nfe={nfe!r}; expected an integer in [1, num_train_timesteps={n}].")
    spacing = config.get("timestep_spacing", "leading")
    ratio = n // nfe
    if spacing == "leading":
        t = np.arange(nfe)[::-1] * ratio + int(config.get("steps_offset", 0))
    elif spacing == "trailing":
        t = np.round(np.arange(n, 0, -n / nfe)).astype(np.int64) - 1
    elif spacing == "linspace":
        t = np.linspace(0, n - 1, nfe).round()[::-1].astype(np.int64)
    else:
        raise ValueError(
            f"scheduler_config timestep_spacing={spacing!r} is not supported; expected 'leading', "
            "'trailing' or 'linspace'."
        )
    final = t[-1] - ratio
    if final < 0:
        final = -1 if config.get("set_alpha_to_one", True) else 0
    return np.append(t, final).astype(np.float32)


def _broadcast(embeddings: jax.Array, n: int, what: str) -> jax.Array:
    if embeddings.shape[0] not in (1, n):
        raise ValueError(
            f"{what} have batch {embeddings.shape[0]} but the latents have batch {n}; pass "
            f"embeddings of shape [1, L, D] (one prompt for all) or [{n}, L, D]."
        )
    return jnp.broadcast_to(embeddings, (n,) + embeddings.shape[1:])


@flax.struct.dataclass
class SDEps:
    """The SD UNet as ``eps_fn(x, s, cond) -> eps`` (NHWC latents, float steps ``s``).

    Leaves: ``params`` (the UNet's ``nnx.State``), ``schedule``, ``context`` (text embeddings
    ``[B or 1, L, D]``), ``uncond`` (``[B or 1, L, D]`` or None: no guidance) and ``guidance``
    (a float32 scalar). Static: ``graphdef`` and ``prediction_type``. Build one with
    :meth:`StableDiffusion.eps_fn`; ``.replace(context=...)`` swaps prompts without a new trace.
    A sampler's ``cond``, if not None, replaces ``context`` for that call.
    """

    graphdef: Any = flax.struct.field(pytree_node=False)
    params: Any
    schedule: Schedule
    context: jax.Array
    uncond: jax.Array | None
    guidance: jax.Array
    prediction_type: str = flax.struct.field(pytree_node=False, default="epsilon")

    def __call__(self, x: jax.Array, s: jax.Array, cond: Any = None) -> jax.Array:
        n = x.shape[0]
        s = jnp.broadcast_to(jnp.asarray(s, jnp.float32), (n,))
        context = _broadcast(self.context if cond is None else cond, n, "text embeddings")
        unet = nnx.merge(self.graphdef, self.params)
        if self.uncond is None:
            out = unet(x, s, context).astype(x.dtype)
        else:
            uncond = _broadcast(self.uncond, n, "unconditional embeddings")
            both = unet(
                jnp.concatenate([x, x]), jnp.concatenate([s, s]), jnp.concatenate([uncond, context])
            ).astype(x.dtype)
            out_uncond, out_cond = both[:n], both[n:]
            out = out_uncond + self.guidance.astype(x.dtype) * (out_cond - out_uncond)
        if self.prediction_type == "v_prediction":
            a = self.schedule.alpha_bar_at(s).astype(x.dtype).reshape((n,) + (1,) * (x.ndim - 1))
            out = jnp.sqrt(a) * out + jnp.sqrt(1.0 - a) * x
        return out


@partial(jax.jit, static_argnums=(0, 2))
def _apply(graphdef: Any, state: Any, method: str, *args: Any) -> Any:
    return getattr(nnx.merge(graphdef, state), method)(*args)


def _call(module: nnx.Module, method: str, *args: Any) -> Any:
    graphdef, state = nnx.split(module)
    return _apply(graphdef, state, method, *args)


@partial(jax.jit, static_argnums=0)
def _encode_with_rows(graphdef: Any, state: Any, ids: jax.Array, rows: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(ids, extra_embeddings=rows)


@dataclasses.dataclass
class StableDiffusion:
    """The parts of a loaded pipeline and the helpers that connect them to jot's samplers.

    Attributes:
      unet, vae, text_encoder: Flax NNX modules holding the converted weights; ``vae`` is None
        for a pixel-space model (an ``sd_dsm`` run trained from scratch): ``encode`` and
        ``decode`` are then the identity.
      tokenizer: prompt -> ids [N, 77].
      scheduler_config: the parsed ``scheduler/scheduler_config.json``.
      schedule: the :class:`jot.diffusion.schedules.Schedule` of that config (step ``s`` is
        diffusers' timestep ``t``).
      prediction_type: what the UNet predicts, "epsilon" or "v_prediction" (from that config);
        :meth:`eps_fn` always returns epsilon.
      extra_embeddings: ``[K, D]`` rows of placeholder tokens added to the tokenizer (textual
        inversion, ``load(..., textual_inversion=[files])``), or None.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL | None
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict[str, Any]
    schedule: Schedule
    prediction_type: str = "epsilon"
    extra_embeddings: jax.Array | None = None

    def encode_prompt(self, prompts: str | Sequence[str]) -> jax.Array:
        """Text embeddings ``[N, 77, D]`` of ``prompts`` (tokenizer, then text encoder; placeholder
        tokens of loaded textual-inversion files read ``extra_embeddings``)."""
        ids = jnp.asarray(self.tokenizer(prompts))
        if self.extra_embeddings is None:
            return _call(self.text_encoder, "__call__", ids)
        return _encode_with_rows(*nnx.split(self.text_encoder), ids, self.extra_embeddings)

    def encode(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """NHWC images in [-1, 1] -> latents scaled by the VAE's ``scaling_factor``: the
        posterior mean, or a posterior sample if ``rng`` is given (pixel models: ``images``)."""
        return images if self.vae is None else _call(self.vae, "encode", images, rng)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Scaled latents (from :meth:`encode` or a sampler) -> NHWC images in about [-1, 1]
        (pixel models: ``latents``)."""
        return latents if self.vae is None else _call(self.vae, "decode", latents)

    def with_textual_inversion(self, files: Sequence[Any]) -> "StableDiffusion":
        """A copy whose tokenizer and ``extra_embeddings`` also hold the tokens of the
        textual-inversion ``files`` (``learned_embeds.safetensors`` files, or folders holding
        one, as a textual-inversion run writes them). Raises ValueError for a token already
        present or embeddings of the wrong width."""
        from jot.models.sd import textual_inversion as ti_files

        if not files:
            return self
        embeddings = ti_files.load_embeddings([str(f) for f in files], hidden_size=self.text_encoder.config.hidden_size)
        tokenizer = copy.deepcopy(self.tokenizer)
        clashes = sorted(set(embeddings) & set(tokenizer.added_tokens))
        if clashes:
            raise ValueError(f"textual-inversion tokens {clashes} are already in the tokenizer; load each file once.")
        if self.extra_embeddings is None:
            _, rows = ti_files.extend(tokenizer, embeddings, text_encoder=self.text_encoder)
            extra = jnp.asarray(rows)
        else:
            _, rows = ti_files.extend(tokenizer, embeddings)
            extra = jnp.concatenate([self.extra_embeddings, jnp.asarray(rows, self.extra_embeddings.dtype)])
        return dataclasses.replace(self, tokenizer=tokenizer, extra_embeddings=extra)

    def eps_fn(
        self, text_embeddings: jax.Array, *, uncond: jax.Array | None = None, guidance: float | jax.Array = 1.0
    ) -> SDEps:
        """The UNet as a jot ``eps_fn`` conditioned on ``text_embeddings`` ``[B or 1, L, D]``.

        With ``uncond`` (e.g. ``encode_prompt([""])``), classifier-free guidance with scale
        ``guidance``: ``eps_uncond + guidance * (eps_cond - eps_uncond)``.
        """
        dim = self.unet.config.cross_attention_dim
        text_embeddings = jnp.asarray(text_embeddings)
        for what, e in (("text_embeddings", text_embeddings), ("uncond", uncond)):
            if e is not None and (jnp.ndim(e) != 3 or jnp.shape(e)[-1] != dim):
                raise ValueError(
                    f"{what} has shape {tuple(jnp.shape(e))}; expected [B or 1, L, {dim}] "
                    "(cross_attention_dim), e.g. from encode_prompt."
                )
        if uncond is not None:
            uncond = jnp.asarray(uncond)
            if uncond.shape[1] != text_embeddings.shape[1]:
                raise ValueError(
                    f"uncond has length {uncond.shape[1]} but text_embeddings have length "
                    f"{text_embeddings.shape[1]}; encode both with encode_prompt (same padding)."
                )
        if jnp.ndim(guidance) != 0:
            raise ValueError(f"guidance has shape {tuple(jnp.shape(guidance))}; expected a scalar, e.g. 7.5.")
        graphdef, params = nnx.split(self.unet)
        return SDEps(
            graphdef=graphdef,
            params=params,
            schedule=self.schedule,
            context=text_embeddings,
            uncond=uncond,
            guidance=jnp.asarray(guidance, jnp.float32),
            prediction_type=check_prediction_type(self.prediction_type),
        )

    def ddim_steps(self, nfe: int) -> np.ndarray:
        """diffusers' DDIMScheduler grid for this config (:func:`ddim_steps`), for ``steps=``."""
        return ddim_steps(self.scheduler_config, nfe)
