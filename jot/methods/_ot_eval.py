"""Held-out evaluation of point-cloud OT maps: exact ``W2^2``, L2 to the discrete OT map,
and the workdir artifacts ``transport.npz`` / ``transport.png``."""
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
