"""Translate thin -> thick digits with a ``dsm_digits`` model (SDEdit, DDIB or OT-ALD).

    python -m launch.main --config=configs/dsm_digits.py:cpu16 --workdir=runs/dsm_digits16
    python -m launch.main --config=configs/translate_digits.py:cpu16 --workdir=runs/dsm_digits16 \
        --mode=translate --config.translate.method=otald --config.translate.nfe=16

The preset must be the one the model was trained with (it carries the model config). Writes
``translate_<method>.{npz,png,json}`` into the workdir. The full comparison table is
``benchmarks/translate_digits.py``.
"""
import ml_collections

from configs import dsm_digits


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    c = dsm_digits.get_config(preset)
    t = c.translate
    t.method = "otald"  # sdedit | ddib | otald
    t.nfe = 16  # model calls per image (ddib/otald: half inversion, half sampling)
    t.end_step = float(c.model.num_steps - 1)  # s_end of the inversion (ddib, otald)
    t.sdedit_start_step = 0.5 * (c.model.num_steps - 1)  # s0 of SDEdit
    t.num_images = 64
    t.num_fit = 512  # training images per domain inverted to fit the OT-ALD map
    t.ot_map = "entropic"  # entropic | semidiscrete
    t.ot_epsilon = 0.01  # entropic: fraction of the mean cost; semidiscrete: soft-min temperature
    t.clip = 1.0  # clip x0_hat to [-1, 1] while sampling (pixels); 0 = off
    t.checkpoint_dir = ""  # "" = the workdir
    if preset == "test":
        t.num_images = 8
        t.num_fit = 32
    return c
