"""Inference-time translation built from pretrained diffusion models.

- ``sdedit``: noise to a step, denoise with the target model;
- ``ddib``: DDIM-invert with the source model, DDIM-sample with the target model;
- ``otald``: DDIB with an OT map between the two models' latent distributions;
- ``prior_ot``: an OT map from N(0, I) to the forward terminal law ``q_S`` (generation);
  the OT maps of both are ``jot.ot.maps`` (``maps.DEFAULT_LATENT_MAP`` by default);
- ``run``: the launcher's ``--mode=translate``.

Each translator is ``translate(x, rng, *, nfe, ...)``, jitted, with exactly ``nfe`` model calls.
"""
from jot.translate import ddib, otald, prior_ot, sdedit
from jot.translate.runner import run

__all__ = ["ddib", "otald", "prior_ot", "run", "sdedit"]
