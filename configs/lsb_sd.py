"""Translate a folder of images with a text-conditioned diffusion model and two prompts:
LSB (the default), SDEdit, DDIB or OT-ALD at equal NFE (``jot.translate.text_runner``).

    python -m launch.main --mode=translate --config=configs/lsb_sd.py --config.model.path=SD15_FOLDER \
        --config.data.source=CATS --config.translate.source_prompt='a photo of a cat' \
        --config.translate.target_prompt='a photo of a dog' --workdir=runs/cat2dog

``--config.translate.method=lsb|sdedit|ddib|otald``; prompts may use textual-inversion tokens
learned with ``configs/textual_inversion.py`` (``--config.translate.textual_inversion="('runs/ti_cat',
'runs/ti_dog')"``: files or run folders). Defaults are the LSB paper's (SD 1.5 at 512 px, sigma 2.3,
t0 0.2, guidance 11, 8 NFE). The ``digits`` preset translates the thin test digits with the
``sd_dsm:digits`` model and the tokens ``<thin>`` / ``<thick>`` learned by textual inversion::

    python -m launch.main --config=configs/sd_dsm.py:digits --workdir=runs/sd_digits
    python -m launch.main --config=configs/textual_inversion.py:digits --config.model.workdir=runs/sd_digits \
        --workdir=runs/ti_thick
    python -m launch.main --config=configs/textual_inversion.py:digits --config.model.workdir=runs/sd_digits \
        --workdir=runs/ti_thin --config.textual_inversion.tokens="('<thin>',)" --config.textual_inversion.key=x
    python -m launch.main --mode=translate --config=configs/lsb_sd.py:digits --workdir=runs/lsb_digits
"""
import ml_collections

from configs import common
from jot.ot import maps
from jot.translate import lsb


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "sd_translate"
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.attention_kernel = "auto"  # auto (cuDNN fused attention on GPU for bf16/fp16, XLA otherwise) | xla | cudnn
    c.model.path = ""  # a diffusers Stable Diffusion folder
    c.model.workdir = ""  # or a finished sd_dsm run
    c.model.dtype = "float32"  # float32 | bfloat16 (diffusers folders)

    c.data = ml_collections.ConfigDict()
    c.data.name = "folder"  # folder | digits
    c.data.source = ""  # the images to translate
    c.data.target = ""  # target-domain images: OT-ALD's fit and the Frechet distance (optional otherwise)
    c.data.size = 512
    c.data.channels = 3
    c.data.resize = "crop"  # crop | none

    t = c.translate = ml_collections.ConfigDict()
    t.method = "lsb"  # lsb | sdedit | ddib | otald
    t.nfe = lsb.NFE  # UNet calls per image
    t.source_prompt = ""
    t.target_prompt = ""
    t.negative_prompt = ""  # prepended to the source prompt (guidance pushes away from both)
    t.textual_inversion = ()  # embedding files or textual-inversion run folders
    t.guidance = lsb.GUIDANCE  # all methods; 1 = none
    t.sigma = lsb.SIGMA  # LSB: the bridge noise scale (the reference's --tau, sqrt of the paper's tau)
    t.t0 = lsb.T0  # LSB: start time of the bridge
    t.snr_matching = True  # LSB ablation switches (paper Table 2)
    t.time_dependent_noise = True
    t.final_step = True
    t.final_to = lsb.FINAL_TO  # LSB: the final step's destination step (-1: clean)
    t.sdedit_start_step = -1.0  # SDEdit: -1 = the step of LSB's initial SNR (t0, sigma)
    t.end_step = -1.0  # DDIB / OT-ALD: inversion end step, -1 = S - 1
    t.clip = 0.0  # clip outputs to [-clip, clip]; 0 = off (pixel models always clip at 1)
    t.batch_size = 4  # images per batch (rounded up to a multiple of the devices)
    t.num_images = 0  # 0 = every image
    t.ot_map = maps.DEFAULT_LATENT_MAP  # OT-ALD latent map
    t.num_fit = 0  # OT-ALD: images per domain for the map; 0 = all
    t.progress = True
    c.mesh = common.mesh()

    if preset in (None, "", "default"):
        return c
    if preset == "digits":
        c.model.workdir = "runs/sd_digits"
        c.data = ml_collections.ConfigDict()
        c.data.name = "digits"
        c.data.size = 16
        c.data.thickness = 1.0
        c.data.split_seed = 0
        t.source_prompt = "a <thin> digit"
        t.target_prompt = "a <thick> digit"
        t.textual_inversion = ("runs/ti_thin", "runs/ti_thick")
        t.batch_size = 64
        return c
    raise ValueError(f"unknown preset {preset!r}; expected 'default' or 'digits'.")
