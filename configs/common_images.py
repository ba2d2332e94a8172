"""Shared fields of the image OT map configs (``diotm_images.py``, ``otm_images.py``).

Maps are pixel UNets ``T(x, z) = x + UNet(x, z)`` (identity at initialisation) and potentials
are convolutional networks with a scalar head, time-conditioned for DIOTM
(``jot.models.image_ot``). The cost is per pixel, ``tau * mean((x - y)^2)``
(``loss.cost_reduce = "mean"``), so ``tau`` does not depend on the resolution.

Presets:

- ``digits`` (default): thin -> thick offline digits at 16x16 on CPU (``jot.data.digits``).
  The workdir ends with ``metrics.json`` (``psnr`` to the true twins, ``cost``, ``frechet`` to
  the twins in a fixed random feature space, ``frechet_source``), ``transport.npz`` and
  ``transport.png`` (rows: sources, maps, twins).
- ``test``: tiny networks on the digits, a few steps (the test suite).
- ``celeba64``, ``celeba128``: CelebA Male -> Female from a prepared ``tfds`` ``celeb_a``
  (``--config.data.data_dir``), or from two image folders
  (``--config.data.name=folder --config.data.source=MALE --config.data.target=FEMALE``).
  FID on the whole CelebA test set against the test targets, one sample per source.
- ``afhq64``: AFHQ Wild -> Cat from image folders (``--config.data.root=AFHQ`` holding
  ``train/wild``, ``train/cat``, ``val/wild``); FID of 10 samples per test source against the
  training cats.

The accelerator presets follow the paper's image settings where its text keeps them (Adam,
cosine learning-rate decay, EMA 0.9999 at 64px and 0.999 at 128px, batch 64 at 64px and 32 at
128px, 60k iterations); the numbers its text lost (learning rates, ``tau``, ``lambda``) are
choices, marked below. FID needs the Inception weights converted once to safetensors
(``--config.eval.fid_weights=PATH``, ``jot.metrics.fid``).
"""
import ml_collections

from configs import common

PRESETS = ("digits", "test", "celeba64", "celeba128", "afhq64")


def base(method: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.size = 16
    c.data.thickness = 1.0
    c.data.split_seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.kind = "unet"
    c.model.channels = 16  # the maps' UNet
    c.model.channel_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attention_resolutions = ()
    c.model.num_heads = 4
    c.model.num_groups = 8
    c.model.noise_dim = 0  # auxiliary noise z of the maps T(x, z); 0 = deterministic maps
    c.model.potential_channels = 16  # the potential's convolutional encoder
    c.model.potential_channel_mult = (1, 2, 2)
    c.model.potential_res_blocks = 1
    c.model.potential_attention_resolutions = ()
    # DIOTM's V(t, x): t in [0, 1] is embedded as time_scale * t, top frequency time_scale rad per unit
    # time, so V is smooth in t (the HJB residual holds d_t V)
    c.model.time_scale = 10.0

    c.loss = ml_collections.ConfigDict()
    c.loss.tau = 1.0  # cost tau * mean((x - y)^2) per pixel (choice)
    c.loss.cost_reduce = "mean"
    c.loss.regularizer = "hjb" if method == "diotm" else "r1"
    c.loss.reg_weight = 1.0 if method == "diotm" else 0.2  # (choice)
    c.loss.hjb_kind = "square"
    c.loss.time_sampler = "uniform"
    c.loss.beta_a = 1.0
    c.loss.beta_b = 1.0
    c.loss.k_t = 1

    c.train = common.train(
        steps=2_000, batch_size=32, lr_map=2e-4, lr_potential=2e-4, b1=0.0, b2=0.9,
        lr_schedule="cosine", lr_final_fraction=0.1, ema=0.999, log_every=100, checkpoint_every=1_000,
    )
    c.mesh = common.mesh()

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # images per jitted map call
    c.eval.map_noise = "sample"  # maps with noise_dim > 0: "sample" z ~ N(0, I) | "zero" z = 0
    c.eval.fid_weights = ""  # Inception weights (safetensors) for FID / KID; "" = no FID
    c.eval.fid_samples_per_source = 1  # maps with noise: samples T(x, z_k) per test source for FID
    c.eval.fid_batch_size = 64
    c.eval.paths = 0  # (point clouds only)
    return c


def apply_preset(c: ml_collections.ConfigDict, preset: str | None) -> ml_collections.ConfigDict:
    preset = preset or "digits"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}.")
    if preset == "digits":
        return c
    if preset == "test":
        c.model.channels = 8
        c.model.channel_mult = (1, 2)
        c.model.potential_channels = 8
        c.model.potential_channel_mult = (1, 2)
        c.model.num_groups = 4
        c.train.steps = 4
        c.train.batch_size = 16
        c.train.log_every = 2
        c.train.checkpoint_every = 2
        c.train.progress = False
        return c
    size = 128 if preset == "celeba128" else 64
    c.data = ml_collections.ConfigDict()
    c.data.size = size
    c.data.channels = 3
    if preset.startswith("celeba"):
        c.data.name = "tfds"
        c.data.tfds_name = "celeb_a"
        c.data.data_dir = ""
        c.data.attribute = "Male"
        c.data.source_has_attribute = True  # source = men, target = women
        c.data.num_eval = -1  # the whole test split (FID protocol: the CelebA test set)
        c.eval.fid_samples_per_source = 1
    else:
        c.data.name = "folder"
        c.data.source = "AFHQ/train/wild"
        c.data.target = "AFHQ/train/cat"
        c.data.source_eval = "AFHQ/val/wild"
        c.data.target_eval = "AFHQ/train/cat"  # FID protocol: against the training targets
        c.data.resize = "crop"
        c.data.num_eval = 0
        c.eval.fid_samples_per_source = 10
    c.model.channels = 128
    c.model.channel_mult = (1, 2, 2, 2) if size == 64 else (1, 1, 2, 2, 4)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (16,)
    c.model.num_groups = 32
    c.model.noise_dim = 100
    c.model.potential_channels = 64
    c.model.potential_channel_mult = (1, 2, 4, 8, 8) if size == 64 else (1, 2, 4, 8, 8, 8)
    c.model.potential_res_blocks = 1
    c.loss.tau = 1.0  # (choice)
    c.train.steps = 60_000
    c.train.batch_size = 64 if size == 64 else 32
    c.train.ema = 0.9999 if size == 64 else 0.999
    c.train.lr_map = 1e-4  # (choice)
    c.train.lr_potential = 1e-4  # (choice)
    c.train.log_every = 500
    c.train.checkpoint_every = 5_000
    c.eval.batch_size = 64
    return c
