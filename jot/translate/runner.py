"""``launch.main --mode=translate``: translate held-out source images with a trained ``dsm`` model.

Reads the latest checkpoint of ``config.translate.checkpoint_dir`` (default: the workdir), takes
the first ``translate.num_images`` source images of the dataset's ``eval_data()`` and runs
``translate.method`` (``sdedit`` | ``ddib`` | ``otald``) with ``translate.nfe`` model calls per
image. Writes, atomically, ``translate_<method>.npz`` (``x``, ``translated`` and, when the
dataset has them, ``y``/``label``) and ``translate_<method>.png`` (a grid: source row above
translated row) into the workdir, and returns the metrics (seconds per image; FD to the held-out
target images; PSNR to the paired target when ``config.data.name == "digits"``).
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


def _training_images(dataset, key: str, n: int) -> np.ndarray:
    parts, step = [], 0
    while sum(len(p) for p in parts) < n:
        parts.append(dataset.train_batch(step)[key])
        step += 1
    return np.concatenate(parts)[:n]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Translates with the model in ``translate.checkpoint_dir`` (see the module docstring)."""
    from jot.train.loop import Trainer

    tc = config.translate
    if tc.method not in METHODS:
        raise ValueError(f"config.translate.method={tc.method!r}; expected one of {list(METHODS)}.")
    model_dir = tc.get("checkpoint_dir") or workdir
    trainer = Trainer(config, model_dir)
    if trainer.checkpoints.latest_step() is None:
        raise FileNotFoundError(
            f"no checkpoint in {trainer.checkpoints.directory}; train a dsm model first "
            "(--mode=train) or set --config.translate.checkpoint_dir to a finished run."
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
        latent_map, _, _ = otald.fit(
            jnp.asarray(_training_images(trainer.dataset, "x", tc.num_fit)),
            jnp.asarray(_training_images(trainer.dataset, "y", tc.num_fit)),
            eps_source=eps_a, eps_target=eps_b, end_step=tc.end_step, method=tc.ot_map, epsilon=tc.ot_epsilon,
            nfe=tc.nfe, schedule=sched,
        )
        fn = lambda x: otald.translate(x, None, eps_source=eps_a, eps_target=eps_b, latent_map=latent_map,  # noqa: E731
                                       end_step=tc.end_step, **common)
    jax.block_until_ready(fn(jnp.asarray(x)))  # compile
    start = time.perf_counter()
    y_hat = np.asarray(jax.block_until_ready(fn(jnp.asarray(x))))
    metrics = {"seconds_per_image": (time.perf_counter() - start) / len(x), "nfe": tc.nfe}
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
