"""Prior-mismatch OT on the digits.

    python benchmarks/prior_ot.py --workdir=runs/dsm_digits16

For the ``linear`` and SD ``scaled_linear`` schedules, on the thick digits of the dsm model's
resolution: the OT map ``M: N(0, I) -> q_S`` (``--ot_map``, default
``jot.ot.maps.DEFAULT_LATENT_MAP``) is fit on ``--num_fit`` noise draws and terminal
samples of the first ``--num_fit`` thick *training* digits, and measured on fresh noise against
fresh ``q_S`` samples of the held-out thick *test* digits (``jot.metrics.transport.held_out``,
per pixel): exact ``W2^2`` before (``N(0, I)``) / after (``M#N(0, I)``) / floor (a second fresh
``q_S`` sample of the same size), the per-coordinate (marginal) ``W2^2`` and Bures ``W2^2`` with
their floors, and the per-coordinate variance ratio ``var(M(e)) / var(q_S)``. In 256 dimensions
with a few hundred samples a map that shrinks scores a sample ``W2^2`` *below* the floor; the
marginal ``W2^2`` and the variance ratio expose it. Sample quality with and without the map
(Frechet distance in ``jot.metrics.frechet`` features to held-out thick digits, and the mean
max-probability of a logistic-regression digit classifier) uses the trained dsm model, so it is
reported only for the schedule it was trained with (``--no_model`` skips it). Writes JSON to
``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import dsm_digits  # noqa: E402
from jot import files  # noqa: E402
from jot.data import digits  # noqa: E402
from jot.diffusion import schedules  # noqa: E402
from jot.methods import dsm  # noqa: E402
from jot.metrics import frechet, transport  # noqa: E402
from jot.ot import maps  # noqa: E402
from jot import train  # noqa: E402
from jot.translate import prior_ot  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/dsm_digits16")
    p.add_argument("--preset", default="cpu16")
    p.add_argument("--num_fit", type=int, default=600)
    p.add_argument("--num_eval", type=int, default=180, help="held-out points compared (<= half the test digits)")
    p.add_argument("--nfe", type=int, default=20)
    p.add_argument("--ot_map", default=maps.DEFAULT_LATENT_MAP, choices=list(maps.METHODS))
    p.add_argument("--epsilon", type=float, default=0.0,
                   help="entropic: fraction of the mean cost (0 = from --neighbours); semidiscrete: temperature")
    p.add_argument("--neighbours", type=float, default=maps.DEFAULT_NEIGHBOURS)
    p.add_argument("--shrinkage", default="auto", help="gaussian map: covariance shrinkage ('auto' = Ledoit-Wolf, or in [0, 1])")
    p.add_argument("--no_model", action="store_true", help="latent statistics only (no trained dsm model needed)")
    p.add_argument("--out", default="benchmarks/results/prior_ot.json")
    args = p.parse_args()

    config = dsm_digits.get_config(args.preset)
    sp = digits.split(config.data.size, config.data.thickness, config.data.split_seed)
    x0 = jnp.asarray(sp.target_train)
    held = jnp.asarray(sp.test_y)
    k = min(args.num_eval, len(held) // 2)
    flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
    rows = []
    for name in ("linear", "scaled_linear"):
        sched = schedules.make(name, config.model.num_steps)
        m, _, q_fit = prior_ot.fit(x0[: args.num_fit], jax.random.PRNGKey(0), schedule=sched, num_noise=args.num_fit,
                                   method=args.ot_map, epsilon=args.epsilon or None, neighbours=args.neighbours,
                                   shrinkage=args.shrinkage)
        k1, k2 = jax.random.split(jax.random.PRNGKey(1))
        e = jax.random.normal(k1, (k,) + x0.shape[1:])
        q = prior_ot.terminal_samples(held[: 2 * k], k2, sched)  # q[:k]: floor sample, q[k:2k]: compared with
        report = transport.held_out(flat(m(e)), flat(q), source=flat(e), fitted_target=flat(q_fit))
        row = {"schedule": name, "alpha_bar_S": float(sched.alpha_bar[-1]), **report}
        if name == config.model.schedule and not args.no_model:
            try:
                state = train.restore(args.workdir, config=config).state
            except train.NoRun as e:
                raise SystemExit(f"{e}\nTrain the model first: python benchmarks/translate_digits.py") from e
            eps_b = dsm.eps_model(config, state, label=1)
            clf = LogisticRegression(max_iter=2000).fit(flat(sp.target_train), sp.target_labels)
            for tag, lm in (("without", None), ("with", m)):
                y = np.asarray(prior_ot.sample(e, None, nfe=args.nfe, schedule=sched, eps_fn=eps_b, latent_map=lm,
                                               clip=1.0))
                row[f"frechet_{tag}_map"] = frechet.frechet_distance(y, sp.test_y)
                row[f"confidence_{tag}_map"] = float(clf.predict_proba(flat(y)).max(1).mean())
        rows.append(row)
        print(row, flush=True)
    print(f"\n{args.ot_map} map fit on {args.num_fit} points, {k} held-out points compared, {x0[0].size} pixels; "
          "per pixel: W2 = exact W2^2, marg = per-coordinate 1-D W2^2, var = var(M(e)) / var(q_S) mean +- spread, "
          "tot = the ratio of total variances")
    print(f"{'schedule':<15}{'W2 before':>10}{'W2 after':>10}{'W2 floor':>10}{'marg before':>12}{'marg after':>11}"
          f"{'marg floor':>11}{'Bures after':>12}{'Bures floor':>12}{'var':>13}{'tot':>7}")
    for r in rows:
        print(f"{r['schedule']:<15}{r['w2sq_before']:>10.4f}{r['w2sq_after']:>10.4f}{r['w2sq_floor']:>10.4f}"
              f"{r['marginal_w2sq_before']:>12.4f}{r['marginal_w2sq_after']:>11.4f}{r['marginal_w2sq_floor']:>11.4f}"
              f"{r['bures_w2sq_after']:>12.4f}{r['bures_w2sq_floor']:>12.4f}"
              f"{r['var_ratio_mean']:>7.3f}+-{r['var_ratio_std']:.2f}{r['var_ratio_total']:>7.3f}")
    files.write_json(args.out, {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
