"""RDMD (one-step regularised distribution matching distillation) on 2D points: N(0, I) -> 8 Gaussians.

Train the target-domain teacher first (a ``dsm`` run with the MLP noise predictor on the
8 Gaussians), then distil the one-step translator from it:

    python -m launch.main --config=configs/rdmd_2d.py:teacher --workdir=runs/rdmd_2d_teacher
    python -m launch.main --config=configs/rdmd_2d.py --workdir=runs/rdmd_2d \
        --config.teacher.workdir=runs/rdmd_2d_teacher --config.loss.lam=0.05

Presets: ``g8g`` (default, RDMD), ``teacher`` (the dsm teacher for it), ``test`` and
``teacher_test`` (tiny, for the test suite: N(0, I) -> N((4, 4), 1)). The RDMD workdir ends with
``metrics.json`` (``w2``, ``l2_to_ot`` on 1000 held-out points with exact OT, and the transport
``cost`` mean ||x - G(x)||^2), ``transport.npz`` and ``transport.png``, as the OT methods;
``benchmarks/rdmd.py`` sweeps ``loss.lam``.
"""
import ml_collections

from configs import common


def _data(c: ml_collections.ConfigDict, name: str) -> None:
    c.data = ml_collections.ConfigDict()
    c.data.name = name  # g8g | gaussians | any jot.data.toy dataset
    c.data.source = ""
    c.data.target = ""
    c.data.eval_size = 1000
    c.data.source_mean = (0.0, 0.0)  # name=gaussians
    c.data.source_std = 1.0
    c.data.target_mean = (4.0, 4.0)
    c.data.target_std = 1.0


def teacher(preset: str = "teacher") -> ml_collections.ConfigDict:
    """A ``dsm`` run on the target points only (``loss.domains=("y",)``), unconditional, with the
    MLP noise predictor (``model.kind="mlp"``)."""
    c = ml_collections.ConfigDict()
    c.method = "dsm"
    c.seed = 0
    _data(c, "g8g")
    c.model = ml_collections.ConfigDict()
    c.model.kind = "mlp"
    c.model.schedule = "linear"
    c.model.num_steps = 1000
    c.model.width = 256
    c.model.blocks = 3
    c.model.time_dim = 64
    c.model.num_classes = 0
    c.loss = ml_collections.ConfigDict()
    c.loss.domains = ("y",)
    c.loss.cond = "none"
    c.loss.snr_gamma = 0.0
    c.loss.continuous_steps = True
    c.train = common.train(steps=8_000, batch_size=512, lr=1e-3, lr_schedule="cosine", lr_final_fraction=0.05,
                           ema=0.999, log_every=500, checkpoint_every=4_000)
    c.mesh = common.mesh()
    if preset == "teacher_test":
        c.data.name = "gaussians"
        c.data.eval_size = 256
        c.model.num_steps = 100
        c.model.width = 32
        c.model.blocks = 1
        c.model.time_dim = 16
        c.train.steps = 4
        c.train.batch_size = 64
        c.train.ema = 0.0
        c.train.log_every = 2
        c.train.checkpoint_every = 4
        c.train.progress = False
    return c


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    preset = preset or "g8g"
    if preset in ("teacher", "teacher_test"):
        return teacher(preset)
    c = ml_collections.ConfigDict()
    c.method = "rdmd"
    c.seed = 0
    _data(c, "g8g")

    c.teacher = ml_collections.ConfigDict()
    c.teacher.workdir = "runs/rdmd_2d_teacher"  # a finished dsm run of the target (preset "teacher")
    c.teacher.label = -1  # target class of a conditioned teacher; -1 = unconditional

    c.model = ml_collections.ConfigDict()  # the generator; its architecture is the teacher's
    c.model.init = "teacher"  # teacher: the teacher's denoiser at step init_t (S-1) | identity
    c.model.init_t = 0.3  # the generator's fixed step, as a fraction of the schedule

    c.loss = ml_collections.ConfigDict()
    c.loss.lam = 0.05  # lambda, the weight of the transport cost c(x, G(x)) = ||x - G(x)||^2
    c.loss.cost_reduce = "sum"  # sum over coordinates (points) | mean (images)
    c.loss.k_fake = 5  # fake-model updates per generator update (each on a fresh batch)
    c.loss.time_weight = "dmd"  # dmd (normalised as in DMD) | kl (w = snr) | x0 (w = 1)
    c.loss.t_min = 0.02  # the generator's diffusion steps s ~ U[t_min, t_max] (S-1)
    c.loss.t_max = 0.98

    c.train = common.train(steps=3_000, batch_size=256, lr_G=1e-4, lr_fake=1e-3, b1=0.0, b2=0.99,
                           ema=0.99, log_every=250, checkpoint_every=1_000)
    c.mesh = common.mesh()

    c.eval = ml_collections.ConfigDict()
    c.eval.paths = 24  # displacement arrows drawn in transport.png

    if preset == "g8g":
        return c
    if preset == "test":
        c.data.name = "gaussians"
        c.data.eval_size = 256
        c.teacher.workdir = ""  # the test's teacher_test run
        c.loss.k_fake = 2
        c.train.steps = 6
        c.train.batch_size = 64
        c.train.lr_G = 1e-3
        c.train.log_every = 2
        c.train.checkpoint_every = 3
        c.train.progress = False
        return c
    raise ValueError(f"unknown preset {preset!r}; expected 'g8g', 'teacher', 'test' or 'teacher_test'.")
