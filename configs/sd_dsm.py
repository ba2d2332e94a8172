"""SD-DSM: a text-conditioned Stable Diffusion UNet trained from scratch, one prompt per domain.

    python -m launch.main --config=configs/sd_dsm.py:digits --workdir=runs/sd_digits

Presets: ``digits`` (default; 16x16 offline thin/thick digits with the prompts "a thin digit"
and "a thick digit", a small SD-architecture UNet with cross-attention and a small frozen
CLIP text encoder, pixel space; trains on 2 CPU cores in minutes) and ``test`` (tiny).
``--config.model.prediction_type=v_prediction`` trains the SD 2.x target;
``--config.loss.cond_dropout`` sets how often the empty prompt replaces a domain's prompt
(classifier-free guidance). Fine-tune Stable Diffusion on two image folders instead:

    python -m launch.main --config=configs/sd_dsm.py --config.model.path=DIR --config.data.name=folder \
        --config.data.source=THIN --config.data.target=THICK --config.data.size=512 --config.data.channels=3 \
        --config.data.prompts="('a photo of a cat', 'a photo of a dog')" --workdir=runs/sd_ft
"""
import ml_collections

from configs import common


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "sd_dsm"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.size = 16
    c.data.thickness = 1.0
    c.data.split_seed = 0
    c.data.prompts = ("a thin digit", "a thick digit")  # one per entry of loss.domains

    c.model = ml_collections.ConfigDict()
    c.model.attention_kernel = "auto"  # auto (cuDNN fused attention on GPU for bf16/fp16, XLA otherwise) | xla | cudnn
    # A diffusers Stable Diffusion folder to fine-tune (its UNet, VAE, text encoder, tokenizer,
    # schedule and prediction type replace the fields below); "" trains model.unet from scratch.
    c.model.path = ""
    c.model.schedule = "scaled_linear"  # SD's
    c.model.num_steps = 1000
    c.model.beta_start = 0.00085
    c.model.beta_end = 0.012
    c.model.prediction_type = "epsilon"  # epsilon | v_prediction
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    c.model.remat = False  # rematerialise UNet blocks in the backward pass
    c.model.unet = ml_collections.ConfigDict()
    c.model.unet.block_out_channels = (32, 64)
    c.model.unet.attention = (False, True)  # cross-attention to the prompt on these levels (16x16, 8x8)
    c.model.unet.layers_per_block = 1
    c.model.unet.heads = 4
    c.model.unet.norm_num_groups = 8
    c.model.text = ml_collections.ConfigDict()  # the frozen CLIP text encoder (random, from the seed)
    c.model.text.hidden_size = 32
    c.model.text.intermediate_size = 64
    c.model.text.layers = 2
    c.model.text.heads = 2
    c.model.text.max_length = 16  # tokens, with the start and end tokens (byte-level: one per character)

    c.loss = ml_collections.ConfigDict()
    c.loss.domains = ("x", "y")
    c.loss.cond_dropout = 0.1
    c.loss.snr_gamma = 0.0
    c.loss.continuous_steps = True

    c.train = common.train(steps=2_000, batch_size=32, lr=1e-3, grad_clip=1.0, checkpoint_every=500, ema=0.99,
                           lr_schedule="cosine", lr_final_fraction=0.05)  # batch_size is per domain
    c.mesh = common.mesh()

    if preset in (None, "", "digits"):
        return c
    if preset == "test":
        c.model.unet.block_out_channels = (8, 16)
        c.model.unet.heads = 2
        c.model.unet.norm_num_groups = 4
        c.model.text.hidden_size = 16
        c.model.text.intermediate_size = 16
        c.model.text.layers = 1
        c.train.steps = 4
        c.train.batch_size = 8
        c.train.checkpoint_every = 2
        c.train.log_every = 1
        return c
    raise ValueError(f"unknown preset {preset!r}; expected 'digits' or 'test'.")
