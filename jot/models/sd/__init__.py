"""Stable Diffusion 1.x / 2.x in Flax NNX: UNet, VAE, CLIP text encoder, tokenizer, schedule.

Load a local diffusers-format folder (as ``DiffusionPipeline.save_pretrained``
writes it, e.g. a copy of stable-diffusion-v1-5)::

    from jot.models import sd
    pipe = sd.load("/data/stable-diffusion-v1-5", dtype=jnp.bfloat16)
    ids = pipe.tokenizer(["a photo of a cat"])          # [1, 77] int32
    text = pipe.text_encoder(ids)                       # [1, 77, 768]
    latents = pipe.vae.encode(images)                   # scaled by vae scaling_factor
    eps = pipe.unet(latents, t, text)                   # NHWC
    alpha_bar = pipe.schedule                           # [num_train_timesteps]

Weights are read from safetensors only; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.typing import DTypeLike

from jot.models.sd.clip import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from jot.models.sd.convert import (
    SafetensorsFiles,
    convert_state_dict,
    find_weights,
    load_module,
    read_safetensors,
    read_weights,
)
from jot.models.sd.layers import AttentionChunk
from jot.sharding import param_shardings, shard_params
from jot.models.sd.unet import UNet2DConditionModel, UNetConfig
from jot.models.sd.vae import AutoencoderKL, VAEConfig

__all__ = [
    "AutoencoderKL",
    "CLIPTextConfig",
    "CLIPTextModel",
    "CLIPTokenizer",
    "SafetensorsFiles",
    "StableDiffusion",
    "UNet2DConditionModel",
    "UNetConfig",
    "VAEConfig",
    "alpha_bar_from_config",
    "convert_state_dict",
    "find_weights",
    "load",
    "load_module",
    "param_shardings",
    "read_safetensors",
    "read_weights",
    "shard_params",
]


@dataclasses.dataclass
class StableDiffusion:
    """The parts of a loaded pipeline.

    Attributes:
      unet, vae, text_encoder: Flax NNX modules holding the converted weights.
      tokenizer: prompt -> ids [N, 77].
      scheduler_config: the parsed ``scheduler/scheduler_config.json``.
      schedule: VP ``alpha_bar`` [num_train_timesteps] (float64) from that config.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict[str, Any]
    schedule: np.ndarray


# subfolder -> (what belongs there, weights file stem)
_NETWORKS: dict[str, tuple[str, str]] = {
    "unet": ("the UNet2DConditionModel (config.json + diffusion_pytorch_model.safetensors)", "diffusion_pytorch_model"),
    "vae": ("the AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)", "diffusion_pytorch_model"),
    "text_encoder": ("the CLIPTextModel (config.json + model.safetensors)", "model"),
}


def alpha_bar_from_config(config: dict[str, Any]) -> np.ndarray:
    """``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` for a diffusers DDPM/DDIM/PNDM scheduler config.

    ``beta_schedule`` "scaled_linear" (SD): ``betas = linspace(sqrt(beta_start), sqrt(beta_end), n) ** 2``;
    "linear": ``linspace(beta_start, beta_end, n)``. Raises ValueError for anything else.
    """
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        raise ValueError(
            "scheduler_config sets trained_betas; only beta_schedule 'linear'/'scaled_linear' is supported."
        )
    if kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    else:
        raise ValueError(
            f"scheduler_config beta_schedule={kind!r} is not supported; expected 'scaled_linear' or 'linear'."
        )
    return np.cumprod(1.0 - betas)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"expected {what} at {path}, but it does not exist.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); expected {what}.") from e


def _subfolder(root: Path, name: str, what: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Stable Diffusion folder {root} has no {name}/ subfolder; expected {what} there "
            "(the layout DiffusionPipeline.save_pretrained writes)."
        )
    return folder


def load(
    path: str | Path,
    dtype: DTypeLike = jnp.float32,
    *,
    param_dtype: DTypeLike | None = None,
    variant: str | None = None,
    mesh: Mesh | None = None,
    remat: bool = False,
    attention_chunk: AttentionChunk = "auto",
) -> StableDiffusion:
    """Load a diffusers-format Stable Diffusion 1.x/2.x folder.

    Args:
      path: folder with ``model_index.json`` and ``unet/``, ``vae/``, ``text_encoder/``,
        ``tokenizer/``, ``scheduler/`` subfolders.
      dtype: compute dtype of the three networks (float32 or bfloat16).
      param_dtype: storage dtype of the parameters (defaults to ``dtype``).
      variant: weights variant, e.g. "fp16" reads ``diffusion_pytorch_model.fp16.safetensors``.
      mesh: if given, parameters are placed sharded over its ``fsdp`` axis as they load.
      remat: rematerialise UNet blocks in the backward pass (for fine-tuning).
      attention_chunk: attention over long sequences (UNet and VAE) in query blocks, one
        batch element and head at a time: "auto" (default) on CPU when
        ``queries * keys`` exceeds 2**19 (SD's 64x64-latent self-attention), never on
        GPU/TPU; an int sets that score budget on any backend; None never chunks.
        Same results up to float rounding, less memory and (on CPU) faster.
    Raises:
      FileNotFoundError naming the missing file or folder and what belongs there;
      ValueError for pickled-only, corrupt or mismatched weights.
    """
    root = Path(path)
    _read_json(root / "model_index.json", "model_index.json of a diffusers pipeline")
    param_dtype = dtype if param_dtype is None else param_dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    parsers = {
        "unet": UNetConfig.from_diffusers,
        "vae": VAEConfig.from_diffusers,
        "text_encoder": CLIPTextConfig.from_transformers,
    }
    builders = {
        "unet": lambda c: UNet2DConditionModel(
            c, remat=remat, attention_chunk=attention_chunk, rngs=nnx.Rngs(0), **kw
        ),
        "vae": lambda c: AutoencoderKL(c, attention_chunk=attention_chunk, rngs=nnx.Rngs(0), **kw),
        "text_encoder": lambda c: CLIPTextModel(c, rngs=nnx.Rngs(0), **kw),
    }
    # Check every folder, config and file first, so a broken download fails before minutes of loading.
    found: dict[str, tuple[Path, Any, list[Path]]] = {}
    for name, (what, stem) in _NETWORKS.items():
        folder = _subfolder(root, name, what)
        config = parsers[name](_read_json(folder / "config.json", f"the {what} config.json"))
        found[name] = (folder, config, find_weights(folder, stem, variant=variant))
    tokenizer_dir = _subfolder(root, "tokenizer", "the CLIP tokenizer (vocab.json + merges.txt or tokenizer.json)")
    scheduler_dir = _subfolder(root, "scheduler", "scheduler_config.json")
    scheduler_config = _read_json(scheduler_dir / "scheduler_config.json", "the scheduler config")
    schedule = alpha_bar_from_config(scheduler_config)
    tokenizer = CLIPTokenizer.from_dir(tokenizer_dir)

    networks: dict[str, Any] = {}
    for name, (folder, config, files) in found.items():
        networks[name] = load_module(
            functools.partial(builders[name], config), SafetensorsFiles(files), source=str(folder), mesh=mesh
        )
    max_positions = networks["text_encoder"].config.max_position_embeddings
    if tokenizer.model_max_length > max_positions:
        tokenizer = CLIPTokenizer.from_dir(tokenizer_dir, model_max_length=max_positions)
    return StableDiffusion(
        unet=networks["unet"],
        vae=networks["vae"],
        text_encoder=networks["text_encoder"],
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        schedule=schedule,
    )
