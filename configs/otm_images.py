"""OTM image OT maps (the semi-dual baseline): a UNet map T and a convolutional potential v
with R1 (``configs/common_images.py`` has the fields and presets).

    python -m launch.main --config=configs/otm_images.py:digits --workdir=runs/otm_digits
"""
from configs import common_images


def get_config(preset: str | None = None):
    return common_images.apply_preset(common_images.base("otm"), preset)
