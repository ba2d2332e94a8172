"""Cost of one LSB translation (``jot.translate.lsb.translate``) against bare UNet calls, SD 1.5 size.

    python benchmarks/lsb_cost.py                                        # latent 64x64x4 (512 px), batch 1, 8 NFE
    python benchmarks/lsb_cost.py --size 32 --repeats 2 --out /tmp/lsb_cost32.json
    python benchmarks/lsb_cost.py --small --size 8 --repeats 1           # tiny UNet, a quick check

The model is a diffusers ``UNet2DConditionModel`` with the SD 1.5 config (``SD15_UNET`` of
``sd_unet.py``; ``--small``: ``SMALL_UNET`` of ``ti_step.py``) and random weights (torch seed 0),
saved as safetensors in a subprocess and loaded in jot through ``jot.models.sd.convert``
(``sd_unet.load_jot``). It runs as ``jot.models.sd.pipeline.SDEps`` (fp32, no unconditional
branch) with the ``scaled_linear`` 1000-step schedule; the text embeddings are random
``[1, 77, cross_attention_dim]`` arrays, one for the source prompt and one for the target.

Three jitted programs, each timed after a warm-up call (its compile) with
``jax.block_until_ready``:

- **LSB**: ``lsb.translate(z, rng, nfe=N, schedule, eps_fn, cond_source, cond_target)`` on ``B``
  latents with the paper's defaults (sigma 2.3, t0 0.2, w 11, final step on).
- **(a)** ``N`` bare UNet calls on the batch LSB feeds the UNet in its Euler steps: ``2B``
  latents with the stacked ``[c_src; c_tgt]`` embeddings.
- **(b)** ``N`` bare UNet calls on ``B`` latents with the target embeddings.

(a) and (b) are one ``lax.scan`` of ``N`` calls, as LSB's Euler loop is, so dispatch and loop
overhead are alike; each call's output is the next call's input and the fractional steps are
an argument, so XLA can neither hoist nor merge the calls. The weights are an argument of
every program (not constants folded into it).

Work: LSB evaluates the UNet on ``2B`` inputs (both conditions) in each of its ``N - 1`` Euler
steps and on ``B`` (target only) in the final step, so by UNet work alone
``LSB / (a) = ((N - 1) 2B + B) / (N 2B)`` (15/16 at 8 NFE) and ``LSB / (b)`` is twice that;
the rest of LSB (the start point, SNR-matching scale, the concatenation ``[x; x]``, the
velocity and the DDIM move) is elementwise on latents. Reported: median seconds per program
over ``--repeats`` rounds (the three programs interleaved in each round, so load drifts on a
shared machine hit all three), ``ratio_a = LSB / (a)`` (target <= 1.15) and
``ratio_b = LSB / (b)``, the medians of the per-round ratios, the work-based expectations,
``LSB / ((N - 1)/N (a) + 1/N (b))``, which prices LSB's calls at the measured per-call times
(per image, a call on ``B`` is dearer than one on ``2B`` on a CPU, so the work ratio
understates LSB's UNet time), the first call (compile + run) and its excess over the median
(the compile estimate), the JAX version and devices. Results go to ``--out`` as JSON.

Needs torch and diffusers (the test extras) for the random weights. Memory: ~3.4 GB of UNet
weights plus activations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_unet import SD15_UNET, load_jot, run_role  # noqa: E402
from ti_step import SMALL_UNET  # noqa: E402

TEXT_LENGTH = 77
PROGRAMS = ("lsb", "bare_2b", "bare_b")


def prepare(workdir: Path, small: bool) -> None:
    """Save a random (torch seed 0) UNet, SD 1.5 or small, as safetensors under ``workdir / "unet"``."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(**(SMALL_UNET if small else SD15_UNET)).save_pretrained(
        workdir / "unet", safe_serialization=True
    )


def _timed(fn) -> tuple[float, object]:
    """Seconds of ``fn()`` to its ready result, and the result."""
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def measure(workdir: Path, args: argparse.Namespace) -> dict:
    """Loads the UNet and times LSB and the two bare-call references (module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jot.diffusion import schedules
    from jot.models.sd import UNet2DConditionModel
    from jot.models.sd.pipeline import SDEps
    from jot.translate import lsb

    start = time.perf_counter()
    unet = load_jot(workdir / "unet", UNet2DConditionModel, "diffusion_pytorch_model")
    graphdef, params = nnx.split(unet)
    del unet
    load_s = time.perf_counter() - start

    config = json.loads((workdir / "unet" / "config.json").read_text())
    dim, channels, b, nfe = config["cross_attention_dim"], config["in_channels"], args.batch, args.nfe
    schedule = schedules.make("scaled_linear", 1000)
    keys = jax.random.split(jax.random.PRNGKey(0), 5)

    def text(key):
        return jax.random.normal(key, (1, TEXT_LENGTH, dim), jnp.float32)

    c_src, c_tgt = text(keys[0]), text(keys[1])
    eps = SDEps(graphdef=graphdef, params=params, schedule=schedule, context=text(keys[2]), uncond=None,
                guidance=jnp.float32(1.0), prediction_type="epsilon")
    z = jax.random.normal(keys[3], (b, args.size, args.size, channels), jnp.float32)  # NHWC latents
    rng = keys[4]
    both = jnp.concatenate([jnp.broadcast_to(c, (b,) + c.shape[1:]) for c in (c_src, c_tgt)])  # [2B, L, D]
    z2 = jnp.concatenate([z, z])
    # The steps LSB's model calls read at the Euler times (SNR matching); any fractional steps would do.
    times = jnp.linspace(lsb.T0, 1.0, nfe)
    steps = schedule.step_from_alpha_bar(lsb.model_alpha_bar(schedule, times, sigma=lsb.SIGMA))

    @jax.jit
    def chain(eps, x, steps, context):
        """``len(steps)`` UNet calls, each on the previous call's output."""

        def body(x, s):
            return eps(x, jnp.full((x.shape[0],), s, jnp.float32), context).astype(x.dtype), None

        return jax.lax.scan(body, x, steps)[0]

    programs = {
        "lsb": lambda: lsb.translate(z, rng, nfe=nfe, schedule=schedule, eps_fn=eps, cond_source=c_src,
                                     cond_target=c_tgt),
        "bare_2b": lambda: chain(eps, z2, steps, both),
        "bare_b": lambda: chain(eps, z, steps, c_tgt),
    }
    first, outputs = {}, {}
    for name, fn in programs.items():
        first[name], outputs[name] = _timed(fn)
        print(f"  {name}: first call (compile + run) {first[name]:.1f} s", flush=True)
    out = np.asarray(outputs.pop("lsb"))
    del outputs
    times_s = {name: [] for name in programs}
    for r in range(args.repeats):
        for name, fn in programs.items():
            times_s[name].append(_timed(fn)[0])
        print(f"  round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times_s.items()),
              flush=True)
    result = {}
    for name in programs:
        median = statistics.median(times_s[name])
        result[name] = {"times_s": times_s[name], "median_s": median, "first_call_s": first[name],
                        "compile_s": max(first[name] - median, 0.0)}
    return {
        "timings": result,
        "load_s": load_s,
        "lsb_output": {"shape": list(out.shape), "finite": bool(np.isfinite(out).all()),
                       "max_abs": float(np.abs(out).max())},
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "unet_config": config,
    }


def report(res: dict, args: argparse.Namespace, load_at_start) -> dict:
    """Ratios and expectations from ``measure``'s timings."""
    t, b, nfe = res["timings"], args.batch, args.nfe
    med = {k: t[k]["median_s"] for k in PROGRAMS}
    work = {"lsb": (nfe - 1) * 2 * b + b, "bare_2b": nfe * 2 * b, "bare_b": nfe * b}  # UNet image evaluations

    def paired(ref):
        return statistics.median(x / y for x, y in zip(t["lsb"]["times_s"], t[ref]["times_s"]))

    return {
        "config": {"size": args.size, "latent": [args.size, args.size, res["unet_config"]["in_channels"]],
                   "batch": args.batch, "nfe": nfe, "repeats": args.repeats, "small": args.small,
                   "unet": SMALL_UNET if args.small else SD15_UNET, "text_length": TEXT_LENGTH,
                   "dtype": "float32", "schedule": "scaled_linear, 1000 steps",
                   "lsb": "defaults: sigma 2.3, t0 0.2, guidance 11, final step to step 20"},
        "jax_version": res["jax_version"],
        "devices": res["devices"],
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
        "load_s": res["load_s"],
        "timings": t,
        "compile_s": {k: t[k]["compile_s"] for k in PROGRAMS},
        "unet_image_evaluations": work,
        "ratio_a": med["lsb"] / med["bare_2b"],
        "ratio_b": med["lsb"] / med["bare_b"],
        "ratio_a_paired_median": paired("bare_2b"),
        "ratio_b_paired_median": paired("bare_b"),
        "expected_ratio_a": work["lsb"] / work["bare_2b"],
        "expected_ratio_b": work["lsb"] / work["bare_b"],
        "target_ratio_a": 1.15,
        # LSB's UNet calls priced at the measured per-call times: (N - 1) calls of (a) and one of (b).
        "lsb_over_call_model": med["lsb"] / ((nfe - 1) / nfe * med["bare_2b"] + med["bare_b"] / nfe),
        "lsb_output": res["lsb_output"],
    }


def table(rep: dict) -> str:
    c, t, w = rep["config"], rep["timings"], rep["unet_image_evaluations"]
    b, n = c["batch"], c["nfe"]
    rows = [
        ("LSB translate", f"{n - 1}x{2 * b} + 1x{b} = {w['lsb']}", "lsb", ""),
        (f"(a) {n} UNet calls on 2B", f"{n}x{2 * b} = {w['bare_2b']}", "bare_2b",
         f"{rep['ratio_a']:.3f} (paired {rep['ratio_a_paired_median']:.3f})"),
        (f"(b) {n} UNet calls on B", f"{n}x{b} = {w['bare_b']}", "bare_b",
         f"{rep['ratio_b']:.3f} (paired {rep['ratio_b_paired_median']:.3f})"),
    ]
    lines = [
        f"LSB cost, {'small' if c['small'] else 'SD 1.5'} UNet with random weights, latent {c['size']}x{c['size']}x"
        f"{c['latent'][2]}, batch B={b}, {n} NFE, fp32 on {', '.join(rep['devices'])}, jax {rep['jax_version']}, "
        f"median of {c['repeats']} interleaved rounds after one warm-up call each",
        f"{'program':<26} {'UNet image evals':>18} {'median s':>9} {'first call s':>13} {'LSB / this':>22}",
    ]
    for label, evals, key, ratio in rows:
        lines.append(f"{label:<26} {evals:>18} {t[key]['median_s']:9.3f} {t[key]['first_call_s']:13.1f} {ratio:>22}")
    verdict = "within" if rep["ratio_a"] <= rep["target_ratio_a"] else "ABOVE"
    lines += [
        f"LSB runs the UNet on 2B inputs in its NFE-1 Euler steps and on B in the final step, so by work "
        f"LSB/(a) = ((NFE-1)*2B + B) / (NFE*2B) = {rep['expected_ratio_a']:.4f} and LSB/(b) = "
        f"{rep['expected_ratio_b']:.4f}.",
        f"ratio_a = {rep['ratio_a']:.3f}: {verdict} the target <= {rep['target_ratio_a']}; "
        f"'paired' = median over rounds of the same round's ratio.",
        f"LSB / ((NFE-1)/NFE (a) + 1/NFE (b)) = {rep['lsb_over_call_model']:.3f}: LSB against its own UNet calls "
        f"priced at the measured per-call times (a UNet call on B costs more than half of one on 2B on a CPU).",
        f"LSB output {rep['lsb_output']['shape']}, finite: {rep['lsb_output']['finite']}; UNet load "
        f"{rep['load_s']:.1f} s; load average at start {tuple(round(x, 2) for x in rep['machine']['load_average_at_start'])}"
        f", at end {tuple(round(x, 2) for x in rep['machine']['load_average_at_end'])}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="latent side (image side / 8); 32 for a quick run")
    parser.add_argument("--batch", type=int, default=1, help="images B")
    parser.add_argument("--nfe", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (the median is reported)")
    parser.add_argument("--small", action="store_true", help="tiny UNet (ti_step.SMALL_UNET), a quick check")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lsb_cost.json"))
    parser.add_argument("--role", choices=["prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "prepare":
        prepare(args.workdir, args.small)
        print(json.dumps({}))
        return
    if args.nfe < 2 or args.batch < 1 or args.repeats < 1 or args.size < 8 or args.size % 8:
        parser.error("need --nfe >= 2, --batch >= 1, --repeats >= 1 and --size a multiple of 8")

    from jot.files import write_json

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lsb_cost_bench_") as tmp:
        workdir = Path(tmp)
        run_role(__file__, "prepare", workdir, ["--small"] if args.small else [])
        rep = report(measure(workdir, args), args, load_at_start)
    assert all(math.isfinite(rep[k]) and rep[k] > 0 for k in ("ratio_a", "ratio_b"))
    print(table(rep))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(str(args.out), rep)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
