"""DSM: one pixel-space UNet for both digits domains (thin = label 0, thick = label 1).

    python -m launch.main --config=configs/dsm_digits.py --workdir=runs/dsm_digits
    python -m launch.main --config=configs/dsm_digits.py:cpu16 --workdir=runs/dsm_digits16

Presets: default (32x32, ADM-small UNet; a GPU run), ``cpu16`` (16x16 images, the UNet the
CPU benchmark ``benchmarks/translate_digits.py`` trains in a few minutes), ``test`` (tiny).
The trained workdir is what ``configs/translate_digits.py`` reads: translate with

    python -m launch.main --config=configs/translate_digits.py:cpu16 --workdir=runs/translate16 \
        --mode=translate --config.translate.model_workdir=runs/dsm_digits16

(same preset as training; ``--config.translate.method=ddib|sdedit|otald``, ``--config.translate.nfe=N``).
"""
import ml_collections

from configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "dsm"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.size = 32  # 8x8 digits upsampled to size x size
    c.data.thickness = 1.0  # grey-dilation radius of the thick domain, in original 8x8 pixels
    c.data.split_seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.schedule = "linear"  # linear | scaled_linear | cosine
    c.model.num_steps = 1000
    c.model.channels = 64
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (8,)
    c.model.num_classes = 2  # the domain label
    c.model.num_heads = 4
    c.model.num_groups = 8

    c.loss = ml_collections.ConfigDict()
    c.loss.domains = ("x", "y")  # batch entries trained on; their position is the domain label
    c.loss.cond = "domain"  # domain | label | none
    c.loss.snr_gamma = 0.0  # min-SNR-gamma weighting; 0 = off (the plain DDPM loss)
    c.loss.continuous_steps = True  # s ~ U[0, S-1] (the samplers use fractional steps)

    c.train = common.train(
        steps=50_000, batch_size=64, lr=2e-4, grad_clip=1.0, checkpoint_every=5_000
    )  # batch_size is per domain
    c.mesh = common.mesh()

    c.translate = ml_collections.ConfigDict()  # used by `transport` (DDIB thin -> thick)
    c.translate.nfe = 20
    c.translate.end_step = 999.0

    if preset in (None, "", "default"):
        return c
    if preset == "cpu16":
        c.data.size = 16
        c.model.channels = 16
        c.model.channel_mult = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = ()
        c.train.steps = 800
        c.train.batch_size = 16
        c.train.lr = 1e-3
        c.train.lr_schedule = "cosine"
        c.train.lr_final_fraction = 0.05
        c.train.ema = 0.99
        c.train.checkpoint_every = 400
        return c
    if preset == "test":
        c.data.size = 16
        c.model.num_steps = 100
        c.model.channels = 8
        c.model.channel_mult = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = (8,)
        c.model.num_heads = 2
        c.model.num_groups = 4
        c.train.steps = 4
        c.train.batch_size = 16
        c.train.log_every = 2
        c.train.checkpoint_every = 2
        c.train.progress = False
        c.translate.nfe = 4
        c.translate.end_step = 99.0
        return c
    raise ValueError(f"unknown preset {preset!r}; expected 'default', 'cpu16' or 'test'.")
