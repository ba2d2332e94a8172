"""Shared fields of the point-cloud OT configs (``otm_2d.py``, ``diotm_2d.py``)."""
import ml_collections

from configs import common

DATASETS = ("g8g", "g25g", "moon_spiral", "g_circles")


def base(method: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "g8g"  # g8g | g25g | moon_spiral | g_circles | gaussians | points
    c.data.source = ""  # name=points: "npz:/path/source.npz" ([n, d] under key "x")
    c.data.target = ""  # name=points: "npz:/path/target.npz"
    c.data.eval_size = 1000  # held-out points per side (paper: 1000)
    # Training batches: "host" (numpy; the stream of the README's 2D tables) | "device" (jax.random inside
    # the jitted step: no host batches; with train.steps_per_call, the fast setting on accelerators).
    c.data.sampler = "host"
    c.data.source_mean = (0.0, 0.0)  # name=gaussians
    c.data.source_std = 1.0
    c.data.target_mean = (4.0, 4.0)
    c.data.target_std = 1.0

    c.model = ml_collections.ConfigDict()
    c.model.width = 128
    c.model.map_blocks = 3  # residual blocks of T and S
    c.model.potential_depth = 3  # MLP layers after the (x, t) embeddings
    c.model.time_dim = 128  # sinusoidal embedding of t (DIOTM's V)
    c.model.time_scale = 1.0  # t is multiplied by this before the embedding (sets the top frequency)
    c.model.noise_dim = 0  # auxiliary noise input z of the maps T(x, z); 0 = deterministic maps

    c.loss = ml_collections.ConfigDict()
    c.loss.tau = 0.1  # cost c(x, y) = tau * ||x - y||^2
    c.loss.cost_reduce = "sum"  # "sum" over coordinates (points) | "mean" (images)
    c.loss.regularizer = "hjb"  # DIOTM: hjb | r1 | otm | none; OTM: r1 | none (jot.losses docstrings)
    c.loss.reg_weight = 1.0  # lambda
    c.loss.hjb_kind = "square"  # square | abs
    c.loss.time_sampler = "uniform"  # uniform | beta
    c.loss.beta_a = 1.0
    c.loss.beta_b = 1.0
    c.loss.k_t = 1  # map updates per potential update (each on a fresh batch)

    c.train = common.train(
        steps=4_000, batch_size=256, lr_map=1e-3, lr_potential=1e-3, b1=0.0, b2=0.9,
        lr_schedule="cosine", ema=0.99, log_every=250, checkpoint_every=2_000,
    )
    c.mesh = common.mesh()

    c.eval = ml_collections.ConfigDict()
    c.eval.paths = 24  # displacement arrows drawn in transport.png
    c.eval.map_noise = "sample"  # maps with noise_dim > 0: "sample" z ~ N(0, I) | "zero" z = 0
    return c


def apply_preset(c: ml_collections.ConfigDict, preset: str | None) -> ml_collections.ConfigDict:
    """``preset``: a dataset name, or ``test`` (tiny and fast, for the test suite)."""
    preset = preset or "g8g"
    if preset in DATASETS:
        c.data.name = preset
    elif preset == "test":
        c.data.name = "gaussians"
        c.data.eval_size = 256
        c.model.width = 32
        c.model.map_blocks = 1
        c.model.potential_depth = 2
        c.model.time_dim = 16
        c.train.steps = 20
        c.train.batch_size = 64
        c.train.log_every = 5
        c.train.checkpoint_every = 10
        c.train.progress = False
    else:
        raise ValueError(f"unknown preset {preset!r}; expected one of {DATASETS + ('test',)}.")
    return c
