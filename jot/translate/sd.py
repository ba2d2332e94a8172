"""Translation with a text-conditioned diffusion model: two prompts name the domains.

The model is a ``jot.models.sd.StableDiffusion`` (``sd.load(folder)``, a diffusers Stable
Diffusion folder, or ``jot.methods.sd_dsm.pipeline`` of a trained ``sd_dsm`` run, possibly in
pixel space); the prompts may use textual-inversion tokens (``pipe.with_textual_inversion``).
Images are encoded (VAE latents, or the pixels), translated by one of

- ``lsb``: ``jot.translate.lsb`` with the source and target prompt embeddings as the two
  conditions (one batched UNet call per Euler step, guidance on the predictor difference);
- ``sdedit``: noise to ``sdedit_start_step`` (default: the step of LSB's initial SNR,
  ``bridge.snr_matched_step(t0)``, as the LSB paper sets it) and DDIM down with the target prompt;
- ``ddib``: DDIM-invert with the source prompt (``nfe // 2`` calls), DDIM-sample with the target
  prompt (the rest) from ``end_step`` (default ``S - 1``);
- ``otald``: DDIB whose latents pass through an OT map fitted on inverted source and target
  images (``Translator.fit_otald``),

and decoded. Every method makes ``nfe`` UNet calls per image. Guidance: the same scale
``guidance`` for all; SDEdit and DDIB/OT-ALD sampling use classifier-free guidance with the
*source* prompt as the unconditional branch, ``eps_src + w (eps_tgt - eps_src)`` (a call on
``2B`` inputs), which is the direction LSB's guided predictor difference takes; DDIB inverts
without guidance (``B`` inputs). ``negative_prompt``, if given, is prepended to the source
prompt, so guidance also pushes away from it (LSB's reference prepends "ugly, blurry, black,
low res, unrealistic").
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jot.diffusion import bridge, samplers
from jot.ot import maps
from jot.translate import ddib, lsb, otald, sdedit

METHODS = ("lsb", "sdedit", "ddib", "otald")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run: ``method`` (one of ``METHODS``) with ``nfe`` UNet calls per image and
    guidance scale ``guidance``; LSB's ``sigma``, ``t0`` and switches (``jot.translate.lsb``);
    SDEdit's ``sdedit_start_step`` (None: LSB's initial SNR); DDIB/OT-ALD's ``end_step``
    (None: ``S - 1``); ``clip`` clips outputs (pixel models: 1.0; None: off)."""

    method: str = "lsb"
    nfe: int = lsb.NFE
    guidance: float = lsb.GUIDANCE
    sigma: float = lsb.SIGMA
    t0: float = lsb.T0
    snr_matching: bool = True
    time_dependent_noise: bool = True
    final_step: bool = True
    final_to: float = lsb.FINAL_TO
    sdedit_start_step: float | None = None
    end_step: float | None = None
    clip: float | None = None

    def check(self) -> "Settings":
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; expected one of {list(METHODS)}.")
        if self.method == "lsb":
            lsb.check(nfe=self.nfe, sigma=self.sigma, t0=self.t0, final_step=self.final_step)
        else:
            samplers.check_nfe(self.nfe, minimum=2 if self.method in ("ddib", "otald") else 1)
        return self


class Translator:
    """``translator(images, rng) -> images`` for one model, one pair of prompts and ``Settings``.

    ``images`` are NHWC in ``[-1, 1]`` at the model's resolution. The prompt embeddings are
    computed once; each call runs encode, the method's jitted sampler and decode. OT-ALD needs
    ``fit_otald`` first.
    """

    def __init__(self, pipe: Any, source_prompt: str, target_prompt: str, settings: Settings = Settings(), *,
                 negative_prompt: str = ""):
        self.pipe, self.settings = pipe, settings.check()
        source = f"{negative_prompt}, {source_prompt}" if negative_prompt else source_prompt
        self.cond_source = pipe.encode_prompt([source])
        self.cond_target = pipe.encode_prompt([target_prompt])
        schedule = pipe.schedule
        self.top = float(schedule.num_steps - 1)
        w = settings.guidance
        self.eps = pipe.eps_fn(self.cond_target)  # no guidance: LSB conditions each call itself
        self.eps_source = pipe.eps_fn(self.cond_source)
        self.eps_target = pipe.eps_fn(self.cond_target, uncond=self.cond_source, guidance=w) if w != 1.0 else self.eps
        self.latent_map = None

    @property
    def start_step(self) -> float:
        """SDEdit's start step: ``sdedit_start_step``, or the step of LSB's initial SNR."""
        s = self.settings
        if s.sdedit_start_step is not None:
            return float(s.sdedit_start_step)
        return float(bridge.snr_matched_step(self.pipe.schedule, s.t0, sigma=s.sigma))

    @property
    def end_step(self) -> float:
        return self.top if self.settings.end_step is None else float(self.settings.end_step)

    def latents(self, images: jax.Array) -> jax.Array:
        return self.pipe.encode(jnp.asarray(images))

    def fit_otald(self, source_images: jax.Array, target_images: jax.Array, *, method: str = maps.DEFAULT_LATENT_MAP,
                  **map_options: Any) -> dict:
        """Fits OT-ALD's latent map on images of both domains (inverted as at translation time,
        ``jot.translate.otald.fit``); returns ``{"fit_images": (n_source, n_target)}``."""
        s = self.settings
        self.latent_map, _, _ = otald.fit(
            self.latents(source_images), self.latents(target_images), eps_source=self.eps_source,
            eps_target=self.eps_target, schedule=self.pipe.schedule, nfe=s.nfe, end_step=self.end_step, method=method,
            **map_options)
        return {"fit_images": [len(source_images), len(target_images)]}

    def translate_latents(self, z: jax.Array, rng: jax.Array) -> jax.Array:
        """The method on encoded images ``z`` (``nfe`` UNet calls per image)."""
        s, sched = self.settings, self.pipe.schedule
        if s.method == "lsb":
            return lsb.translate(z, rng, nfe=s.nfe, schedule=sched, eps_fn=self.eps, cond_source=self.cond_source,
                                 cond_target=self.cond_target, sigma=s.sigma, t0=s.t0, guidance=s.guidance,
                                 snr_matching=s.snr_matching, time_dependent_noise=s.time_dependent_noise,
                                 final_step=s.final_step, final_to=s.final_to, clip=s.clip)
        if s.method == "sdedit":
            return sdedit.translate(z, rng, nfe=s.nfe, schedule=sched, eps_target=self.eps_target,
                                    start_step=self.start_step, clip=s.clip)
        if s.method == "ddib":
            return ddib.translate(z, None, nfe=s.nfe, schedule=sched, eps_source=self.eps_source,
                                  eps_target=self.eps_target, end_step=self.end_step, clip=s.clip)
        if self.latent_map is None:
            raise ValueError("method='otald' needs its latent map: call fit_otald(source_images, target_images) first.")
        return otald.translate(z, None, nfe=s.nfe, schedule=sched, eps_source=self.eps_source,
                               eps_target=self.eps_target, latent_map=self.latent_map, end_step=self.end_step,
                               clip=s.clip)

    def __call__(self, images: jax.Array, rng: jax.Array) -> jax.Array:
        out = self.pipe.decode(self.translate_latents(self.latents(images), rng))
        return out if self.pipe.vae is None else jnp.clip(out, -1.0, 1.0)
