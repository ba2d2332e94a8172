"""Translate thin -> thick digits with a ``dsm_digits`` model (SDEdit, DDIB or OT-ALD).

Two commands: train the domain-conditioned ``dsm`` model, then translate with it::

    python -m launch.main --config=configs/dsm_digits.py:cpu16 --workdir=runs/dsm_digits16
    python -m launch.main --config=configs/translate_digits.py:cpu16 --workdir=runs/translate16 \
        --mode=translate --config.translate.model_workdir=runs/dsm_digits16 \
        --config.translate.method=otald --config.translate.nfe=16

``translate.model_workdir`` is the training run's workdir (its ``checkpoints/`` are read); left
empty, the translate workdir itself must hold the trained model. The model is read with
``jot.train.restore``, with the config recorded in that run's ``config.json``; this preset's
``data`` section gives the images to translate. ``:test`` pairs with ``dsm_digits.py:test``.
Writes ``translate_<method>.{npz,png,json}`` into the workdir (``jot.translate.runner``). The
full comparison table is ``benchmarks/translate_digits.py``.

OT-ALD's latent map (``translate.ot_map``) defaults to ``jot.ot.maps.DEFAULT_LATENT_MAP``
(``gaussian``: the closed-form OT map between Gaussians fitted, mean + covariance shrunk by
``ot_shrinkage``, to the source and target latents of all training images, ``num_fit = 0``). It
is affine, so each image keeps its own latent; the plain entropic map that ``entropic`` used to
be (a softmax average over fitted target latents) pulled latents towards *other* images. The
table below was measured with that plain entropic map (``ot_epsilon = 0.01`` of the mean cost),
before ``entropic`` became the debiased map of ``jot.ot.maps``. 16x16 benchmark
(``runs/dsm_digits16``, 361 test images, PSNR to the true thick twin / Frechet distance):

    NFE  s_end  DDIB          OT-ALD entropic (512, eps .01)   OT-ALD gaussian (all, shrink .05)
      4   999   10.28 / 2.63  9.41 / 2.49                      9.79 / 2.05
      4   500   14.64 / 1.48  15.44 / 0.43                     16.79 / 0.39
      8   999   15.03 / 1.47  15.22 / 0.45                     16.76 / 0.34
      8   500   18.08 / 0.83  16.58 / 0.25                     18.39 / 0.16
     16   999   18.43 / 0.55  14.69 / 0.31                     15.19 / 0.28
     16   500   18.53 / 0.72  14.75 / 0.32                     15.95 / 0.21
     50   999   19.13 / 0.25  13.09 / 0.44                     11.95 / 0.82
     50   500   18.61 / 0.80  13.49 / 0.40                     14.63 / 0.22

From NFE 16 on, the latents of this small model are far from Gaussian (the map only cuts latent
W2 from 1.36 to 1.17 at NFE 16) and DDIB keeps the better PSNR and class accuracy.
``entropic`` and ``semidiscrete`` remain selectable. The translate JSON reports the latent
mismatch on ``num_latent_eval`` held-out images next to its two-sample floor
(``heldout_*``, ``jot.translate.runner``).
"""
import ml_collections

from configs import dsm_digits
from jot.ot import maps
from jot.translate import lsb


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    c = dsm_digits.get_config(preset)
    t = c.translate
    t.method = "otald"  # lsb | sdedit | ddib | otald
    t.nfe = 16  # model calls per image (ddib/otald: half inversion, half sampling)
    t.end_step = float(c.model.num_steps - 1)  # s_end of the inversion (ddib, otald)
    t.sdedit_start_step = 0.5 * (c.model.num_steps - 1)  # s0 of SDEdit
    t.num_images = 64
    t.num_fit = 0  # training images per domain inverted to fit the OT-ALD map; 0 = all
    t.ot_map = maps.DEFAULT_LATENT_MAP  # gaussian | entropic | semidiscrete
    # entropic: 0 = eps from ot_neighbours, > 0 = fraction of the mean cost; semidiscrete: soft-min
    # temperature (0 = maps.SEMIDISCRETE_EPSILON)
    t.ot_epsilon = 0.0
    t.ot_neighbours = maps.DEFAULT_NEIGHBOURS  # entropic: effective number of fitted targets averaged
    t.ot_shrinkage = "auto"  # gaussian: covariance shrinkage towards the diagonal; "auto" = Ledoit-Wolf, or a number in [0, 1]
    t.clip = 1.0  # clip x0_hat to [-1, 1] while sampling (pixels); 0 = off
    t.model_workdir = ""  # workdir of the trained dsm run; "" = the translate workdir
    # LSB (jot.translate.lsb): conditions are the domain labels 0 -> 1. The paper's SD values
    # (sigma 2.3, w 11) do not carry over to this model; these are the choice of the "faithful"
    # rule of benchmarks/translate_digits.py on validation images of the training split (the "fd"
    # rule picks sigma 4, w 3: a better target fit that loses the digit half of the time).
    t.lsb_sigma = 1.0
    t.lsb_t0 = lsb.T0
    t.guidance = 1.0
    t.snr_matching = True
    t.time_dependent_noise = True
    t.final_step = True
    t.final_to = lsb.FINAL_TO
    t.num_latent_eval = 256  # otald: held-out target images (and half as many sources) for heldout_*; 0 = off
    if preset == "test":
        t.nfe = 4
        t.num_images = 8
        t.num_fit = 64
        t.num_latent_eval = 16
    return c
