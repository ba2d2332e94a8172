"""Every method on one table: thin -> thick offline digits (16x16), the same data and metrics.

    python benchmarks/digits.py                      # trains what runs/ lacks, then scores all seven
    python benchmarks/digits.py --rule fd --nfe 8 --out /tmp/digits.json

Methods and where their model comes from (each is trained first when its workdir lacks a
finished run; nothing here is tuned on the test images):

- **DIOTM**, **OTM**: image OT maps, ``configs/diotm_images.py`` / ``otm_images.py`` (preset
  ``digits``, its fixed settings), one map evaluation per image.
- **SDEdit**, **DDIB**, **OT-ALD**, **LSB** at ``--nfe`` UNet calls on the domain-conditioned
  ``dsm_digits.py:cpu16`` model. Their parameters are those ``benchmarks/translate_digits.py``
  selected on 200 validation images from the training split under ``--rule`` (read from
  ``--selection``); without that file, the defaults of ``configs/translate_digits.py``.
- **RDMD**: ``configs/rdmd_digits.py:cpu16`` (its default lambda, fixed before any test), distilled
  from the same dsm model, one network evaluation.

Metrics on the 361 test sources (never seen in training): PSNR of the output to the source's
true thick twin; class accuracy of a logistic regression fit on the thick training digits (the
twins score ``twin_accuracy``); the transport cost, mean per-pixel ``(out - x)^2``; the Frechet
distance to the twins in ``jot.metrics.frechet``'s fixed feature space, next to its floor (the
mean distance of 5 random sets of thick training digits, as many as the twins, to the twins);
NFE (network evaluations per image) and images/s (whole test set in one jitted call after a
warm-up, best of 3, this machine). Prints a markdown table; writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._digits_scoring import flat, rate, scoring  # noqa: E402
from benchmarks.translate_digits import load_model  # noqa: E402
from configs import diotm_images, otm_images, rdmd_digits, translate_digits  # noqa: E402
from jot import files, train  # noqa: E402
from jot.methods import dsm  # noqa: E402
from jot.metrics import frechet, image  # noqa: E402
from jot.translate import ddib, lsb, otald, sdedit  # noqa: E402

def trained(config, workdir: str):
    """The finished run of ``config`` in ``workdir`` (trained, or its training completed, first)."""
    config.train.progress = False
    try:
        run = train.restore(workdir)
        if run.step >= config.train.steps:
            return run
    except train.NoRun:
        pass
    t0 = time.perf_counter()
    train.train(config, workdir)
    print(f"trained {config.method} in {workdir}: {time.perf_counter() - t0:.0f} s", flush=True)
    return train.restore(workdir)


def diffusion_params(args) -> tuple[dict, str]:
    """The parameters of SDEdit / DDIB / OT-ALD / LSB at ``args.nfe`` and where they come from."""
    if os.path.exists(args.selection):
        sel = json.load(open(args.selection))["selected"][args.rule][str(args.nfe)]
        return {"sdedit": {"start_step": sel["sdedit"]["start_step"]}, "ddib": {"end_step": sel["ddib"]["end_step"]},
                "otald": {"end_step": sel["otald"]["end_step"]}, "lsb": dict(sel["lsb"])}, (
            f"{args.selection}: chosen on validation images by the {args.rule!r} rule")
    c = translate_digits.get_config("cpu16").translate
    return {"sdedit": {"start_step": c.sdedit_start_step}, "ddib": {"end_step": c.end_step},
            "otald": {"end_step": c.end_step},
            "lsb": {"guidance": c.guidance, "sigma": c.lsb_sigma, "t0": c.lsb_t0}}, ("configs/translate_digits.py defaults")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsm_workdir", default="runs/dsm_digits16")
    p.add_argument("--diotm_workdir", default="runs/diotm_digits")
    p.add_argument("--otm_workdir", default="runs/otm_digits")
    p.add_argument("--rdmd_workdir", default="runs/rdmd_digits")
    p.add_argument("--nfe", type=int, default=8, help="UNet calls of the multi-step diffusion translators")
    p.add_argument("--rule", default="faithful", choices=("fd", "faithful"),
                   help="which validation selection of benchmarks/translate_digits.py to use")
    p.add_argument("--selection", default="benchmarks/results/translate_digits.json")
    p.add_argument("--out", default="benchmarks/results/digits.json")
    args = p.parse_args()

    dsm_config, dsm_state = load_model(args.dsm_workdir, "cpu16", None)
    d = dsm_config.data
    sc = scoring(d)
    sp, x, y, labels, clf, floors = sc.split, sc.x, sc.y, sc.labels, sc.clf, sc.floors

    runs = {}
    for name, module, workdir in (("DIOTM", diotm_images, args.diotm_workdir), ("OTM", otm_images, args.otm_workdir)):
        c = module.get_config("digits")
        if (c.data.size, c.data.thickness, c.data.split_seed) != (d.size, d.thickness, d.split_seed):
            raise SystemExit(f"{name}'s data fields differ from the dsm model's; they must match")
        runs[name] = trained(c, workdir)
    rc = rdmd_digits.get_config("cpu16")
    rc.teacher.workdir = args.dsm_workdir
    runs["RDMD"] = trained(rc, args.rdmd_workdir)

    sched = dsm.schedule(dsm_config)
    eps = dsm.eps_model(dsm_config, dsm_state)
    e0, e1 = (dsm.eps_model(dsm_config, dsm_state, label=i) for i in (0, 1))
    params, source = diffusion_params(args)
    nfe = args.nfe
    t0 = time.perf_counter()
    fit_x = sp.source_train[:-200]  # as translate_digits.py: the last 200 sources are its validation images
    ot_map, _, _ = otald.fit(fit_x, sp.target_train, eps_source=e0, eps_target=e1, schedule=sched, nfe=nfe,
                             end_step=params["otald"]["end_step"])
    ot_fit_seconds = time.perf_counter() - t0
    key = jax.random.PRNGKey(0)
    fns = {
        "DIOTM": (1, jax.jit(lambda u: runs["DIOTM"].method.transport(runs["DIOTM"].config, runs["DIOTM"].state, u))),
        "OTM": (1, jax.jit(lambda u: runs["OTM"].method.transport(runs["OTM"].config, runs["OTM"].state, u))),
        "SDEdit": (nfe, jax.jit(lambda u: sdedit.translate(u, key, nfe=nfe, schedule=sched, eps_target=e1, clip=1.0,
                                                             **params["sdedit"]))),
        "DDIB": (nfe, jax.jit(lambda u: ddib.translate(u, None, nfe=nfe, schedule=sched, eps_source=e0,
                                                         eps_target=e1, clip=1.0, **params["ddib"]))),
        "OT-ALD": (nfe, jax.jit(lambda u: otald.translate(u, None, nfe=nfe, schedule=sched, eps_source=e0,
                                                            eps_target=e1, latent_map=ot_map, clip=1.0,
                                                            **params["otald"]))),
        "LSB": (nfe, jax.jit(lambda u: lsb.translate(u, key, nfe=nfe, schedule=sched, eps_fn=eps, cond_source=0,
                                                       cond_target=1, clip=1.0, **params["lsb"]))),
        "RDMD": (1, jax.jit(lambda u: runs["RDMD"].method.transport(runs["RDMD"].config, runs["RDMD"].state, u))),
    }
    floor = float(np.mean(floors))
    rows = [{"method": "source (identity)", "nfe": 0, "psnr": float(image.psnr(x, y).mean()), "cost": 0.0,
             "accuracy": float(clf.score(flat(x), labels)), "frechet": frechet.frechet_distance(x, y),
             "images_per_s": None},
            {"method": "thick twins (reference)", "nfe": 0, "psnr": float("inf"), "cost": float(np.mean((y - x) ** 2)),
             "accuracy": float(clf.score(flat(y), labels)), "frechet": 0.0, "images_per_s": None}]
    for name, (n, fn) in fns.items():
        out = np.clip(np.asarray(fn(x)), -1, 1)
        rows.append({"method": name, "nfe": n, "psnr": float(image.psnr(out, y).mean()),
                     "cost": float(np.mean((out - x) ** 2)), "accuracy": float(clf.score(flat(out), labels)),
                     "frechet": frechet.frechet_distance(out, y), "images_per_s": rate(fn, x)})
        print(f"{name}: done", flush=True)

    print(f"\nthin -> thick digits, {len(x)} test images; FD floor {floor:.3f} +- {np.std(floors):.3f}; "
          f"diffusion parameters: {source}\n")
    print("| method | NFE | PSNR | accuracy | cost | FD | images/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        print(f"| {r['method']} | {r['nfe']} | {r['psnr']:.2f} | {r['accuracy']:.3f} | {r['cost']:.3f} | "
              f"{r['frechet']:.3f} | {ips} |")
    out = {"rows": rows, "frechet_floor": floor, "frechet_floors": floors, "nfe": nfe, "n_test": len(x),
           "diffusion_params": params, "diffusion_params_source": source, "ot_fit_seconds": ot_fit_seconds,
           "runs": {k: {"workdir": w, "steps": r.step} for k, (w, r) in
                    {"DIOTM": (args.diotm_workdir, runs["DIOTM"]), "OTM": (args.otm_workdir, runs["OTM"]),
                     "RDMD": (args.rdmd_workdir, runs["RDMD"])}.items()},
           "dsm_workdir": args.dsm_workdir, "devices": [str(dv) for dv in jax.devices()]}
    files.write_json(args.out, out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
