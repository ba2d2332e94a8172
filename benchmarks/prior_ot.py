"""Prior-mismatch OT on the digits (ALGORITHMS.md section 7).

    python benchmarks/prior_ot.py --workdir=runs/dsm_digits16

For the ``linear`` and SD ``scaled_linear`` schedules, on the thick digits of the dsm model's
resolution: ``W2^2(N(0,I), q_S)`` before and ``W2^2(M#N(0,I), q_S)`` after the entropic OT map
``M`` fitted on ``--num_fit`` pairs of samples, measured by exact assignment on *fresh* noise and
fresh ``q_S`` samples (per pixel), next to the floor ``W2^2`` between two fresh ``q_S`` samples.
Sample quality with and without the map (Frechet distance in ``jot.metrics.frechet`` features
to held-out thick digits, and the mean max-probability of a logistic-regression digit
classifier) uses the trained dsm model, so it is reported only for the schedule it was trained
with. Writes JSON to ``--out``.
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
from jot import io  # noqa: E402
from jot.data import digits  # noqa: E402
from jot.diffusion import schedules  # noqa: E402
from jot.methods import dsm  # noqa: E402
from jot.metrics import frechet  # noqa: E402
from jot.ot import exact  # noqa: E402
from jot.train import loop  # noqa: E402
from jot.translate import prior_ot  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/dsm_digits16")
    p.add_argument("--preset", default="cpu16")
    p.add_argument("--num_fit", type=int, default=600)
    p.add_argument("--num_eval", type=int, default=300)
    p.add_argument("--nfe", type=int, default=20)
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--out", default="benchmarks/results/prior_ot.json")
    args = p.parse_args()

    config = dsm_digits.get_config(args.preset)
    sp = digits.split(config.data.size, config.data.thickness, config.data.split_seed)
    x0 = jnp.asarray(sp.target_train)
    flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
    d = x0[0].size
    rows = []
    for name in ("linear", "scaled_linear"):
        sched = schedules.make(name, config.model.num_steps)
        m, _, _ = prior_ot.fit(x0[: args.num_fit], jax.random.PRNGKey(0), schedule=sched,
                               num_noise=args.num_fit, epsilon=args.epsilon)
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
        e = jax.random.normal(k1, (args.num_eval,) + x0.shape[1:])
        q1 = prior_ot.terminal_samples(x0[-args.num_eval:], k2, sched)
        q2 = prior_ot.terminal_samples(x0[-args.num_eval:], k3, sched)
        row = {
            "schedule": name, "alpha_bar_S": float(sched.alpha_bar[-1]),
            "w2sq_before": exact.w2_squared(flat(e), flat(q1)) / d,
            "w2sq_after": exact.w2_squared(flat(m(e)), flat(q1)) / d,
            "w2sq_floor": exact.w2_squared(flat(q2), flat(q1)) / d,
        }
        if name == config.model.schedule:
            trainer = loop.Trainer(config, args.workdir)
            if trainer.checkpoints.latest_step() is None:
                raise FileNotFoundError(f"no dsm checkpoint in {args.workdir}; run benchmarks/translate_digits.py first.")
            state = trainer.initial_state()
            eps_b = dsm.eps_model(config, state, x0.shape[1:], label=1)
            clf = LogisticRegression(max_iter=2000).fit(flat(sp.target_train), sp.target_labels)
            for tag, lm in (("without", None), ("with", m)):
                y = np.asarray(prior_ot.sample(e, None, nfe=args.nfe, schedule=sched, eps_fn=eps_b, latent_map=lm,
                                               clip=1.0))
                row[f"frechet_{tag}_map"] = frechet.frechet_distance(y, sp.test_y)
                row[f"confidence_{tag}_map"] = float(clf.predict_proba(flat(y)).max(1).mean())
        rows.append(row)
        print(row, flush=True)
    io.write_json(args.out, {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    main()
