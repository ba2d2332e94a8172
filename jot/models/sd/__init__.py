"""Stable Diffusion 1.x / 2.x in Flax NNX: UNet, VAE, CLIP text encoder, tokenizer, schedule.

Load a local diffusers-format folder (as ``DiffusionPipeline.save_pretrained``
writes it, e.g. a copy of stable-diffusion-v1-5)::

    from jot.models import sd
    pipe = sd.load("/data/stable-diffusion-v1-5", dtype=jnp.bfloat16)
    text = pipe.encode_prompt(["a photo of a cat"])     # [1, 77, 768] (tokenizer + text encoder)
    latents = pipe.encode(images)                       # NHWC, scaled by vae scaling_factor
    eps_fn = pipe.eps_fn(text, uncond=pipe.encode_prompt([""]), guidance=7.5)
    latents = ddim_sample(eps_fn, noise, schedule=pipe.schedule, steps=pipe.ddim_steps(50))
    images = pipe.decode(latents)                       # NHWC in about [-1, 1]

``pipe.schedule`` is a ``jot.diffusion.schedules.Schedule`` (diffusers timesteps are jot
steps); ``pipe.eps_fn`` returns epsilon for "epsilon" and "v_prediction" UNets alike
(``pipe.prediction_type``). See ``jot.models.sd.pipeline``.

Weights are read from safetensors only; nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
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
from jot.models.sd.clip import initial_embeddings
from jot.models.sd.layers import (
    ATTENTION_IMPLEMENTATIONS,
    AttentionChunk,
    AttentionImplementation,
    check_attention,
)
from jot.models.sd.pipeline import (
    PREDICTION_TYPES,
    SDEps,
    StableDiffusion,
    check_prediction_type,
    ddim_steps,
    schedule_from_config,
)
from jot.sharding import param_shardings, shard_params
from jot.models.sd.unet import UNet2DConditionModel, UNetConfig
from jot.models.sd.vae import AutoencoderKL, VAEConfig

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "AutoencoderKL",
    "CLIPTextConfig",
    "CLIPTextModel",
    "CLIPTokenizer",
    "PREDICTION_TYPES",
    "SDEps",
    "SafetensorsFiles",
    "StableDiffusion",
    "UNet2DConditionModel",
    "UNetConfig",
    "VAEConfig",
    "check_attention",
    "check_prediction_type",
    "convert_state_dict",
    "ddim_steps",
    "find_weights",
    "initial_embeddings",
    "load",
    "load_module",
    "param_shardings",
    "read_safetensors",
    "read_weights",
    "schedule_from_config",
    "shard_params",
]


# subfolder -> (what belongs there, weights file stem)
_NETWORKS: dict[str, tuple[str, str]] = {
    "unet": ("the UNet2DConditionModel (config.json + diffusion_pytorch_model.safetensors)", "diffusion_pytorch_model"),
    "vae": ("the AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)", "diffusion_pytorch_model"),
    "text_encoder": ("the CLIPTextModel (config.json + model.safetensors)", "model"),
}


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
    attention: AttentionImplementation = "auto",
    textual_inversion: Sequence[str | Path] = (),
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
      attention: attention kernel of the UNet and VAE: "auto" (default) uses cuDNN flash
        attention on a CUDA GPU for bfloat16/float16 models and XLA otherwise (on CPU the
        blocked path of ``attention_chunk``); "xla" always uses XLA; "cudnn" uses cuDNN for
        every attention whose head size it takes (SD 1.x/2.x UNet heads on H100; not the
        VAE's 512-wide head), casting float32 projections to bfloat16, and needs a CUDA GPU.
        See :func:`jot.models.sd.layers.resolve_attention`.
      textual_inversion: ``learned_embeds.safetensors`` files (diffusers' format) whose tokens
        are added to the tokenizer; ``encode_prompt`` then reads their rows.
    Raises:
      FileNotFoundError naming the missing file or folder and what belongs there;
      ValueError for pickled-only, corrupt or mismatched weights, for a scheduler config
      with an unsupported beta schedule or prediction_type, and for an unknown ``attention``.
    """
    check_attention(attention)
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
            c, remat=remat, attention_chunk=attention_chunk, attention=attention, rngs=nnx.Rngs(0), **kw
        ),
        "vae": lambda c: AutoencoderKL(
            c, attention_chunk=attention_chunk, attention=attention, rngs=nnx.Rngs(0), **kw
        ),
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
    schedule = schedule_from_config(scheduler_config)
    prediction_type = check_prediction_type(scheduler_config.get("prediction_type", "epsilon"))
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
        prediction_type=prediction_type,
    ).with_textual_inversion(list(textual_inversion))
