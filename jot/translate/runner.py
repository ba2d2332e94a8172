"""``launch.main --mode=translate``: translate held-out source images with a trained diffusion model.

Reads the trained model of the run in ``config.translate.model_workdir`` (default: the workdir
itself) with ``jot.train.restore``: its latest checkpoint, with the config recorded in that
run's ``config.json``. Its method, that of ``config.method``, must provide the diffusion hooks
``schedule`` and ``eps_model`` (``jot.methods.base``; ``dsm`` does). The images to translate
come from this config's ``data`` section: the run takes the first ``translate.num_images``
source images of the dataset's ``eval_data()`` and runs ``translate.method`` (``lsb`` | ``sdedit`` |
``ddib`` | ``otald``) with ``translate.nfe`` model calls per image; LSB's two conditions are the
domain labels 0 (source) and 1 (target) of the model (``translate.lsb_sigma``, ``lsb_t0``,
``guidance`` and the ablation switches, ``jot.translate.lsb``). A config whose ``translate``
has a ``source_prompt`` (``configs/lsb_sd.py``) translates with a text-conditioned model instead
(``jot.translate.text_runner``). Writes, atomically, into the workdir:

- ``translate_<method>.npz``: ``x`` (sources), ``translated`` (one output per source, same
  shape, in ``[-1, 1]`` up to the model's clipping) and, when the dataset has them, ``y``/``label``;
- ``translate_<method>.png``: a grid, the first (up to) 16 sources above their translations;
- ``translate_<method>.json``: the returned metrics: ``method``, ``nfe`` (model calls per image),
  ``num_images``, ``seconds_per_image``, ``frechet`` (FD to the held-out target images), ``psnr``
  (to the paired target, digits only) and, for OT-ALD, ``fit_seconds`` and, when the dataset's
  ``eval_data()`` has target images ``y``, the latent mismatch on held-out latents (images not
  used to fit the map: the first ``translate.num_latent_eval`` target images and half as many
  source images of ``eval_data()``, inverted as at translation time), each key of
  ``jot.metrics.transport.held_out`` prefixed ``heldout_``: ``heldout_w2sq_before`` /
  ``_after`` / ``_floor`` (per-coordinate exact ``W2^2`` of the unmapped / mapped source latents
  and of a second target sample, against target latents), the same for ``marginal_w2sq``,
  ``bures_w2sq`` and ``diag_bures_w2sq``, ``heldout_var_ratio_mean`` / ``_std`` / ``_total``,
  ``heldout_var_ratio_floor_std``, ``heldout_collapse_fraction`` and ``heldout_num_eval``. A sample
  ``W2^2`` in high dimension is only meaningful next to its floor: a map that shrinks its input
  scores *below* the floor, and shows a variance ratio below 1 and a marginal ``W2^2`` above its
  floor (``jot.metrics.transport``).
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jot import data, files
from jot.files import grid_png
from jot.data.images import check_images
from jot.errors import UserError, UserFileNotFoundError
from jot.metrics import frechet, image
from jot.ot import maps
from jot.translate import ddib, lsb, otald, sdedit

METHODS = ("lsb", "sdedit", "ddib", "otald")


def _fit_images(dataset, key: str, n: int) -> np.ndarray:
    """``n`` training images of domain ``key`` (``n <= 0``: all of them, when the dataset exposes
    its digits split)."""
    split = getattr(dataset, "split", None)
    if split is not None:
        images = {"x": split.source_train, "y": split.target_train}[key]
        return images if n <= 0 else images[:n]
    if n <= 0:
        raise UserError("config.translate.num_fit <= 0 (all training images) needs a dataset with a `split` "
                        "(the digits); set --config.translate.num_fit to a positive number of images.")
    parts, step = [], 0
    while sum(len(p) for p in parts) < n:
        parts.append(dataset.train_batch(step)[key])
        step += 1
    return np.concatenate(parts)[:n]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Translates with the model in ``translate.model_workdir`` (see the module docstring)."""
    if "source_prompt" in config.translate:  # a text-conditioned model and two prompts
        from jot.translate import text_runner

        return text_runner.run(config, workdir)
    from jot.train import NoRun, restore
    from jot.train.loop import get_method

    tc = config.translate
    if tc.method not in METHODS:
        raise UserError(f"config.translate.method={tc.method!r}; expected one of {list(METHODS)}.")
    method = get_method(config)
    if not (hasattr(method, "schedule") and hasattr(method, "eps_model")):
        raise UserError(f"config.method={config.method!r} is not a diffusion method (it has no schedule and "
                        "eps_model to translate with); train and translate with e.g. dsm.")
    model_dir = tc.get("model_workdir") or workdir
    try:
        model = restore(model_dir)
    except NoRun:
        raise UserFileNotFoundError(
            f"no checkpoint in {os.path.join(os.path.abspath(model_dir), 'checkpoints')}; train a dsm model first "
            "(--mode=train) or set --config.translate.model_workdir to a finished dsm run."
        ) from None
    if model.method is not method:
        raise UserError(f"the model in {model_dir} was trained with method={model.config.method!r}, not "
                        f"config.method={config.method!r}; set --config.translate.model_workdir to a "
                        f"{config.method} run.")
    dataset = data.build(config)
    eval_data = dataset.eval_data()
    x = np.asarray(eval_data["x"][: tc.num_images])
    size = config.data.size
    check_images(x, size=size, channels=x.shape[-1], what="source images")
    sched = method.schedule(model.config)
    eps_a, eps_b = (method.eps_model(model.config, model.state, label=i) for i in (0, 1))
    rng = jax.random.PRNGKey(config.seed)

    common = dict(nfe=tc.nfe, schedule=sched, clip=tc.get("clip") or None)
    if tc.method == "lsb":
        eps = method.eps_model(model.config, model.state)  # the domain label is the condition
        fn = lambda x: lsb.translate(  # noqa: E731
            x, rng, nfe=tc.nfe, schedule=sched, eps_fn=eps, cond_source=0, cond_target=1, sigma=tc.lsb_sigma,
            t0=tc.lsb_t0, guidance=tc.guidance, snr_matching=tc.snr_matching,
            time_dependent_noise=tc.time_dependent_noise, final_step=tc.final_step, final_to=tc.final_to,
            clip=tc.get("clip") or None)
    elif tc.method == "sdedit":
        fn = lambda x: sdedit.translate(x, rng, eps_target=eps_b, start_step=tc.sdedit_start_step, **common)  # noqa: E731
    elif tc.method == "ddib":
        fn = lambda x: ddib.translate(x, None, eps_source=eps_a, eps_target=eps_b, end_step=tc.end_step, **common)  # noqa: E731
    else:
        t0 = time.perf_counter()
        latent_map, _, z_b = otald.fit(
            jnp.asarray(_fit_images(dataset, "x", tc.num_fit)),
            jnp.asarray(_fit_images(dataset, "y", tc.num_fit)),
            eps_source=eps_a, eps_target=eps_b, end_step=tc.end_step, method=tc.get("ot_map", maps.DEFAULT_LATENT_MAP),
            epsilon=tc.get("ot_epsilon") or None, neighbours=tc.get("ot_neighbours", maps.DEFAULT_NEIGHBOURS),
            shrinkage=tc.get("ot_shrinkage", "auto"), nfe=tc.nfe, schedule=sched,
        )
        fit_metrics = {"fit_seconds": time.perf_counter() - t0}
        num_eval = min(int(tc.get("num_latent_eval", 256)), len(eval_data.get("y", ())))
        if num_eval >= 4:
            report = otald.latent_report(
                latent_map, jnp.asarray(eval_data["x"][: num_eval // 2]), jnp.asarray(eval_data["y"][:num_eval]),
                eps_source=eps_a, eps_target=eps_b, schedule=sched, nfe=tc.nfe, end_step=tc.end_step,
                z_target_fit=z_b,
            )
            fit_metrics.update({f"heldout_{k}": v for k, v in report.items()})
        fn = lambda x: otald.translate(x, None, eps_source=eps_a, eps_target=eps_b, latent_map=latent_map,  # noqa: E731
                                       end_step=tc.end_step, **common)
    jax.block_until_ready(fn(jnp.asarray(x)))  # compile
    start = time.perf_counter()
    y_hat = np.asarray(jax.block_until_ready(fn(jnp.asarray(x))))
    metrics = {"method": tc.method, "nfe": tc.nfe, "num_images": len(x),
               "seconds_per_image": (time.perf_counter() - start) / len(x)}
    if tc.method == "otald":
        metrics.update(fit_metrics)
    if "y" in eval_data and len(eval_data["y"]) >= 2:
        metrics["frechet"] = frechet.frechet_distance(y_hat, np.asarray(eval_data["y"]))
    if getattr(dataset, "paired", False):
        metrics["psnr"] = float(np.mean(image.psnr(y_hat, eval_data["y"][: len(x)])))
    if jax.process_index() == 0:
        extra = {k: np.asarray(eval_data[k][: len(x)]) for k in ("y", "label") if k in eval_data}
        files.savez(os.path.join(workdir, f"translate_{tc.method}.npz"), x=x, translated=y_hat, **extra)
        files.write_bytes(os.path.join(workdir, f"translate_{tc.method}.png"), grid_png([x[:16], y_hat[:16]]))
        files.write_json(os.path.join(workdir, f"translate_{tc.method}.json"), metrics)
    return metrics
