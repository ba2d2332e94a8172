"""jot: unpaired image-to-image translation with optimal transport and diffusion models."""
__version__ = "0.1.0"
