"""Held-out evaluation of OT maps.

Point clouds (``evaluate``): exact ``W2^2``, L2 to the discrete OT map, and the workdir
artifacts ``transport.npz`` / ``transport.png``. Images (``evaluate_images``, which ``evaluate``
hands NHWC data to): transport cost, PSNR to the true twins on paired data, Frechet distances,
``transport.npz`` and an image grid ``transport.png``."""
import os
from typing import Callable

import jax
import numpy as np

from jot import files
from jot.errors import UserError
from jot.ot import exact


def noise_keys(config) -> tuple[jax.Array | None, jax.Array | None]:
    """Keys for the maps' auxiliary noise at evaluation: ``eval.map_noise="sample"`` draws
    ``z ~ N(0, I)`` (fixed by ``seed``, as the paper samples ``T(x, z)``), ``"zero"`` uses
    ``z = 0``; ``(None, None)`` for deterministic maps."""
    mode = config.eval.get("map_noise", "sample")
    if mode not in ("sample", "zero"):
        raise UserError(f"config.eval.map_noise={mode!r}; expected 'sample' (z ~ N(0, I)) or 'zero' (z = 0).")
    if not config.model.get("noise_dim", 0) or mode == "zero":
        return None, None
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5EED)
    return tuple(jax.random.split(key))


def evaluate(config, state, data: dict, workdir: str | None, transport: Callable, backward: Callable | None) -> dict:
    """Metrics on ``data`` (keys ``x``, ``y`` of equal size):

    - ``w2``: ``W2^2(T#mu, nu)`` between ``T(x)`` and ``y`` (exact assignment),
    - ``l2_to_ot``: ``mean ||T(x_i) - y_sigma(i)||^2``, ``sigma`` the exact OT of ``x`` to ``y``,
    - ``w2_backward``: ``W2^2(S#nu, mu)`` when the method has a backward map.

    Maps with auxiliary noise are evaluated as ``eval.map_noise`` says (``noise_keys``).
    """
    if np.ndim(data["x"]) == 4:
        return evaluate_images(config, state, data, workdir, transport, backward)
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    rng_t, rng_s = noise_keys(config)
    tx = np.asarray(jax.jit(lambda s, u, r: transport(config, s, u, r))(state, x, rng_t))
    metrics = {"w2": exact.w2_squared(tx, y), "l2_to_ot": exact.l2_to_ot(x, tx, y), "n_eval": n}
    arrays = {"x": x, "Tx": tx, "y": y}
    if backward is not None:
        sy = np.asarray(jax.jit(lambda s, u, r: backward(config, s, u, r))(state, y, rng_s))
        metrics["w2_backward"] = exact.w2_squared(sy, x)
        arrays["Sy"] = sy
    if not np.all(np.isfinite(tx)):
        metrics = {k: (float("nan") if k != "n_eval" else v) for k, v in metrics.items()}
    if workdir:
        files.savez(os.path.join(workdir, "transport.npz"), **arrays)
        if x.shape[1] >= 2:
            plot(os.path.join(workdir, "transport.png"), x, tx, y, title=f"{config.method} on {config.data.name}",
                 metrics=metrics, n_paths=config.eval.paths)
    return metrics


def plot(path: str, x: np.ndarray, tx: np.ndarray, y: np.ndarray, *, title: str, metrics: dict, n_paths: int = 16):
    """Source, target, transported points and a few displacement paths (first two coordinates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.35, c="tab:blue", label="source x")
    ax.scatter(y[:, 0], y[:, 1], s=3, alpha=0.35, c="tab:orange", label="target y")
    ax.scatter(tx[:, 0], tx[:, 1], s=3, alpha=0.6, c="tab:green", label="T(x)")
    idx = np.linspace(0, len(x) - 1, min(n_paths, len(x))).astype(int)
    for i in idx:
        ax.annotate("", xy=tx[i, :2], xytext=x[i, :2], arrowprops=dict(arrowstyle="->", lw=0.7, color="k", alpha=0.7))
    stats = ", ".join(f"{k}={v:.3g}" for k, v in metrics.items() if k in ("w2", "l2_to_ot", "w2_backward"))
    ax.set_title(f"{title}\n{stats}", fontsize=9)
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    ax.set_aspect("equal")
    files.save_figure(path, fig)
    plt.close(fig)


def apply_in_chunks(fn: Callable, state, x: np.ndarray, rng: jax.Array | None, chunk: int) -> np.ndarray:
    """``fn(state, x[i:i+chunk], key_i)`` over ``x`` in chunks, one jitted program (the last
    chunk padded to ``chunk``), as one numpy array; ``key_i = fold_in(rng, i)`` (None stays None)."""
    apply = jax.jit(fn)
    out = []
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        pad = chunk - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        key = None if rng is None else jax.random.fold_in(rng, start)
        out.append(np.asarray(apply(state, part, key))[:chunk - pad])
    return np.concatenate(out)


def paired(config) -> bool:
    """Whether ``eval_data()["y"][i]`` is the true target of ``eval_data()["x"][i]`` (the digits'
    twins; ``jot.data.base``), so per-image PSNR means something."""
    return config.data.name == "digits"


def evaluate_images(config, state, data: dict, workdir: str | None, transport: Callable,
                    backward: Callable | None = None) -> dict:
    """Metrics of an image map on the held-out ``data`` (NHWC in ``[-1, 1]``):

    - ``cost``: mean per-pixel ``(T(x) - x)^2``;
    - ``psnr``: PSNR of ``clip(T(x), -1, 1)`` to the true twins (paired data only, ``paired``);
    - ``frechet``: Frechet distance of ``T(x)`` to ``y`` in ``jot.metrics.frechet``'s fixed random
      feature space, and ``frechet_source`` of ``x`` to ``y`` (where a map starts from);
    - ``fid``, ``kid``, ``kid_std`` when ``eval.fid_weights`` names the Inception weights
      (``inception_scores``);
    - with a backward map ``S``: ``cost_backward``, ``frechet_backward`` (``S(y)`` to ``x``) and
      ``psnr_backward`` on paired data.

    Maps with auxiliary noise use ``eval.map_noise`` (``noise_keys``). ``eval.batch_size`` images
    go through one jitted call. ``workdir`` gets ``transport.npz`` (``x``, ``Tx``, ``y``[, ``Sy``])
    and ``transport.png`` (rows: ``x``, ``T(x)``, ``y``[, ``S(y)``], 16 images each).
    """
    from jot.metrics import frechet, image

    x, y = np.asarray(data["x"], np.float32), np.asarray(data["y"], np.float32)
    chunk = int(config.eval.get("batch_size", 256))
    rng_t, rng_s = noise_keys(config)
    tx = apply_in_chunks(lambda s, u, r: transport(config, s, u, r), state, x, rng_t, chunk)
    out = {"cost": float(np.mean((tx - x) ** 2)), "n_eval": len(x)}
    pair = paired(config) and y.shape == tx.shape
    if pair:
        out["psnr"] = float(image.psnr(np.clip(tx, -1, 1), y).mean())
    out["frechet"] = frechet.frechet_distance(tx, y)
    out["frechet_source"] = frechet.frechet_distance(x, y)
    arrays = {"x": x, "Tx": tx, "y": y}
    if backward is not None:
        sy = apply_in_chunks(lambda s, u, r: backward(config, s, u, r), state, y, rng_s, chunk)
        out["cost_backward"] = float(np.mean((sy - y) ** 2))
        if pair:
            out["psnr_backward"] = float(image.psnr(np.clip(sy, -1, 1), x).mean())
        out["frechet_backward"] = frechet.frechet_distance(sy, x)
        arrays["Sy"] = sy
    if not np.all(np.isfinite(tx)):
        out = {k: (float("nan") if k != "n_eval" else v) for k, v in out.items()}
    elif config.eval.get("fid_weights"):
        out.update(inception_scores(config, state, x, y, tx, transport, rng_t, chunk))
    if workdir:
        files.savez(os.path.join(workdir, "transport.npz"), **arrays)
        rows = [x[:16], np.clip(tx[:16], -1, 1), y[:16]] + ([np.clip(arrays["Sy"][:16], -1, 1)] if "Sy" in arrays
                                                            else [])
        files.write_bytes(os.path.join(workdir, "transport.png"), files.grid_png(rows))
    return out


def inception_scores(config, state, x: np.ndarray, y: np.ndarray, tx: np.ndarray, transport: Callable,
                     rng: jax.Array | None, chunk: int) -> dict:
    """FID and KID (``jot.metrics.fid``, weights ``eval.fid_weights``) of the mapped sources against
    ``y``. A map with auxiliary noise is sampled ``eval.fid_samples_per_source`` times per source
    (the AFHQ protocol: 10), ``tx`` being the first sample; a deterministic map once."""
    from jot.metrics import fid

    samples = [tx]
    if rng is not None:
        for k in range(1, int(config.eval.get("fid_samples_per_source", 1))):
            key = jax.random.fold_in(rng, 1_000_003 * k)
            samples.append(apply_in_chunks(lambda s, u, r: transport(config, s, u, r), state, x, key, chunk))
    scorer = fid.FID(config.eval.fid_weights, batch_size=int(config.eval.get("fid_batch_size", 50)))
    scores = scorer(np.clip(np.concatenate(samples), -1.0, 1.0), y)
    return {**scores, "fid_samples": int(sum(len(s) for s in samples)), "fid_reference": len(y)}
