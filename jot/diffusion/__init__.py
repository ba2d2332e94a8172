"""VP diffusion: schedules (``alpha_bar``, SNR, fractional steps and their inverse), jitted
``lax.scan`` samplers (DDIM, DDPM, DDIM inversion) and closed-form Gaussian oracles."""
from jot.diffusion import analytic, samplers, schedules
from jot.diffusion.samplers import add_noise, ddim_invert, ddim_sample, ddpm_sample
from jot.diffusion.schedules import Schedule

__all__ = ["Schedule", "add_noise", "analytic", "ddim_invert", "ddim_sample", "ddpm_sample", "samplers", "schedules"]
