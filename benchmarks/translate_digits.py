"""Thin -> thick digits: LSB, SDEdit, DDIB and OT-ALD at equal NFE, parameters chosen on validation.

    python benchmarks/translate_digits.py --workdir=runs/dsm_digits16
    python benchmarks/translate_digits.py --workdir=runs/dsm_digits16 --nfes=8 --lsb_guidance=1,3
    python benchmarks/translate_digits.py --model=text     # sd_dsm:digits with learned <thin> / <thick>

Uses (or first trains, with ``configs/dsm_digits.py:cpu16`` through the generic loop) one
domain-conditioned UNet in ``--workdir`` (thin = label 0, thick = label 1). Every method makes
exactly ``NFE`` model calls per image.

Protocol (no test image is used to choose anything):

1. **Validation split.** The last ``--num_val`` (200) *source training* images (thin) are the
   validation sources; their outputs are scored by the Frechet distance (FD, the fixed
   random-feature space of ``jot.metrics.frechet``) to all thick *training* images. The OT-ALD
   map is fit on the remaining source training images and the thick training images (the
   validation sources are not in the fit; the thick training images are both the map's target
   latents and the validation FD reference, which can only favour OT-ALD, and only in its
   end-step choice). Validation noise uses ``PRNGKey(1)`` for every candidate, test noise
   ``PRNGKey(0)``.
2. **Selection.** At each NFE every method's free parameters are chosen over a grid fixed in
   advance (the flags' defaults), by two rules, each reported in its own test table:

   - ``fd``: the lowest validation FD;
   - ``faithful``: the lowest validation FD among the candidates whose validation class accuracy
     (the classifier below, on the validation sources' labels) is at least
     ``--min_val_accuracy`` = 0.8 (the untranslated validation sources score 0.90, the test
     sources 0.95); the most accurate candidate if none is. FD alone rewards outputs that drop the source digit for a
     typical thick digit (a translation that ignores its input); this rule asks for the best
     target fit among translations that keep the digit.

   The grids:

   - LSB (``jot.translate.lsb``, SNR matching, time-dependent noise, final step all on):
     guidance ``w`` in {1, 3, 5, 11}, bridge noise ``sigma`` in {1.0, 2.3, 4.0}, start time
     ``t0`` in {0.2, 0.4} (24 candidates);
   - SDEdit: start step ``s0`` in {0.3, 0.5, 0.7} x (S - 1);
   - SDEdit-SNR: no free parameter of its own; ``s0`` = ``bridge.snr_matched_step(t0, sigma)``
     with the LSB ``sigma``, ``t0`` selected at the same NFE by the same rule (the SDEdit
     baseline LSB's paper matches to its initial SNR);
   - DDIB and OT-ALD: end step in {1.0, ``--early_end`` = 0.5} x (S - 1).

   The OT-ALD map options (``--ot_map`` etc.) are fixed, not selected.
3. **Test.** The selected configuration of each method translates every test thin image (at
   each of ``--nfes``, default 4, 8, 16). Reported: PSNR to the true thick twin; class accuracy
   under a logistic regression fit on the thick training images; FD to the thick test twins;
   the FD floor at the same sample sizes (mean +- std over 5 random subsets of the thick
   *training* images, as many as there are test images, against the same thick test twins:
   two samples of the thick distribution); milliseconds per image (one jitted call on the whole
   test set after two warm-up calls; the machine may be shared, so timings are indicative).
   For OT-ALD the held-out latent diagnostics of ``jot.translate.otald.latent_report`` are also
   reported (keys ``heldout_*``: the first half of the test sources is mapped and compared with
   the target latents of the second half of the test twins, whose first half gives the
   two-sample floor): per-pixel exact ``W2^2`` before / after / floor, marginal (per-coordinate
   1-D) ``W2^2`` after / floor, Bures ``W2^2`` after / floor, the variance ratio
   ``var(M(Z_A)) / var(Z_B)`` (mean and spread, and of the totals) and the fraction of mapped
   latents on fitted target latents. In 256 dimensions with a few hundred latents a map that
   shrinks scores a sample ``W2^2`` *below* the floor; the marginal ``W2^2`` and the variance
   ratio expose it.
4. **Ablation** (LSB's Table 2 rows, cumulative, at ``--ablation_nfe`` = 8 with the LSB
   parameters selected at that NFE, on the test images): all on; no SNR matching; + no
   time-dependent noise; + no guidance (w = 1); + no final step (then all ``NFE`` calls are
   Euler steps). Same metrics.

``--model=text`` runs the same protocol on the text-conditioned ``sd_dsm:digits`` model (an
SD-architecture UNet with cross-attention to a frozen CLIP text encoder, pixel space) with the
prompts ``"a <thin> digit"`` / ``"a <thick> digit"``, whose tokens were learned by textual
inversion from the thin and the thick training digits (``--ti_workdirs``; trained first if
missing, as ``benchmarks/textual_inversion_digits.py`` does), through ``jot.translate.sd``. LSB's
two conditions are then the two prompts; SDEdit, DDIB and OT-ALD sample with the target prompt
and DDIB/OT-ALD invert with the source prompt, without guidance. ``--source_prompt`` /
``--target_prompt`` change the prompts (e.g. the true "a thin digit" / "a thick digit").

Tables are printed; everything (reference numbers, every validation candidate, the selection,
test rows, ablation) is written as JSON to ``--out``.
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
from jot.diffusion import bridge  # noqa: E402
from jot.methods import dsm  # noqa: E402
from jot.metrics import frechet, image  # noqa: E402
from jot.ot import maps  # noqa: E402
from jot import train  # noqa: E402
from jot.translate import ddib, lsb, otald, sdedit  # noqa: E402

VAL_KEY, TEST_KEY = jax.random.PRNGKey(1), jax.random.PRNGKey(0)
FLOOR_DRAWS = 5
ABLATION = (  # (row name, switches), each row adds its switch to the previous ones
    ("all on", {}),
    ("no SNR matching", {"snr_matching": False}),
    ("+ no time-dependent noise", {"time_dependent_noise": False}),
    ("+ no guidance (w=1)", {"guidance": 1.0}),
    ("+ no final step", {"final_step": False}),
)


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


RULES = {
    "fd": "lowest validation FD",
    "faithful": "lowest validation FD among candidates whose validation class accuracy is at least "
                "--min_val_accuracy; the most accurate candidate if none is",
}


def choose(cands: list, rule: str, min_accuracy: float):
    """The ``(row, fn)`` of ``cands`` that ``rule`` picks (``RULES``)."""
    if rule == "faithful":
        kept = [c for c in cands if c[0]["val_accuracy"] >= min_accuracy]
        if not kept:
            return max(cands, key=lambda c: c[0]["val_accuracy"])
        cands = kept
    return min(cands, key=lambda c: c[0]["val_frechet"])


def load_text_model(args):
    """The ``sd_dsm:digits`` model (trained, with ``<thin>`` and ``<thick>`` learned by textual
    inversion, if ``--sd_workdir`` / ``--ti_workdirs`` do not hold them yet) as a pipeline."""
    from benchmarks.textual_inversion_digits import _trained
    from configs import sd_dsm as sd_dsm_config
    from configs import textual_inversion as ti_config
    from jot.methods import sd_dsm

    sd_config = sd_dsm_config.get_config("digits")
    sd_config.train.progress = False
    print(f"sd_dsm: {_trained(sd_config, args.sd_workdir):.0f} s of training", flush=True)
    ti_dirs = args.ti_workdirs.split(",")
    for folder, token, key in zip(ti_dirs, ("<thin>", "<thick>"), ("x", "y")):
        ti = ti_config.get_config("digits")
        ti.model.workdir = args.sd_workdir
        ti.textual_inversion.tokens, ti.textual_inversion.key = (token,), key
        ti.train.progress = False
        print(f"textual inversion {token}: {_trained(ti, folder):.0f} s of training", flush=True)
    run = train.restore(args.sd_workdir)
    return run.config, sd_dsm.text_pipeline(run.config, run.state).with_textual_inversion(ti_dirs)


def timed(fn, x):
    jax.block_until_ready(fn(x[:8]))  # compile for a small batch is not enough: warm the full shape
    jax.block_until_ready(fn(x))
    t0 = time.perf_counter()
    y = np.asarray(jax.block_until_ready(fn(x)))
    return y, (time.perf_counter() - t0) / len(x)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def flat(a):
    return np.asarray(a).reshape(len(a), -1)


def describe(params: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/dsm_digits16")
    p.add_argument("--preset", default="cpu16")
    p.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    p.add_argument("--nfes", default="4,8,16")
    p.add_argument("--num_fit", type=int, default=0,
                   help="training images per domain for the OT-ALD map (0 = all but the validation sources)")
    p.add_argument("--ot_map", default=maps.DEFAULT_LATENT_MAP, choices=list(maps.METHODS),
                   help="OT-ALD latent map (jot.ot.maps)")
    p.add_argument("--ot_epsilon", type=float, default=0.0,
                   help="entropic: fraction of the mean cost (0 = from --ot_neighbours); semidiscrete: temperature")
    p.add_argument("--ot_neighbours", type=float, default=maps.DEFAULT_NEIGHBOURS,
                   help="entropic map: effective number of fitted targets averaged")
    p.add_argument("--num_test", type=int, default=0, help="test images to translate (0 = all)")
    p.add_argument("--num_val", type=int, default=200, help="validation sources: the last N source training images")
    p.add_argument("--ot_shrinkage", default="auto", help="gaussian map: covariance shrinkage ('auto' = Ledoit-Wolf, or in [0, 1])")
    p.add_argument("--early_end", type=float, default=0.5,
                   help="DDIB / OT-ALD end-step grid: {1.0, this} x (S-1)")
    p.add_argument("--sdedit_start", default="0.3,0.5,0.7", help="SDEdit s0 grid, fractions of S-1")
    p.add_argument("--lsb_guidance", default="1,3,5,11", help="LSB guidance grid")
    p.add_argument("--lsb_sigma", default="1.0,2.3,4.0", help="LSB bridge noise grid")
    p.add_argument("--lsb_t0", default="0.2,0.4", help="LSB start-time grid")
    p.add_argument("--ablation_nfe", type=int, default=8, help="NFE of the LSB ablation (0 = none)")
    p.add_argument("--min_val_accuracy", type=float, default=0.8,
                   help="the faithful rule's floor on validation class accuracy (untranslated validation "
                   "sources: 0.90)")
    p.add_argument("--model", default="dsm", choices=["dsm", "text"],
                   help="dsm: the domain-conditioned UNet (labels 0 -> 1); text: the sd_dsm:digits model with prompts")
    p.add_argument("--sd_workdir", default="runs/sd_digits", help="text: the sd_dsm:digits run")
    p.add_argument("--ti_workdirs", default="runs/ti_thin,runs/ti_thick",
                   help="text: textual-inversion runs learning <thin> (from thin) and <thick> (from thick digits)")
    p.add_argument("--source_prompt", default="a <thin> digit", help="text: the source domain's prompt")
    p.add_argument("--target_prompt", default="a <thick> digit", help="text: the target domain's prompt")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/translate_digits[_text].json)")
    args = p.parse_args()
    args.out = args.out or f"benchmarks/results/translate_digits{'_text' if args.model == 'text' else ''}.json"

    if args.model == "text":
        config, pipe = load_text_model(args)
        state = None
    else:
        config, state = load_model(args.workdir, args.preset, args.steps)
    sp = digits.split(config.data.size, config.data.thickness, config.data.split_seed)
    sched = pipe.schedule if args.model == "text" else dsm.schedule(config)
    top = float(sched.num_steps - 1)
    nfes = [int(n) for n in args.nfes.split(",")]

    n_val = args.num_val
    if not 2 <= n_val < len(sp.source_train):
        raise SystemExit(f"--num_val={n_val}: needs 2 <= N < {len(sp.source_train)} source training images")
    val_x, val_labels = jnp.asarray(sp.source_train[-n_val:]), sp.source_labels[-n_val:]
    source_fit = sp.source_train[:-n_val]
    n_fit = args.num_fit or None
    fit_x, fit_y = jnp.asarray(source_fit[:n_fit]), jnp.asarray(sp.target_train[:n_fit])
    num_test = args.num_test or len(sp.test_x)
    test_x, test_y, test_labels = sp.test_x[:num_test], sp.test_y[:num_test], sp.test_labels[:num_test]
    x_test = jnp.asarray(test_x)

    clf = LogisticRegression(max_iter=2000).fit(flat(sp.target_train), sp.target_labels)
    floor_rng = np.random.default_rng(0)
    floors = [frechet.frechet_distance(sp.target_train[floor_rng.choice(len(sp.target_train), num_test, replace=False)],
                                       test_y) for _ in range(FLOOR_DRAWS)] if num_test <= len(sp.target_train) else []
    reference = {
        "twin_accuracy": float(clf.score(flat(test_y), test_labels)),
        "source_accuracy": float(clf.score(flat(test_x), test_labels)),
        "val_source_accuracy": float(clf.score(flat(val_x), val_labels)),
        "source_psnr": float(image.psnr(test_x, test_y).mean()),
        "source_frechet": frechet.frechet_distance(test_x, test_y),
        "train_target_frechet": frechet.frechet_distance(sp.target_train, test_y),
        "frechet_floor": float(np.mean(floors)) if floors else None,
        "frechet_floor_std": float(np.std(floors)) if floors else None,
        "val_source_frechet": frechet.frechet_distance(val_x, sp.target_train),
    }
    print("reference:", json.dumps(reference), flush=True)

    # --- candidates: fn(x, rng) for one method, NFE and parameters -----------------------------
    ot_maps = {}
    if args.model == "text":
        from jot.translate import sd as sd_translate

        def translator(method, nfe, **params):
            return sd_translate.Translator(pipe, args.source_prompt, args.target_prompt,
                                           sd_translate.Settings(method=method, nfe=nfe, clip=1.0, **params))

        def lsb_fn(nfe, guidance, sigma, t0, **switches):
            return translator("lsb", nfe, guidance=guidance, sigma=sigma, t0=t0, **switches)

        def sdedit_fn(nfe, start_step):
            return translator("sdedit", nfe, guidance=1.0, sdedit_start_step=start_step)

        def ddib_fn(nfe, end_step):
            return translator("ddib", nfe, guidance=1.0, end_step=end_step)

        def otald_fn(nfe, end_step):
            if (nfe, end_step) not in ot_maps:
                t0 = time.perf_counter()
                tr = translator("otald", nfe, guidance=1.0, end_step=end_step)
                tr.fit_otald(fit_x, fit_y, method=args.ot_map, epsilon=args.ot_epsilon or None,
                             neighbours=args.ot_neighbours, shrinkage=args.ot_shrinkage)
                ot_maps[nfe, end_step] = (tr, None, time.perf_counter() - t0)
            return ot_maps[nfe, end_step][0]
    else:
        eps = dsm.eps_model(config, state)  # conditional: the condition is the domain label
        eps_a, eps_b = (dsm.eps_model(config, state, label=i) for i in (0, 1))

        def lsb_fn(nfe, guidance, sigma, t0, **switches):
            return lambda x, rng: lsb.translate(x, rng, nfe=nfe, schedule=sched, eps_fn=eps, cond_source=0,
                                                cond_target=1, guidance=guidance, sigma=sigma, t0=t0, clip=1.0,
                                                **switches)

        def sdedit_fn(nfe, start_step):
            return lambda x, rng: sdedit.translate(x, rng, nfe=nfe, schedule=sched, eps_target=eps_b,
                                                   start_step=start_step, clip=1.0)

        def ddib_fn(nfe, end_step):
            return lambda x, rng: ddib.translate(x, None, nfe=nfe, schedule=sched, eps_source=eps_a,
                                                 eps_target=eps_b, end_step=end_step, clip=1.0)

        def otald_fn(nfe, end_step):
            if (nfe, end_step) not in ot_maps:
                t0 = time.perf_counter()
                m, _, z_b = otald.fit(fit_x, fit_y, eps_source=eps_a, eps_target=eps_b, schedule=sched, nfe=nfe,
                                      end_step=end_step, method=args.ot_map, epsilon=args.ot_epsilon or None,
                                      neighbours=args.ot_neighbours, shrinkage=args.ot_shrinkage)
                ot_maps[nfe, end_step] = (m, z_b, time.perf_counter() - t0)
            m = ot_maps[nfe, end_step][0]
            return lambda x, rng: otald.translate(x, None, nfe=nfe, schedule=sched, eps_source=eps_a,
                                                  eps_target=eps_b, latent_map=m, end_step=end_step, clip=1.0)

    ends = [1.0] + ([args.early_end] if args.early_end != 1.0 else [])
    lsb_grid = [{"guidance": w, "sigma": s, "t0": t} for w in floats(args.lsb_guidance)
                for s in floats(args.lsb_sigma) for t in floats(args.lsb_t0)]
    grids = {
        "lsb": lambda nfe, sel: [(q, lsb_fn(nfe, **q)) for q in lsb_grid],
        "sdedit": lambda nfe, sel: [({"start": f, "start_step": round(f * top, 1)}, sdedit_fn(nfe, f * top))
                                    for f in floats(args.sdedit_start)],
        "sdedit-snr": lambda nfe, sel: [(
            {"start_step": round(s, 1), "lsb_sigma": sel["lsb"]["sigma"], "lsb_t0": sel["lsb"]["t0"]},
            sdedit_fn(nfe, s)) for s in [float(bridge.snr_matched_step(sched, sel["lsb"]["t0"],
                                                                        sigma=sel["lsb"]["sigma"]))]],
        "ddib": lambda nfe, sel: [({"end": f, "end_step": round(f * top)}, ddib_fn(nfe, float(round(f * top))))
                                  for f in ends],
        "otald": lambda nfe, sel: [({"end": f, "end_step": round(f * top)}, otald_fn(nfe, float(round(f * top))))
                                   for f in ends],
    }

    # --- 1-2: validation, then each rule's choice --------------------------------------------------
    validation, selected, chosen_fn = [], {rule: {} for rule in RULES}, {}
    for nfe in sorted(set(nfes) | ({args.ablation_nfe} if args.ablation_nfe else set())):
        for rule in RULES:
            selected[rule][nfe] = {}
        for method, grid in grids.items():
            if nfe not in nfes and method != "lsb":
                continue  # the ablation NFE only needs LSB's choice
            # SDEdit-SNR follows each rule's LSB choice: its candidates depend on the rule.
            per_rule = {rule: grid(nfe, selected[rule][nfe]) for rule in RULES} if method == "sdedit-snr" else None
            pool = [c for rule in RULES for c in per_rule[rule]] if per_rule else grid(nfe, None)
            seen = {}
            for params, fn in pool:
                key = json.dumps(params, sort_keys=True)
                if key in seen:
                    continue
                t0 = time.perf_counter()
                y = np.asarray(jax.block_until_ready(fn(val_x, VAL_KEY)))
                row = {"method": method, "nfe": nfe, "params": params,
                       "val_frechet": frechet.frechet_distance(y, sp.target_train),
                       "val_accuracy": float(clf.score(flat(y), val_labels)),
                       "seconds": time.perf_counter() - t0}
                validation.append(row)
                seen[key] = (row, fn)
                print("val", json.dumps(row), flush=True)
            for rule in RULES:
                own = ([seen[json.dumps(q, sort_keys=True)] for q, _ in per_rule[rule]] if per_rule
                       else list(seen.values()))
                row, fn = choose(own, rule, args.min_val_accuracy)
                selected[rule][nfe][method] = row["params"]
                chosen_fn[rule, method, nfe] = fn
                print(f"chosen at NFE {nfe} ({rule}): {method} {describe(row['params'])} (val FD "
                      f"{row['val_frechet']:.4f}, val acc {row['val_accuracy']:.3f})", flush=True)

    # --- 3: test rows -------------------------------------------------------------------------
    def score(y):
        return {"psnr": float(image.psnr(y, test_y).mean()), "accuracy": float(clf.score(flat(y), test_labels)),
                "frechet": frechet.frechet_distance(y, test_y), "frechet_floor": reference["frechet_floor"]}

    rows, done = [], {}
    for rule in RULES:
        for nfe in nfes:
            for method in grids:
                params = selected[rule][nfe][method]
                key = (method, nfe, json.dumps(params, sort_keys=True))
                if key not in done:  # the rules often agree: translate once
                    fn = chosen_fn[rule, method, nfe]
                    y, sec = timed(lambda x, fn=fn: fn(x, TEST_KEY), x_test)
                    done[key] = {**score(y), "seconds_per_image": sec}
                    if method == "otald" and args.model == "dsm":
                        end = float(params["end_step"])
                        m, z_b, fit_seconds = ot_maps[nfe, end]
                        report = otald.latent_report(m, x_test[: len(x_test) // 2], jnp.asarray(test_y),
                                                     eps_source=eps_a, eps_target=eps_b, schedule=sched, nfe=nfe,
                                                     end_step=end, z_target_fit=z_b)
                        done[key].update({f"heldout_{k}": v for k, v in report.items()}, fit_seconds=fit_seconds)
                row = {"rule": rule, "method": method, "nfe": nfe, "params": params, **done[key]}
                rows.append(row)
                print("test", json.dumps(row), flush=True)

    # --- 4: LSB ablation ----------------------------------------------------------------------
    ablation = []
    if args.ablation_nfe:
        for rule in RULES:
            nfe, switches = args.ablation_nfe, dict(selected[rule][args.ablation_nfe]["lsb"])
            for name, change in ABLATION:
                switches.update(change)
                y, sec = timed(lambda x, q=dict(switches): lsb_fn(nfe, **q)(x, TEST_KEY), x_test)
                row = {"rule": rule, "row": name, "nfe": nfe, "params": dict(switches), **score(y),
                       "seconds_per_image": sec}
                ablation.append(row)
                print("ablation", json.dumps(row), flush=True)

    # --- tables -------------------------------------------------------------------------------
    floor = reference["frechet_floor"]
    print(f"\nS = {sched.num_steps}; {n_val} validation sources (last source training images), FD against "
          f"{len(sp.target_train)} thick training images; {len(test_x)} test images; OT-ALD map {args.ot_map} "
          f"(shrinkage {args.ot_shrinkage}, epsilon {args.ot_epsilon}, neighbours {args.ot_neighbours}) fit on "
          f"{len(fit_x)} / {len(fit_y)} source / target training images")
    print(f"reference: source PSNR {reference['source_psnr']:.2f}, source acc {reference['source_accuracy']:.3f}, "
          f"twin acc {reference['twin_accuracy']:.3f}, source FD {reference['source_frechet']:.4f}, FD floor "
          f"{floor if floor is None else round(floor, 4)} +- "
          f"{reference['frechet_floor_std'] if floor is None else round(reference['frechet_floor_std'], 4)} "
          f"(thick train subsets of {num_test} vs the thick test twins)")

    print(f"\nvalidation (FD to thick training images; F = chosen by the fd rule, A = by the faithful rule: "
          f"lowest FD with validation accuracy >= {args.min_val_accuracy})")
    print(f"{'method':<12}{'NFE':>4}   {'params':<44}{'val FD':>9}{'val acc':>9}")
    for r in validation:
        marks = "".join(tag if selected[rule][r["nfe"]].get(r["method"]) == r["params"] else " "
                        for rule, tag in (("fd", "F"), ("faithful", "A")))
        print(f"{r['method']:<12}{r['nfe']:>4} {marks}{describe(r['params']):<44}{r['val_frechet']:>9.4f}"
              f"{r['val_accuracy']:>9.3f}")

    head = f"{'PSNR':>8}{'acc':>7}{'FD':>9}{'floor':>8}{'ms/img':>8}"

    def metrics(r):
        fl = "-" if r["frechet_floor"] is None else f"{r['frechet_floor']:.4f}"
        return (f"{r['psnr']:>8.2f}{r['accuracy']:>7.3f}{r['frechet']:>9.4f}{fl:>8}"
                f"{1e3 * r['seconds_per_image']:>8.2f}")

    for rule in RULES:
        print(f"\ntest, {rule} rule ({RULES[rule]}; FD to the thick test twins, floor = thick train vs test at the "
              "same size)")
        print(f"{'method':<12}{'NFE':>4}  {'params':<44}{head}")
        for r in rows:
            if r["rule"] == rule:
                print(f"{r['method']:<12}{r['nfe']:>4}  {describe(r['params']):<44}{metrics(r)}")

    ot_rows = [r for r in rows if "heldout_w2sq_after" in r and r["rule"] == "fd"]
    if ot_rows:
        print("\nOT-ALD latents (held out, per pixel): W2 = exact W2^2 of the unmapped (before) / mapped (after) test "
              "sources and of a second target sample (floor) against target latents; marg = per-coordinate 1-D W2^2; "
              "var = var(mapped) / var(target), mean +- spread over pixels; tot = the ratio of total variances; "
              "coll = share on fitted targets")
        print(f"{'NFE':>4}{'end':>6}{'W2 before':>11}{'W2 after':>10}{'W2 floor':>10}{'marg':>8}{'floor':>8}"
              f"{'Bures':>8}{'floor':>8}{'var':>13}{'tot':>7}{'coll':>6}{'fit s':>7}")
        for r in ot_rows:
            h = {k.removeprefix("heldout_"): v for k, v in r.items() if k.startswith("heldout_")}
            print(f"{r['nfe']:>4}{r['params']['end_step']:>6}{h['w2sq_before']:>11.4f}{h['w2sq_after']:>10.4f}"
                  f"{h['w2sq_floor']:>10.4f}{h['marginal_w2sq_after']:>8.4f}{h['marginal_w2sq_floor']:>8.4f}"
                  f"{h['bures_w2sq_after']:>8.4f}{h['bures_w2sq_floor']:>8.4f}"
                  f"{h['var_ratio_mean']:>7.3f}+-{h['var_ratio_std']:.2f}{h['var_ratio_total']:>7.3f}"
                  f"{h['collapse_fraction']:>6.2f}{r['fit_seconds']:>7.1f}")

    for rule in RULES if ablation else ():
        print(f"\nLSB ablation at NFE {args.ablation_nfe} (LSB parameters of the {rule} rule; rows cumulative)")
        print(f"{'row':<28}{'w':>5}{'sigma':>6}{'t0':>5}{head}")
        for r in ablation:
            if r["rule"] == rule:
                q = r["params"]
                print(f"{r['row']:<28}{q['guidance']:>5g}{q['sigma']:>6g}{q['t0']:>5g}{metrics(r)}")

    files.write_json(args.out, {
        "reference": reference, "frechet_floors": floors,
        "protocol": {"num_val": n_val, "val_reference": "thick training images", "val_key": 1, "test_key": 0,
                     "num_fit": [len(fit_x), len(fit_y)], "num_test": num_test,
                     "grids": {"lsb": lsb_grid, "sdedit_start": floats(args.sdedit_start), "end": ends},
                     "rules": RULES, "min_val_accuracy": args.min_val_accuracy, "model": args.model,
                     "prompts": [args.source_prompt, args.target_prompt] if args.model == "text" else None,
                     "floor": f"mean over {FLOOR_DRAWS} random subsets of {num_test} thick training images vs the "
                              f"{num_test} thick test twins"},
        "validation": validation,
        "selected": {rule: {str(k): v for k, v in sel.items()} for rule, sel in selected.items()}, "rows": rows,
        "ablation": ablation, "args": vars(args), "devices": str(jax.devices()),
    })


if __name__ == "__main__":
    main()
