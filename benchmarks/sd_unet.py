"""Forward time and memory of jot's SD UNet vs diffusers' PyTorch UNet at the real SD 1.5 size.

    python benchmarks/sd_unet.py                       # latents 32x32 and 64x64, batch 2, 77 tokens
    python benchmarks/sd_unet.py --sizes 32 --repeats 3 --out /tmp/sd_unet.json

Both frameworks run the same random weights: a diffusers ``UNet2DConditionModel``
with the SD 1.5 config (block_out_channels 320/640/1280/1280, attention_head_dim 8,
cross_attention_dim 768) is saved as safetensors once and loaded by each side, jot
through ``jot.models.sd.convert``. Each framework runs in its own subprocess, pinned
to the same CPU cores with the same thread count, so that peak RSS
(``ru_maxrss``) is per framework. fp32; jot is jitted and timed after a warm-up call
(compile time reported separately); torch runs under ``torch.no_grad()`` in eval
mode. The table gives the median of ``--repeats`` timed calls and
``ratio = torch_time / jot_time`` (> 1: jot is faster), plus the max abs difference
of the two outputs. Results are written as JSON to ``--out``.

Needs torch and diffusers (the test extras). Memory: ~3.4 GB of weights per process.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
)


def _rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process in MiB (Linux /proc and getrusage)."""
    current = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    return {"rss_mb": current, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _pin(threads: int) -> list[int]:
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    return cores


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def prepare(workdir: Path, sizes: list[int], batch: int) -> None:
    """Save random SD 1.5 UNet weights (safetensors) and the inputs for every latent size."""
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(**SD15_UNET).save_pretrained(workdir / "unet", safe_serialization=True)
    rng = np.random.default_rng(0)
    for size in sizes:
        np.savez(
            workdir / f"inputs_{size}.npz",
            latents=rng.standard_normal((batch, 4, size, size)).astype(np.float32),  # NCHW
            timesteps=np.array([999.0, 10.0] * batch, np.float32)[:batch],
            context=rng.standard_normal((batch, 77, 768)).astype(np.float32),
        )


def run_torch(workdir: Path, sizes: list[int], threads: int, repeats: int) -> dict:
    cores = _pin(threads)
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(threads)
    start = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(workdir / "unet").eval()
    result = {"threads": torch.get_num_threads(), "cores": cores, "load_s": time.perf_counter() - start}
    result["after_load"] = _rss_mb()
    for size in sizes:
        inputs = np.load(workdir / f"inputs_{size}.npz")
        args = [torch.from_numpy(inputs[k]) for k in ("latents", "timesteps", "context")]
        with torch.no_grad():
            out = unet(*args).sample  # warm-up
            times = _time(functools.partial(unet, *args), repeats)
        np.save(workdir / f"torch_{size}.npy", out.numpy().transpose(0, 2, 3, 1))
        result[str(size)] = {"times_s": times, "median_s": statistics.median(times)}
    result["final"] = _rss_mb()
    return result


def load_jot(folder: Path, cls, stem: str):
    """A jot SD network of class ``cls`` from a diffusers/transformers subfolder (config.json + safetensors)."""
    from flax import nnx

    from jot.models.sd import load_module, read_weights

    config = json.loads((folder / "config.json").read_text())
    return load_module(lambda: cls(config, rngs=nnx.Rngs(0)), read_weights(folder, stem), source=str(folder))


def run_role(script: str, role: str, workdir: Path, flags: list[str]) -> dict:
    """Runs ``script --role ROLE`` on one CPU device (as a user would) and returns the JSON it prints last."""
    cmd = [sys.executable, script, "--role", role, "--workdir", str(workdir), *flags]
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{role} subprocess failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_jot(workdir: Path, sizes: list[int], threads: int, repeats: int) -> dict:
    cores = _pin(threads)
    import jax
    import numpy as np
    from flax import nnx

    from jot.models.sd import UNet2DConditionModel

    start = time.perf_counter()
    unet = load_jot(workdir / "unet", UNet2DConditionModel, "diffusion_pytorch_model")
    graphdef, state = nnx.split(unet)
    del unet
    forward = jax.jit(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c))
    result = {
        "threads": threads,
        "cores": cores,
        "devices": [str(d) for d in jax.devices()],
        "load_s": time.perf_counter() - start,
    }
    result["after_load"] = _rss_mb()
    for size in sizes:
        inputs = np.load(workdir / f"inputs_{size}.npz")
        args = (inputs["latents"].transpose(0, 2, 3, 1), inputs["timesteps"], inputs["context"])
        start = time.perf_counter()
        out = jax.block_until_ready(forward(state, *args))  # compile + first call
        compile_s = time.perf_counter() - start
        times = _time(lambda args=args: jax.block_until_ready(forward(state, *args)), repeats)
        np.save(workdir / f"jot_{size}.npy", np.asarray(out))
        result[str(size)] = {"times_s": times, "median_s": statistics.median(times), "compile_and_first_s": compile_s}
    result["final"] = _rss_mb()
    return result


def _subprocess(role: str, args: argparse.Namespace, workdir: Path) -> dict:
    flags = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--batch", str(args.batch),
             "--sizes", *map(str, args.sizes)]
    return run_role(__file__, role, workdir, flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="latent sides (image side / 8)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sd_unet.json"))
    parser.add_argument("--role", choices=["prepare", "torch", "jot"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "prepare":
        prepare(args.workdir, args.sizes, args.batch)
        print(json.dumps({}))
        return
    if args.role in ("torch", "jot"):
        run = run_torch if args.role == "torch" else run_jot
        print(json.dumps(run(args.workdir, args.sizes, args.threads, args.repeats)))
        return

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="sd_unet_bench_") as tmp:
        workdir = Path(tmp)
        _subprocess("prepare", args, workdir)
        torch_res = _subprocess("torch", args, workdir)
        jot_res = _subprocess("jot", args, workdir)
        rows = []
        for size in args.sizes:
            ref = np.load(workdir / f"torch_{size}.npy")
            got = np.load(workdir / f"jot_{size}.npy")
            t_torch, t_jot = torch_res[str(size)]["median_s"], jot_res[str(size)]["median_s"]
            rows.append(
                {
                    "latent": f"{size}x{size}",
                    "image": f"{8 * size}x{8 * size}",
                    "torch_median_s": t_torch,
                    "jot_median_s": t_jot,
                    "ratio_torch_over_jot": t_torch / t_jot,
                    "jot_compile_and_first_s": jot_res[str(size)]["compile_and_first_s"],
                    "max_abs_diff": float(np.abs(got - ref).max()),
                    "output_scale": float(np.abs(ref).max()),
                }
            )
    report = {
        "config": {**SD15_UNET, "batch": args.batch, "text_length": 77, "dtype": "float32", "repeats": args.repeats},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "load_average_at_end": os.getloadavg(),
        },
        "torch": torch_res,
        "jot": jot_res,
        "rows": rows,
    }
    print(f"threads: torch.set_num_threads({torch_res['threads']}), both pinned to cores {torch_res['cores']}")
    print(
        f"{'latent':>8} {'torch s':>9} {'jot s':>9} {'ratio':>7} {'jot compile s':>14} {'max|diff|':>10} {'scale':>7}"
    )
    for r in rows:
        print(
            f"{r['latent']:>8} {r['torch_median_s']:9.3f} {r['jot_median_s']:9.3f} {r['ratio_torch_over_jot']:7.2f} "
            f"{r['jot_compile_and_first_s']:14.1f} {r['max_abs_diff']:10.2e} {r['output_scale']:7.3f}"
        )
    for name, res in (("torch", torch_res), ("jot", jot_res)):
        print(
            f"{name:>6}: load {res['load_s']:.1f} s, RSS after load {res['after_load']['rss_mb']:.0f} MiB, "
            f"peak RSS {res['final']['peak_rss_mb']:.0f} MiB"
        )
    print(f"load average at end: {os.getloadavg()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
