"""Translate thin -> thick digits with a ``dsm_digits`` model (SDEdit, DDIB or OT-ALD).

Two commands: train the domain-conditioned ``dsm`` model, then translate with it::

    python -m launch.main --config=configs/dsm_digits.py:cpu16 --workdir=runs/dsm_digits16
    python -m launch.main --config=configs/translate_digits.py:cpu16 --workdir=runs/translate16 \
        --mode=translate --config.translate.model_workdir=runs/dsm_digits16 \
        --config.translate.method=otald --config.translate.nfe=16

``translate.model_workdir`` is the training run's workdir (its ``checkpoints/`` are read); left
empty, the translate workdir itself must hold the trained model. The preset must be the one the
model was trained with (it carries the model config); ``:test`` pairs with ``dsm_digits.py:test``.
Writes ``translate_<method>.{npz,png,json}`` into the workdir (``jot.translate.runner``). The
full comparison table is ``benchmarks/translate_digits.py``.

OT-ALD's latent map (``translate.ot_map``): ``gaussian`` (default), the closed-form OT map
between Gaussians fitted (mean + shrunk covariance) to the source and target latents, on all
target training images (``num_fit = 0``). On the 16x16 benchmark it beat the entropic map
(a softmax average over fitted target latents, which pulls each latent towards *other*
images and loses the digit at NFE >= 16); see ``benchmarks/translate_digits.py`` for numbers.
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
    t.num_fit = 0  # training images per domain inverted to fit the OT-ALD map; 0 = all
    t.ot_map = "gaussian"  # gaussian | entropic | semidiscrete
    t.ot_epsilon = 0.01  # entropic: fraction of the mean cost; semidiscrete: soft-min temperature
    t.ot_shrinkage = 0.1  # gaussian: covariance shrinkage towards (tr S / d) I
    t.clip = 1.0  # clip x0_hat to [-1, 1] while sampling (pixels); 0 = off
    t.model_workdir = ""  # workdir of the trained dsm run; "" = the translate workdir
    if preset == "test":
        t.nfe = 4
        t.num_images = 8
        t.num_fit = 64
    return c
