"""RDMD on the offline digits: thin -> thick in one network evaluation, distilled from a ``dsm``
teacher of both domains (domain-conditioned: the thick target is label 1).

    python -m launch.main --config=configs/dsm_digits.py:cpu16 --workdir=runs/dsm_digits16
    python -m launch.main --config=configs/rdmd_digits.py:cpu16 --workdir=runs/rdmd_digits16 \
        --config.teacher.workdir=runs/dsm_digits16 --config.loss.lam=0.5

Presets: ``cpu16`` (default; 16x16 digits, the ``dsm_digits.py:cpu16`` teacher), ``test`` (tiny,
with a ``dsm_digits.py:test`` teacher). The data fields must match the teacher's run (same
``size``, ``thickness``, ``split_seed``). The workdir ends with ``metrics.json`` (``cost``: mean
per-pixel ``(G(x) - x)^2``, ``psnr`` against the thick twins, ``frechet`` to them and
``frechet_source`` for reference) and ``transport.npz`` (``x``, ``Tx``, ``y``), the arrays
``benchmarks/rdmd.py`` scores beside the multi-step translators.
"""
import ml_collections

from configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    preset = preset or "cpu16"
    c = ml_collections.ConfigDict()
    c.method = "rdmd"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.size = 16  # as the teacher
    c.data.thickness = 1.0
    c.data.split_seed = 0

    c.teacher = ml_collections.ConfigDict()
    c.teacher.workdir = "runs/dsm_digits16"  # a finished dsm run on both digit domains
    c.teacher.label = 1  # the thick domain (dsm_digits: loss.domains=("x", "y"), cond="domain")

    c.model = ml_collections.ConfigDict()  # the generator; its architecture is the teacher's UNet
    c.model.init = "teacher"  # teacher | identity
    c.model.init_t = 0.3  # fixed step s* = init_t (S-1) of the generator's denoiser

    c.loss = ml_collections.ConfigDict()
    c.loss.lam = 0.5  # weight of the per-pixel transport cost mean((x - G(x))^2)
    c.loss.cost_reduce = "mean"  # surrogate and cost as per-pixel means: lam does not depend on resolution
    c.loss.k_fake = 2
    c.loss.time_weight = "dmd"
    c.loss.t_min = 0.02
    c.loss.t_max = 0.98

    c.train = common.train(steps=600, batch_size=16, lr_G=1e-4, lr_fake=2e-4, b1=0.0, b2=0.99, grad_clip=1.0,
                           ema=0.95, log_every=50, checkpoint_every=300)
    c.mesh = common.mesh()

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # images per jitted generator call at evaluation

    if preset == "cpu16":
        return c
    if preset == "test":
        c.teacher.workdir = ""  # the test's dsm_digits.py:test run
        c.train.steps = 2
        c.train.batch_size = 16
        c.train.log_every = 1
        c.train.checkpoint_every = 2
        c.train.progress = False
        return c
    raise ValueError(f"unknown preset {preset!r}; expected 'cpu16' or 'test'.")
