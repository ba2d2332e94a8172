"""Textual inversion on the offline digits: does a learned "<thick>" stand in for "a thick digit"?

    python benchmarks/textual_inversion_digits.py [--sd_workdir runs/sd_digits] [--ti_workdir runs/ti_thick]

1. trains (or reuses) the text-conditioned SD-architecture model ``configs/sd_dsm.py:digits``
   on thin and thick training digits with the prompts "a thin digit" / "a thick digit";
2. learns the embedding of "<thick>" from the thick training digits against that frozen
   model (``configs/textual_inversion.py:digits``: template "a {} digit", initialised from the
   embedding of "digit", 400 AdamW steps; settings fixed in advance, not tuned on these numbers);
3. evaluates on the held-out thick digits (never seen by either training): the denoising loss
   at steps S/10, S/2, 9S/10 with fixed noise, and the Frechet distance of 150 DDIM samples
   (20 steps) to 150 held-out thick digits, next to the floor (two disjoint held-out sets of
   150), for the prompt with the learned token, with the initial embedding (before training),
   and with the true prompts "a thick digit" and "a thin digit".

Prints the table and writes JSON (``--out``).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from configs import sd_dsm as sd_dsm_config  # noqa: E402
from configs import textual_inversion as ti_config  # noqa: E402
from jot import files, train  # noqa: E402
from jot.methods import textual_inversion  # noqa: E402


def _trained(config, workdir: str) -> float:
    """Trains ``config`` in ``workdir`` unless it already holds the final step; the seconds spent."""
    try:
        if train.restore(workdir, config=config).step >= config.train.steps:
            return 0.0
    except train.NoRun:
        pass
    t0 = time.perf_counter()
    train.train(config, workdir)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sd_workdir", default="runs/sd_digits")
    p.add_argument("--ti_workdir", default="runs/ti_thick")
    p.add_argument("--out", default="benchmarks/results/textual_inversion_digits.json")
    args = p.parse_args()

    sd_config = sd_dsm_config.get_config("digits")
    sd_config.train.progress = False
    sd_seconds = _trained(sd_config, args.sd_workdir)
    ti = ti_config.get_config("digits")
    ti.model.workdir = args.sd_workdir
    ti.train.progress = False
    ti_seconds = _trained(ti, args.ti_workdir)

    model = train.restore(args.ti_workdir)
    data = model.dataset.eval_data()
    learned = textual_inversion.evaluate(model.config, model.state, data, None)
    start = textual_inversion.init(model.config, jax.random.PRNGKey(0), {}, model.state.pretrained)
    initial = textual_inversion.evaluate(model.config, model.state.replace(params=start.params), data, None)

    rows = [("a <thick> digit (learned)", learned, ""), ("a <thick> digit (initial: 'digit')", initial, ""),
            ("a thick digit (true prompt)", learned, "ref0_"), ("a thin digit (other domain)", learned, "ref1_")]
    print(f"\nheld-out thick digits: {len(data['y'])}; sd_dsm {sd_config.train.steps} steps "
          f"({sd_seconds:.0f} s this run), textual inversion {ti.train.steps} steps ({ti_seconds:.0f} s this run)\n")
    print(f"{'prompt':<36}{'loss S/10':>10}{'loss S/2':>10}{'loss 9S/10':>11}{'FD':>9}")
    table = []
    for name, metrics, prefix in rows:
        row = {"prompt": name, **{k: metrics[f"{prefix}{k}"] for k in ("loss_s0.1", "loss_s0.5", "loss_s0.9", "fd")}}
        table.append(row)
        print(f"{name:<36}{row['loss_s0.1']:>10.4f}{row['loss_s0.5']:>10.4f}{row['loss_s0.9']:>11.4f}{row['fd']:>9.3f}")
    print(f"{'floor (held-out vs held-out)':<36}{'':>31}{learned['fd_floor']:>9.3f}")
    ratio = {k: table[0][k] / table[2][k] for k in ("loss_s0.1", "loss_s0.5", "loss_s0.9")}
    print("\nlearned / true-prompt loss: " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
    files.write_json(args.out, {"rows": table, "fd_floor": learned["fd_floor"], "loss_ratio_learned_to_true": ratio,
                                "sd_steps": sd_config.train.steps, "ti_steps": ti.train.steps,
                                "held_out": len(data["y"])})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
