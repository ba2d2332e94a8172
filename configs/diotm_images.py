"""DIOTM image OT maps: UNet maps T and S, a time-conditioned convolutional value function V,
the HJB regulariser (``configs/common_images.py`` has the fields and presets).

    python -m launch.main --config=configs/diotm_images.py:digits --workdir=runs/diotm_digits
    python -m launch.main --config=configs/diotm_images.py:celeba64 --workdir=runs/diotm_celeba64 \
        --config.data.data_dir=TFDS_DIR --config.eval.fid_weights=inception_fid.safetensors
    python -m launch.main --config=configs/diotm_images.py:afhq64 --workdir=runs/diotm_afhq64 \
        --config.data.source=AFHQ/train/wild --config.data.target=AFHQ/train/cat \
        --config.data.source_eval=AFHQ/val/wild --config.data.target_eval=AFHQ/train/cat

Paper (60k iterations): FID CelebA Male -> Female 64px 5.27, 128px 7.40; AFHQ Wild -> Cat 64px
10.72 (OTM 6.42 / 7.55 / 12.42).
"""
from configs import common_images


def get_config(preset: str | None = None):
    return common_images.apply_preset(common_images.base("diotm"), preset)
