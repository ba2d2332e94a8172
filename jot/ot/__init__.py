"""Sample-based optimal transport.

- ``jot.ot.exact``: exact assignment, ``W2^2`` and the L2-to-OT metric (host, float64).
- ``jot.ot.sinkhorn``: ott-jax Sinkhorn couplings, entropic maps (jit-able).
- ``jot.ot.semidiscrete``: semi-discrete OT onto a finite target sample.
- ``jot.ot.maps``: OT maps between two clouds of latents fitted from samples (Gaussian / Bures,
  debiased entropic on ``jot.ot.sinkhorn``, semi-discrete), used by OT-ALD and prior-OT.

Held-out checks of a map in high dimension (sample ``W2^2`` next to its two-sample floor,
marginal and Bures ``W2^2``, variance ratio) are in ``jot.metrics.transport``.
"""
from jot.ot import exact, maps, semidiscrete, sinkhorn
from jot.ot.exact import assignment, l2_to_ot, w2_squared
from jot.ot.sinkhorn import coupling, entropic_map

__all__ = [
    "assignment", "coupling", "entropic_map", "exact", "l2_to_ot", "maps", "semidiscrete", "sinkhorn", "w2_squared",
]
