"""RDMD benchmarks: the lambda trade-off on 2D, and one-step digits translation beside
multi-step translators of the same teacher.

    python benchmarks/rdmd.py --part=2d [--steps 3000] [--lams 0,0.05,0.2,1]
    python benchmarks/rdmd.py --part=digits [--steps 600] [--nfe 8]

``2d``: N(0, I) -> 8 Gaussians (``configs/rdmd_2d.py``) from the teacher in ``--teacher_2d``
(trained there with ``configs/rdmd_2d.py:teacher`` when missing); one RDMD run per lambda in
``--workdir``/lam<lambda>; reports on 1000 held-out points the transport cost
``mean ||x - G(x)||^2``, ``W2^2(G#mu, nu)`` and the L2 to the exact discrete OT map
(``jot.methods._ot_eval``). The paper's claim: the cost falls and the W2 rises with lambda.

``digits``: thin -> thick with ``configs/rdmd_digits.py:cpu16`` from the dsm teacher in
``--teacher_digits`` (``configs/dsm_digits.py:cpu16``): RDMD at 1 NFE against DDIB and SDEdit of
the same teacher at ``--nfe`` model calls, scored on the test split by PSNR against the thick
twins, class accuracy (a logistic regression fit on the thick training digits), per-pixel
transport cost, and the Frechet distance (``jot.metrics.frechet``) to the twins next to its floor
(thick training digits vs the twins at the same size); and throughput (images/s, jitted, after one warm-up call) of each on the test split.
Results go to ``--out`` as JSON.

Measured (2 CPU cores; ``benchmarks/results/rdmd.json``). 2D, 3000 steps, the 8000-step teacher:

    lambda   cost    W2^2    L2 to OT
    0       119.3    4.15    45.8      (no correspondence)
    0.05     87.6    7.06    10.3
    0.2       7.9   66.3     66.6      (stays near the identity)
    1         0.18 108.6    108.6

Digits (16x16, 361 test images, RDMD 300 steps per lambda from the 800-step cpu16 teacher;
``--steps 300``; the baselines clip x0 to [-1, 1] while sampling, DDIB ends at 0.5 S as chosen on
validation by ``benchmarks/translate_digits.py``, SDEdit starts at 0.5 S; FD floor 0.094):

    method            PSNR   acc    cost    FD     images/s
    source           12.58  0.950   0      4.48     -
    rdmd lam 0       24.69  0.953   0.238  0.109  2505
    rdmd lam 0.1     24.95  0.958   0.179  0.114  2625
    rdmd lam 0.5     19.32  0.958   0.077  0.779  2639
    rdmd lam 2       14.81  0.961   0.014  2.508  2615
    ddib 8 NFE       18.08  0.922   0.126  0.833   358
    sdedit 8 NFE     12.60  0.274   0.277  1.027   384

The cost falls and the FD rises monotonically with lambda; PSNR peaks at 0.1.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(config, workdir: str) -> dict:
    from jot.train import loop

    path = os.path.join(workdir, "metrics.json")
    if os.path.exists(path) and json.load(open(path)).get("step") == config.train.steps:
        return json.load(open(path))
    loop.train(config, workdir)
    return json.load(open(path))


def part_2d(args) -> dict:
    from configs import rdmd_2d

    if not os.path.exists(os.path.join(args.teacher_2d, "metrics.json")):
        teacher = rdmd_2d.get_config("teacher")
        teacher.train.progress = False
        _train(teacher, args.teacher_2d)
    rows = []
    for lam in [float(v) for v in args.lams.split(",")]:
        c = rdmd_2d.get_config("g8g")
        c.teacher.workdir = args.teacher_2d
        c.loss.lam = lam
        c.train.steps = args.steps
        c.train.progress = False
        t0 = time.perf_counter()
        m = _train(c, os.path.join(args.workdir, "2d", f"lam{lam:g}"))
        rows.append({"lam": lam, "cost": m["cost"], "w2": m["w2"], "l2_to_ot": m["l2_to_ot"],
                     "seconds": time.perf_counter() - t0})
        print(f"lambda {lam:<6g} cost {m['cost']:8.3f}  W2^2 {m['w2']:7.3f}  L2 to OT {m['l2_to_ot']:7.3f}", flush=True)
    return {"rows": rows, "steps": args.steps, "teacher": args.teacher_2d}


def part_digits(args) -> dict:
    import jax
    import numpy as np

    from configs import rdmd_digits
    from jot import train
    from jot.methods import dsm, rdmd
    from jot.metrics import frechet, image
    from jot.translate import ddib, sdedit

    from benchmarks._digits_scoring import flat, rate, scoring

    teacher = train.restore(args.teacher_digits)
    sc = scoring(teacher.config.data)
    x, y, labels, clf, floors = sc.x, sc.y, sc.labels, sc.clf, sc.floors
    runs = {}
    for lam in [float(v) for v in args.digit_lams.split(",")]:
        c = rdmd_digits.get_config("cpu16")
        c.teacher.workdir = args.teacher_digits
        c.train.steps = args.steps
        c.train.progress = False
        c.loss.lam = lam
        wd = os.path.join(args.workdir, f"digits_lam{lam:g}")
        _train(c, wd)
        runs[lam] = train.restore(wd)
    sched = dsm.schedule(teacher.config)
    e0 = dsm.eps_model(teacher.config, teacher.state, label=0)
    e1 = dsm.eps_model(teacher.config, teacher.state, label=1)
    top = float(sched.num_steps - 1)
    fns = {f"rdmd lam={lam:g} (1 NFE)": jax.jit(lambda u, run=run: rdmd.transport(run.config, run.state, u))
           for lam, run in runs.items()}
    fns.update({
        f"ddib ({args.nfe} NFE)": jax.jit(lambda u: ddib.translate(
            u, None, nfe=args.nfe, schedule=sched, eps_source=e0, eps_target=e1,
            end_step=float(round(args.ddib_end * top)), clip=1.0)),
        f"sdedit ({args.nfe} NFE)": jax.jit(lambda u: sdedit.translate(
            u, jax.random.PRNGKey(0), nfe=args.nfe, schedule=sched, eps_target=e1, start_step=args.sdedit_t * top,
            clip=1.0)),
    })
    rows = [{"method": "source (identity)", "psnr": float(image.psnr(x, y).mean()), "cost": 0.0,
             "accuracy": float(clf.score(flat(x), labels)), "frechet": frechet.frechet_distance(x, y),
             "images_per_s": None}]
    for name, fn in fns.items():
        out = np.clip(np.asarray(fn(x)), -1, 1)
        rows.append({"method": name, "psnr": float(image.psnr(out, y).mean()), "cost": float(np.mean((out - x) ** 2)),
                     "accuracy": float(clf.score(flat(out), labels)), "frechet": frechet.frechet_distance(out, y),
                     "images_per_s": rate(fn, x)})
    floor = float(np.mean(floors))
    for r in rows:
        rate = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        print(f"{r['method']:<18} PSNR {r['psnr']:6.2f}  acc {r['accuracy']:.3f}  cost {r['cost']:.4f}  "
              f"FD {r['frechet']:.4f} (floor {floor:.4f})  images/s {rate}", flush=True)
    return {"rows": rows, "frechet_floor": floor, "frechet_floors": floors, "steps": args.steps, "nfe": args.nfe,
            "n_test": len(x), "teacher": args.teacher_digits,
            "floor": "mean FD of 5 random sets of thick training images, as many as the test twins, to the twins"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["2d", "digits", "all"], default="all")
    p.add_argument("--steps", type=int, default=None, help="RDMD steps (default: 3000 for 2d, 600 for digits)")
    p.add_argument("--lams", default="0,0.05,0.2,1")
    p.add_argument("--nfe", type=int, default=8)
    p.add_argument("--digit_lams", default="0,0.1,0.5,2",
                   help="digits: lambda values (per-pixel mean cost, so not on the 2D scale)")
    p.add_argument("--sdedit_t", type=float, default=0.5, help="SDEdit start step as a fraction of the schedule")
    p.add_argument("--ddib_end", type=float, default=0.5,
                   help="DDIB end step as a fraction of the schedule (0.5: the validation choice of "
                        "benchmarks/translate_digits.py at 8 NFE)")
    p.add_argument("--teacher_2d", default="runs/rdmd_2d_teacher")
    p.add_argument("--teacher_digits", default="runs/dsm_digits16")
    p.add_argument("--workdir", default="runs/bench_rdmd")
    p.add_argument("--out", default="benchmarks/results/rdmd.json")
    args = p.parse_args()
    results = {}
    steps = args.steps
    if args.part in ("2d", "all"):
        args.steps = steps or 3000
        results["2d"] = part_2d(args)
    if args.part in ("digits", "all"):
        args.steps = steps or 600
        results["digits"] = part_digits(args)
    from jot import files

    old = json.load(open(args.out)) if os.path.exists(args.out) else {}
    files.write_json(args.out, {**old, **results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
