"""Inference-time translation built from pretrained diffusion models.

- ``lsb``: the Latent Schrodinger Bridge ODE, one conditional model with a source and a target
  condition (domain labels or prompts);
- ``sdedit``: noise to a step, denoise with the target model;
- ``ddib``: DDIM-invert with the source model, DDIM-sample with the target model;
- ``otald``: DDIB with an OT map between the two models' latent distributions;
- ``prior_ot``: an OT map from N(0, I) to the forward terminal law ``q_S`` (generation);
  the OT maps of both are ``jot.ot.maps`` (``maps.DEFAULT_LATENT_MAP`` by default);
- ``sd``: all four with a text-conditioned model (Stable Diffusion) and two prompts;
- ``run``: the launcher's ``--mode=translate`` (``runner``; prompts: ``text_runner``).

Each translator is ``translate(x, rng, *, nfe, ...)``, jitted, with exactly ``nfe`` model calls.
"""
from jot.translate import ddib, lsb, otald, prior_ot, sd, sdedit
from jot.translate.runner import run

__all__ = ["ddib", "lsb", "otald", "prior_ot", "run", "sd", "sdedit"]
