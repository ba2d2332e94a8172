"""``launch.main --mode=translate`` with a text-conditioned model and two prompts (``configs/lsb_sd.py``).

The model is ``config.model.path`` (a diffusers Stable Diffusion folder) or ``config.model.workdir``
(a finished ``sd_dsm`` run); ``translate.textual_inversion`` lists embedding files (or folders of
textual-inversion runs) whose tokens the prompts may use. The images are the files of the folder
``data.source`` (``data.name = "folder"``; ``data.size``, ``data.channels``, ``data.resize`` as for
training) or the thin test digits (``data.name = "digits"``). ``translate.method`` (lsb | sdedit |
ddib | otald, ``jot.translate.sd``) runs with ``translate.nfe`` UNet calls per image in batches of
``translate.batch_size`` (rounded up to a multiple of the devices; the batch is split over them,
the last batch padded), one random key per batch (``seed`` folded with the batch index).

Writes into the workdir, each file atomically:

- ``translated/<name>.png``: one image per input (``<name>``: the input's path under
  ``data.source`` without extension, ``/`` replaced by ``__``; digits: ``digit_<i>``);
- ``translate_<method>.png``: the first (up to) 16 inputs above their translations;
- ``translate_<method>.json``: the settings, prompts, model, image count, UNet calls and UNet
  inputs per image, ``compile_seconds`` (the first batch), ``seconds_per_image`` (the other
  batches, or the first one again when there is only one), and, when target images exist
  (``data.target`` or the thick digits), ``frechet`` (``jot.metrics.frechet``, to the target
  images) next to ``frechet_floor`` (the same distance for a second set of target images of the
  same size, when there are enough); digits also get ``psnr`` to the true thick twins.

OT-ALD fits its latent map first on ``translate.num_fit`` images of each domain (``data.source``
and ``data.target``; digits: the training split), inverted as at translation time.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import ml_collections
import numpy as np

from jot import files, sharding
from jot.errors import UserError
from jot.metrics import frechet, image
from jot.translate import sd as sd_translate
from jot.translate.runner import grid_png


def settings(config: ml_collections.ConfigDict) -> sd_translate.Settings:
    """``jot.translate.sd.Settings`` from ``config.translate`` (negative steps mean "default")."""
    t = config.translate
    start, end = float(t.sdedit_start_step), float(t.end_step)
    try:
        return sd_translate.Settings(
            method=t.method, nfe=t.nfe, guidance=float(t.guidance), sigma=float(t.sigma), t0=float(t.t0),
            snr_matching=bool(t.snr_matching), time_dependent_noise=bool(t.time_dependent_noise),
            final_step=bool(t.final_step), final_to=float(t.final_to), sdedit_start_step=None if start < 0 else start,
            end_step=None if end < 0 else end, clip=float(t.clip) if t.clip else None,
        ).check()
    except ValueError as e:
        raise UserError(f"config.translate: {e}") from e


def load_model(config: ml_collections.ConfigDict):
    """The ``StableDiffusion`` of ``config.model`` with ``translate.textual_inversion`` added."""
    import jax.numpy as jnp

    from jot import train
    from jot.models import sd

    m, ti = config.model, [str(f) for f in config.translate.textual_inversion]
    try:
        if m.path:
            attention = m.get("attention_kernel", "auto")
            sd.check_attention(attention)
            return sd.load(m.path, dtype=jnp.dtype(m.get("dtype", "float32")), textual_inversion=ti,
                           attention=attention)
        if m.get("workdir"):
            try:
                run = train.restore(m.workdir)
            except train.NoRun:
                raise UserError(f"config.model.workdir={m.workdir!r} holds no finished run; train one first, e.g. "
                                "--config=configs/sd_dsm.py:digits.") from None
            hook = getattr(run.method, "text_pipeline", None)
            if hook is None:
                raise UserError(f"config.model.workdir={m.workdir!r} holds a {run.config.method!r} run, which is not "
                                "text-conditioned; use an sd_dsm run (or a diffusers folder via config.model.path).")
            return hook(run.config, run.state).with_textual_inversion(ti)
    except (OSError, ValueError) as e:
        where = f"config.model.path={m.path!r}" if m.path else f"config.model.workdir={m.workdir!r}"
        raise UserError(f"cannot load the model ({where}, textual_inversion={ti}): {e}") from e
    raise UserError("no model: set --config.model.path to a diffusers Stable Diffusion folder or "
                    "--config.model.workdir to a finished sd_dsm run.")


def _folder(folder: str, data: ml_collections.ConfigDict, limit: int = 0) -> tuple[list[str], np.ndarray]:
    from jot.data import images as image_files

    paths = image_files.list_images(folder)
    paths = paths[:limit] if limit > 0 else paths
    image_files.check_readable(paths, folder)
    arrays = [image_files.load_image(p, size=data.size, channels=data.channels, resize=data.get("resize", "crop"))
              for p in paths]
    names = [os.path.splitext(os.path.relpath(p, folder))[0].replace(os.sep, "__") for p in paths]
    return names, np.stack(arrays)


def _images(config: ml_collections.ConfigDict) -> dict:
    """``names``, ``x`` (inputs) and, when available, ``target`` images, ``twins`` and fit sets."""
    data, t = config.data, config.translate
    if data.name == "digits":
        from jot.data import digits

        sp = digits.split(data.size, data.thickness, data.split_seed)
        n = t.num_images if t.num_images > 0 else len(sp.test_x)
        return {"names": [f"digit_{i:04d}" for i in range(n)], "x": sp.test_x[:n], "target": sp.test_y,
                "twins": sp.test_y[:n], "fit_source": sp.source_train, "fit_target": sp.target_train}
    if data.name != "folder":
        raise UserError(f"config.data.name={data.name!r}; translation reads 'folder' (data.source) or 'digits'.")
    if not data.source:
        raise UserError("config.data.source is empty; set it to the folder of images to translate.")
    names, x = _folder(data.source, data, t.num_images)
    out = {"names": names, "x": x, "fit_source": x}
    if data.get("target"):
        out["target"] = out["fit_target"] = _folder(data.target, data)[1]
    return out


def _unet_inputs(s: sd_translate.Settings, guided: bool) -> int:
    """UNet inputs per image: a guided call evaluates two conditions."""
    if s.method == "lsb":
        return 2 * (s.nfe - 1) + 1 if s.final_step else 2 * s.nfe
    sampling = s.nfe if s.method == "sdedit" else s.nfe - s.nfe // 2
    return (s.nfe - sampling) + sampling * (2 if guided else 1)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Translates ``data.source`` with the prompts of ``config.translate`` (module docstring)."""
    if jax.process_count() > 1:
        raise UserError("prompt translation runs in one process (over its devices); start it without "
                        "--num_processes / a multi-node launcher.")
    t, data = config.translate, config.data
    s = settings(config)
    for key in ("source_prompt", "target_prompt"):
        if not isinstance(t[key], str) or not t[key]:
            raise UserError(f"config.translate.{key} is empty; set it, e.g. --config.translate.{key}='a photo of a "
                            f"{'cat' if key == 'source_prompt' else 'dog'}' (textual-inversion tokens allowed).")
    pipe = load_model(config)
    if pipe.vae is not None and data.size % 8:
        raise UserError(f"config.data.size={data.size}: a latent Stable Diffusion needs a multiple of 8 "
                        "(the VAE downsamples 8x), e.g. 512.")
    if pipe.vae is None and s.clip is None:
        s = dataclasses.replace(s, clip=1.0)  # pixel models: outputs in [-1, 1]
    images = _images(config)
    translator = sd_translate.Translator(pipe, t.source_prompt, t.target_prompt, s,
                                         negative_prompt=t.get("negative_prompt", ""))
    fit = {}
    if s.method == "otald":
        if "fit_target" not in images:
            raise UserError("translate.method='otald' fits its latent map on target images too: set "
                            "--config.data.target to a folder of target-domain images.")
        n = t.num_fit if t.num_fit > 0 else None
        t_fit = time.perf_counter()
        fit = translator.fit_otald(images["fit_source"][:n], images["fit_target"][:n], method=t.ot_map)
        fit["fit_seconds"] = time.perf_counter() - t_fit

    mesh = sharding.make_mesh(config)
    devices = sharding.batch_devices(mesh)
    batch = -(-max(1, t.batch_size) // devices) * devices
    x = images["x"]
    key = jax.random.PRNGKey(config.seed)
    outputs, seconds, compile_seconds = [], [], 0.0
    progress = None
    if t.get("progress", True) and sharding.is_main_process():
        from tqdm.auto import tqdm

        progress = tqdm(total=len(x), desc=f"translate {s.method}", dynamic_ncols=True)
    for b, start in enumerate(range(0, len(x), batch)):
        chunk = x[start:start + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        placed = jax.device_put(padded, sharding.batch_sharding(mesh, padded.ndim))
        t_batch = time.perf_counter()
        out = np.asarray(jax.block_until_ready(translator(placed, jax.random.fold_in(key, b))))[: len(chunk)]
        elapsed = time.perf_counter() - t_batch
        if b == 0:
            compile_seconds = elapsed
            if len(x) <= batch:  # a single batch: time it again, compiled
                t_batch = time.perf_counter()
                jax.block_until_ready(translator(placed, jax.random.fold_in(key, b)))
                seconds.append((time.perf_counter() - t_batch) / batch)
        else:
            seconds.append(elapsed / batch)
        outputs.append(out)
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.close()
    y = np.concatenate(outputs)

    guided = s.guidance != 1.0
    metrics = {
        "method": s.method, "nfe": s.nfe, "unet_calls_per_image": s.nfe, "unet_inputs_per_image": _unet_inputs(s, guided),
        "num_images": len(x), "batch_size": batch, "devices": devices,
        "compile_seconds": compile_seconds, "seconds_per_image": float(np.mean(seconds)),
        "source_prompt": t.source_prompt, "target_prompt": t.target_prompt,
        "negative_prompt": t.get("negative_prompt", ""), "textual_inversion": list(t.textual_inversion),
        "model": config.model.path or config.model.workdir, **{f"settings_{k}": v for k, v in dataclasses.asdict(s).items()},
        **fit,
    }
    if s.method == "sdedit":
        metrics["sdedit_start_step"] = translator.start_step
    target = images.get("target")
    if target is not None and len(y) >= 2 and len(target) >= 2:
        metrics["frechet"] = frechet.frechet_distance(y, target[: max(len(y), 2)])
        if len(target) >= 2 * len(y):
            metrics["frechet_floor"] = frechet.frechet_distance(target[len(y): 2 * len(y)], target[: len(y)])
    if "twins" in images:
        metrics["psnr"] = float(np.mean(image.psnr(y, images["twins"])))
    if sharding.is_main_process():
        for name, out in zip(images["names"], y):
            files.write_bytes(os.path.join(workdir, "translated", f"{name}.png"), grid_png([out[None]]))
        files.write_bytes(os.path.join(workdir, f"translate_{s.method}.png"), grid_png([x[:16], y[:16]]))
        files.write_json(os.path.join(workdir, f"translate_{s.method}.json"), metrics)
    return metrics
