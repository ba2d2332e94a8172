"""MLP networks for point clouds: DIOTM's time-conditioned value function and residual maps.

All modules act row by row on ``[batch, d]`` inputs (no batch statistics), which the
losses rely on for per-example gradients.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx


def sinusoidal_embedding(
    t: jax.Array, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0
) -> jax.Array:
    """Transformer-style embedding of scalar times ``t`` (shape ``[n]``) into ``[n, dim]``.

    ``[cos(w_k s t), sin(w_k s t)]`` with ``w_k = max_period^(-k / (dim/2))`` and ``s = scale``
    (1000 maps t in [0, 1] onto diffusion step indices). The largest time derivative of a
    feature is ``s``: keep ``s`` small where ``d_t`` of the network matters (the HJB residual).
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (scale * t.astype(jnp.float32))[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class MLP(nnx.Module):
    """``depth`` dense layers of ``width`` with SiLU between them, then a linear output."""

    def __init__(self, d_in: int, width: int, d_out: int, depth: int, *, rngs: nnx.Rngs):
        dims = [d_in] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.out = nnx.Linear(dims[-1], d_out, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        for layer in self.hidden:
            h = nnx.silu(layer(h))
        return self.out(h)


class Potential(nnx.Module):
    """Static potential ``v(x) -> [n]`` (OTM): an MLP with a scalar head."""

    def __init__(self, dim: int, *, width: int = 128, depth: int = 3, rngs: nnx.Rngs):
        self.net = MLP(dim, width, 1, depth, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.net(x.reshape(x.shape[0], -1))[:, 0]


class TimePotential(nnx.Module):
    """DIOTM value function ``V(t, x) -> [n]``.

    ``x`` goes through a two-layer MLP of ``width``; ``t`` through a sinusoidal embedding of
    ``time_dim`` and a two-layer MLP of ``width``; the two embeddings are summed and passed
    through a ``depth``-layer MLP with a scalar head; SiLU throughout (paper, App. B.1).
    """

    def __init__(
        self,
        dim: int,
        *,
        width: int = 128,
        time_dim: int = 128,
        depth: int = 3,
        time_scale: float = 1.0,
        rngs: nnx.Rngs,
    ):
        self.time_dim, self.time_scale = time_dim, time_scale
        self.x_embed = MLP(dim, width, width, 1, rngs=rngs)
        self.t_embed = MLP(time_dim, width, width, 1, rngs=rngs)
        self.head = MLP(width, width, 1, depth - 1, rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        h = self.x_embed(x.reshape(x.shape[0], -1)) + self.t_embed(
            sinusoidal_embedding(t, self.time_dim, scale=self.time_scale)
        )
        return self.head(nnx.silu(h))[:, 0]


class ResidualMap(nnx.Module):
    """Transport map ``T(x, z) = x + f([x, z])`` with ``f`` a residual MLP.

    ``f``: linear lift to ``width``, ``blocks`` pre-activation residual blocks
    (``h + W2 silu(W1 silu(h))``), linear projection back to ``dim``. ``z`` is optional
    auxiliary noise of size ``noise_dim`` (Choi et al. 2023); pass zeros at test time.
    The output layer starts at zero, so an untrained map is the identity.
    """

    def __init__(
        self, dim: int, *, width: int = 128, blocks: int = 3, noise_dim: int = 0, rngs: nnx.Rngs
    ):
        self.noise_dim = noise_dim
        self.lift = nnx.Linear(dim + noise_dim, width, rngs=rngs)
        self.blocks = nnx.List(
            [nnx.List([nnx.Linear(width, width, rngs=rngs), nnx.Linear(width, width, rngs=rngs)]) for _ in range(blocks)]
        )
        self.proj = nnx.Linear(
            width, dim, kernel_init=nnx.initializers.zeros_init(), rngs=rngs
        )

    def __call__(self, x: jax.Array, z: jax.Array | None = None) -> jax.Array:
        h = x
        if self.noise_dim:
            if z is None:
                z = jnp.zeros((x.shape[0], self.noise_dim), x.dtype)
            h = jnp.concatenate([x, z], axis=-1)
        h = self.lift(h)
        for first, second in self.blocks:
            h = h + second(nnx.silu(first(nnx.silu(h))))
        return x + self.proj(nnx.silu(h))
