"""``launch.main --mode=translate``: translate held-out source images with a trained ``dsm`` model.

Reads the latest checkpoint of the ``dsm`` training run in ``config.translate.model_workdir``
(default: the workdir itself), takes the first ``translate.num_images`` source images of the
dataset's ``eval_data()`` and runs ``translate.method`` (``sdedit`` | ``ddib`` | ``otald``) with
``translate.nfe`` model calls per image. Writes, atomically, into the workdir:

- ``translate_<method>.npz``: ``x`` (sources), ``translated`` (one output per source, same
  shape, in ``[-1, 1]`` up to the model's clipping) and, when the dataset has them, ``y``/``label``;
- ``translate_<method>.png``: a grid, the first (up to) 16 sources above their translations;
- ``translate_<method>.json``: the returned metrics: ``method``, ``nfe`` (model calls per image),
  ``num_images``, ``seconds_per_image``, ``frechet`` (FD to the held-out target images), ``psnr``
  (to the paired target, digits only) and, for OT-ALD, ``w2sq_before``/``w2sq_after`` (per-
  coordinate ``W2^2`` between the fitted source and target latents before/after the map,
  exact assignment on up to 512 of them) and ``fit_seconds``.
"""
from __future__ import annotations

import io as _io
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from jot import io
from jot.data.images import check_images
from jot.metrics import frechet, image
from jot.ot import exact
from jot.methods import dsm
from jot.translate import ddib, otald, sdedit

METHODS = ("sdedit", "ddib", "otald")


def grid_png(rows: list[np.ndarray]) -> bytes:
    """PNG bytes of images ``[-1, 1]`` (each row ``[n, H, W, C]``) tiled row by row."""
    tiles = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    tiles = np.clip((tiles + 1.0) * 127.5, 0, 255).astype(np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(tiles[..., 0] if tiles.shape[-1] == 1 else tiles).save(buf, format="PNG")
    return buf.getvalue()


def _fit_images(dataset, key: str, n: int) -> np.ndarray:
    """``n`` training images of domain ``key`` (``n <= 0``: all of them, when the dataset exposes
    its digits split)."""
    split = getattr(dataset, "split", None)
    if split is not None:
        images = {"x": split.source_train, "y": split.target_train}[key]
        return images if n <= 0 else images[:n]
    if n <= 0:
        raise ValueError("translate.num_fit <= 0 (all training images) needs a dataset with a `split`.")
    parts, step = [], 0
    while sum(len(p) for p in parts) < n:
        parts.append(dataset.train_batch(step)[key])
        step += 1
    return np.concatenate(parts)[:n]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Translates with the model in ``translate.model_workdir`` (see the module docstring)."""
    from jot.train.loop import Trainer

    tc = config.translate
    if tc.method not in METHODS:
        raise ValueError(f"config.translate.method={tc.method!r}; expected one of {list(METHODS)}.")
    model_dir = tc.get("model_workdir") or workdir
    trainer = Trainer(config, model_dir)
    if trainer.checkpoints.latest_step() is None:
        raise FileNotFoundError(
            f"no checkpoint in {trainer.checkpoints.directory}; train a dsm model first "
            "(--mode=train) or set --config.translate.model_workdir to a finished dsm run."
        )
    state = trainer.initial_state()
    eval_data = trainer.dataset.eval_data()
    x = np.asarray(eval_data["x"][: tc.num_images])
    size = config.data.size
    check_images(x, size=size, channels=x.shape[-1], what="source images")
    shape = x.shape[1:]
    sched = dsm.schedule(config)
    eps_a, eps_b = (dsm.eps_model(config, state, shape, label=i) for i in (0, 1))
    rng = jax.random.PRNGKey(config.seed)

    common = dict(nfe=tc.nfe, schedule=sched, clip=tc.get("clip") or None)
    if tc.method == "sdedit":
        fn = lambda x: sdedit.translate(x, rng, eps_target=eps_b, start_step=tc.sdedit_start_step, **common)  # noqa: E731
    elif tc.method == "ddib":
        fn = lambda x: ddib.translate(x, None, eps_source=eps_a, eps_target=eps_b, end_step=tc.end_step, **common)  # noqa: E731
    else:
        t0 = time.perf_counter()
        latent_map, z_a, z_b = otald.fit(
            jnp.asarray(_fit_images(trainer.dataset, "x", tc.num_fit)),
            jnp.asarray(_fit_images(trainer.dataset, "y", tc.num_fit)),
            eps_source=eps_a, eps_target=eps_b, end_step=tc.end_step, method=tc.ot_map, epsilon=tc.ot_epsilon,
            shrinkage=tc.get("ot_shrinkage", 0.1), nfe=tc.nfe, schedule=sched,
        )
        n, d = min(len(z_a), len(z_b), 512), z_a[0].size
        flat = lambda a: np.asarray(a[:n]).reshape(n, -1)  # noqa: E731
        fit_metrics = {
            "w2sq_before": float(exact.w2_squared(flat(z_a), flat(z_b))) / d,
            "w2sq_after": float(exact.w2_squared(flat(latent_map(z_a[:n])), flat(z_b))) / d,
            "fit_seconds": time.perf_counter() - t0,
        }
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
    if config.data.name == "digits":
        metrics["psnr"] = float(np.mean(image.psnr(y_hat, eval_data["y"][: len(x)])))
    if jax.process_index() == 0:
        extra = {k: np.asarray(eval_data[k][: len(x)]) for k in ("y", "label") if k in eval_data}
        io.savez(os.path.join(workdir, f"translate_{tc.method}.npz"), x=x, translated=y_hat, **extra)
        io.write_bytes(os.path.join(workdir, f"translate_{tc.method}.png"), grid_png([x[:16], y_hat[:16]]))
        io.write_json(os.path.join(workdir, f"translate_{tc.method}.json"), metrics)
    return metrics
