"""Thin -> thick digits: SDEdit, DDIB and OT-ALD at equal NFE.

    python benchmarks/translate_digits.py --workdir=runs/dsm_digits16

Uses (or first trains, with ``configs/dsm_digits.py:cpu16`` through the generic loop) one
domain-conditioned UNet in ``--workdir``. For each method and NFE it translates every test
image and reports: PSNR to the true thick twin; class accuracy of the output under a logistic
regression fit on the thick *training* images; Frechet distance to the held-out thick images in
the fixed random-feature space of ``jot.metrics.frechet``; seconds per image; and, for OT-ALD,
the latent mismatch on held-out latents (``jot.translate.otald.latent_report``: the map is fit
on training images; the first half of the test sources is mapped and compared with the target
latents of the second half of the test twins, whose first half gives the two-sample floor),
keys ``heldout_*``: per-pixel exact ``W2^2`` before / after / floor, marginal (per-coordinate
1-D) ``W2^2`` after / floor, Bures ``W2^2`` after / floor, the per-coordinate variance ratio
``var(M(Z_A)) / var(Z_B)`` (mean and spread) and the fraction of mapped latents sitting on
fitted target latents. In 256 dimensions with ~180 latents a map that shrinks scores a sample
``W2^2`` *below* the floor; the marginal ``W2^2`` and the variance ratio expose it. Writes JSON
to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import dsm_digits  # noqa: E402
from jot import files  # noqa: E402
from jot.data import digits  # noqa: E402
from jot.methods import dsm  # noqa: E402
from jot.metrics import frechet, image  # noqa: E402
from jot.ot import exact, maps  # noqa: E402
from jot import train  # noqa: E402
from jot.translate import ddib, otald, sdedit  # noqa: E402


def load_model(workdir: str, preset: str, steps: int | None):
    config = dsm_digits.get_config(preset)
    config.train.progress = False
    if steps:
        config.train.steps = steps
    try:
        model = train.restore(workdir, config=config)
    except train.NoRun:
        model = None
    if model is None or model.step < config.train.steps:
        t0 = time.perf_counter()
        train.train(config, workdir)
        print(f"trained dsm for {config.train.steps} steps in {time.perf_counter() - t0:.0f} s")
        model = train.restore(workdir, config=config)
    return model.config, model.state


def timed(fn, x):
    jax.block_until_ready(fn(x[:8]))  # compile for a small batch is not enough: warm the full shape
    jax.block_until_ready(fn(x))
    t0 = time.perf_counter()
    y = np.asarray(jax.block_until_ready(fn(x)))
    return y, (time.perf_counter() - t0) / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/dsm_digits16")
    p.add_argument("--preset", default="cpu16")
    p.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    p.add_argument("--nfes", default="4,8,16,50")
    p.add_argument("--num_fit", type=int, default=0, help="training images per domain for the OT-ALD map (0 = all)")
    p.add_argument("--ot_map", default=maps.DEFAULT_LATENT_MAP, choices=list(maps.METHODS),
                   help="OT-ALD latent map (jot.ot.maps)")
    p.add_argument("--ot_epsilon", type=float, default=0.0,
                   help="entropic: fraction of the mean cost (0 = from --ot_neighbours); semidiscrete: temperature")
    p.add_argument("--ot_neighbours", type=float, default=maps.DEFAULT_NEIGHBOURS,
                   help="entropic map: effective number of fitted targets averaged")
    p.add_argument("--num_test", type=int, default=0, help="test images to translate (0 = all)")
    p.add_argument("--ot_shrinkage", default="auto", help="gaussian map: covariance shrinkage ('auto' = Ledoit-Wolf, or in [0, 1])")
    p.add_argument("--early_end", type=float, default=0.5, help="early end step as a fraction of S-1")
    p.add_argument("--sdedit_start", type=float, default=0.5, help="SDEdit s0 as a fraction of S-1")
    p.add_argument("--out", default="benchmarks/results/translate_digits.json")
    args = p.parse_args()

    config, state = load_model(args.workdir, args.preset, args.steps)
    sp = digits.split(config.data.size, config.data.thickness, config.data.split_seed)
    sched = dsm.schedule(config)
    top = float(sched.num_steps - 1)
    eps_a, eps_b = (dsm.eps_model(config, state, label=i) for i in (0, 1))
    num_test = args.num_test or len(sp.test_x)
    test_x, test_y, test_labels = sp.test_x[:num_test], sp.test_y[:num_test], sp.test_labels[:num_test]
    x_test = jnp.asarray(test_x)
    n_fit = args.num_fit or None
    fit_x, fit_y = jnp.asarray(sp.source_train[:n_fit]), jnp.asarray(sp.target_train[:n_fit])

    clf = LogisticRegression(max_iter=2000).fit(sp.target_train.reshape(len(sp.target_train), -1), sp.target_labels)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    reference = {
        "twin_accuracy": float(clf.score(flat(test_y), test_labels)),
        "source_accuracy": float(clf.score(flat(test_x), test_labels)),
        "source_psnr": float(image.psnr(test_x, test_y).mean()),
        "source_frechet": frechet.frechet_distance(test_x, test_y),
        "train_target_frechet": frechet.frechet_distance(sp.target_train, test_y),
    }
    print("reference:", json.dumps(reference))
    early = round(args.early_end * top)
    rows = []
    for nfe in [int(n) for n in args.nfes.split(",")]:
        runs = {
            "sdedit": lambda x, nfe=nfe: sdedit.translate(x, jax.random.PRNGKey(0), nfe=nfe, schedule=sched,
                                                          eps_target=eps_b, start_step=args.sdedit_start * top,
                                                          clip=1.0),
        }
        for end, tag in ((top, ""), (float(early), f"@{early}")):
            runs["ddib" + tag] = lambda x, nfe=nfe, end=end: ddib.translate(
                x, None, nfe=nfe, schedule=sched, eps_source=eps_a, eps_target=eps_b, end_step=end, clip=1.0)
            t0 = time.perf_counter()
            m, _, z_b = otald.fit(fit_x, fit_y, eps_source=eps_a, eps_target=eps_b, schedule=sched, nfe=nfe,
                                  end_step=end, method=args.ot_map, epsilon=args.ot_epsilon or None,
                                  neighbours=args.ot_neighbours, shrinkage=args.ot_shrinkage)
            fit_seconds = time.perf_counter() - t0
            report = otald.latent_report(m, x_test[: len(x_test) // 2], jnp.asarray(test_y), eps_source=eps_a,
                                         eps_target=eps_b, schedule=sched, nfe=nfe, end_step=end, z_target_fit=z_b)
            w2 = {**{f"heldout_{k}": v for k, v in report.items()}, "fit_seconds": fit_seconds}
            runs["otald" + tag] = (lambda x, nfe=nfe, end=end, m=m: otald.translate(
                x, None, nfe=nfe, schedule=sched, eps_source=eps_a, eps_target=eps_b, latent_map=m, end_step=end, clip=1.0), w2)
        for name, run in runs.items():
            fn, extra = run if isinstance(run, tuple) else (run, {})
            y, sec = timed(fn, x_test)
            row = {
                "method": name, "nfe": nfe,
                "psnr": float(image.psnr(y, test_y).mean()),
                "accuracy": float(clf.score(flat(y), test_labels)),
                "frechet": frechet.frechet_distance(y, test_y),
                "seconds_per_image": sec, **extra,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nS = {sched.num_steps}, early end step = {early}, SDEdit s0 = {args.sdedit_start * top:.0f}; "
          f"{len(test_x)} test images; OT-ALD map {args.ot_map} (shrinkage {args.ot_shrinkage}, epsilon "
          f"{args.ot_epsilon}, neighbours {args.ot_neighbours}) fit on {len(fit_x)} images per domain")
    print("latents (held out, per pixel): W2 = exact W2^2 of the unmapped (before) / mapped (after) test sources and "
          "of a second target sample (floor) against target latents; marg = per-coordinate 1-D W2^2; "
          "var = var(mapped) / var(target), mean +- spread over pixels; tot = the ratio of total variances; "
          "coll = share on fitted targets")
    print(f"{'method':<14}{'NFE':>4}{'PSNR':>8}{'acc':>7}{'FD':>9}{'ms/img':>8}{'W2 before':>11}{'W2 after':>10}"
          f"{'W2 floor':>10}{'marg':>8}{'floor':>8}{'Bures':>8}{'floor':>8}{'var':>13}{'tot':>7}{'coll':>6}")
    for r in rows:
        w2 = ""
        if "heldout_w2sq_after" in r:
            h = {k.removeprefix("heldout_"): v for k, v in r.items() if k.startswith("heldout_")}
            w2 = (f"{h['w2sq_before']:>11.4f}{h['w2sq_after']:>10.4f}{h['w2sq_floor']:>10.4f}"
                  f"{h['marginal_w2sq_after']:>8.4f}{h['marginal_w2sq_floor']:>8.4f}"
                  f"{h['bures_w2sq_after']:>8.4f}{h['bures_w2sq_floor']:>8.4f}"
                  f"{h['var_ratio_mean']:>7.3f}+-{h['var_ratio_std']:.2f}{h['var_ratio_total']:>7.3f}"
                  f"{h['collapse_fraction']:>6.2f}")
        print(f"{r['method']:<14}{r['nfe']:>4}{r['psnr']:>8.2f}{r['accuracy']:>7.3f}{r['frechet']:>9.4f}"
              f"{1e3 * r['seconds_per_image']:>8.2f}{w2}")
    files.write_json(args.out, {"reference": reference, "rows": rows, "args": vars(args),
                             "devices": str(jax.devices())})


if __name__ == "__main__":
    main()
