"""Textual inversion: learn the embedding of a placeholder token from images, with a frozen
text-conditioned model.

    # a diffusers Stable Diffusion folder and a folder of images of the concept
    python -m launch.main --config=configs/textual_inversion.py --config.model.path=DIR \
        --config.data.source=FOLDER --config.textual_inversion.tokens='<cat>' --workdir=W
    # the offline digits: invert "<thick>" into the sd_dsm digits model
    python -m launch.main --config=configs/sd_dsm.py:digits --workdir=runs/sd_digits
    python -m launch.main --config=configs/textual_inversion.py:digits \
        --config.model.workdir=runs/sd_digits --workdir=runs/ti_thick

The run writes ``learned_embeds.safetensors`` (diffusers' ``load_textual_inversion`` reads it;
``jot.models.sd.textual_inversion.load_embeddings`` too) and ``metrics.json`` (held-out
denoising loss with the placeholder prompt and with ``reference_prompts``).
"""
import ml_collections

from configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "textual_inversion"
    c.seed = 0

    c.data = ml_collections.ConfigDict()  # the concept's images under key textual_inversion.key
    c.data.name = "folder"
    c.data.source = ""
    c.data.target = ""
    c.data.size = 512
    c.data.channels = 3

    c.model = ml_collections.ConfigDict()
    c.model.attention_kernel = "auto"  # auto (cuDNN fused attention on GPU for bf16/fp16, XLA otherwise) | xla | cudnn
    c.model.path = ""  # a diffusers Stable Diffusion folder
    c.model.workdir = ""  # or a finished sd_dsm run

    c.textual_inversion = ml_collections.ConfigDict()
    c.textual_inversion.tokens = ("<concept>",)
    c.textual_inversion.init_text = "a photo"
    c.textual_inversion.templates = ("a photo of a {}", "a rendering of a {}", "a cropped photo of the {}",
                                     "the photo of a {}", "a close-up photo of a {}", "a bright photo of the {}")
    c.textual_inversion.key = "x"  # the batch entry holding the images
    c.textual_inversion.reference_prompts = ()  # prompts whose held-out loss is reported next to the token's
    c.textual_inversion.num_samples = 0  # evaluation samples per prompt for the Frechet distance (0 = none)
    c.textual_inversion.sample_nfe = 50  # DDIM steps of those samples
    c.textual_inversion.guidance = 1.0  # classifier-free guidance scale of those samples (1 = none)

    c.train = common.train(steps=3_000, batch_size=8, lr=1e-4, ema=0.0, checkpoint_every=500)
    c.train.weight_decay = 1e-2  # AdamW
    c.train.b1, c.train.b2 = 0.9, 0.999
    c.mesh = common.mesh()

    if preset in (None, "", "default"):
        return c
    if preset in ("digits", "test"):
        c.data = ml_collections.ConfigDict()
        c.data.name = "digits"
        c.data.size = 16
        c.data.thickness = 1.0
        c.data.split_seed = 0
        c.textual_inversion.tokens = ("<thick>",)
        c.textual_inversion.init_text = "digit"
        c.textual_inversion.templates = ("a {} digit",)
        c.textual_inversion.key = "y"  # the thick digits
        c.textual_inversion.reference_prompts = ("a thick digit", "a thin digit")
        c.textual_inversion.num_samples = 150
        c.textual_inversion.sample_nfe = 20
        c.train.steps = 400
        c.train.batch_size = 32
        c.train.lr = 5e-3
        c.train.log_every = 50
        c.train.checkpoint_every = 200
        if preset == "test":
            c.train.steps = 3
            c.train.batch_size = 8
            c.train.log_every = 1
            c.train.checkpoint_every = 3
            c.textual_inversion.num_samples = 4
            c.textual_inversion.sample_nfe = 2
        return c
    raise ValueError(f"unknown preset {preset!r}; expected 'default', 'digits' or 'test'.")
