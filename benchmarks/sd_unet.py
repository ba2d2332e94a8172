"""Forward time and memory of jot's SD UNet vs diffusers' PyTorch UNet (eager and torch.compile).

    python benchmarks/sd_unet.py                       # CPU: latents 32x32 and 64x64, batch 2, fp32
    python benchmarks/sd_unet.py --sizes 32 --repeats 3 --out sd_unet.json
    python benchmarks/sd_unet.py --tiny --sizes 16 --repeats 1          # a small random UNet, a quick check
    # CUDA GPU (H100): SD 1.5 at 512x512, batch 8, bf16; cuDNN attention vs XLA attention
    python benchmarks/sd_unet.py --dtype bf16 --batch 8 --sizes 64 --repeats 20 --attention cudnn
    python benchmarks/sd_unet.py --dtype bf16 --batch 8 --sizes 64 --repeats 20 --attention xla

Every framework runs the same random weights: a diffusers ``UNet2DConditionModel`` with the
SD 1.5 config (block_out_channels 320/640/1280/1280, attention_head_dim 8,
cross_attention_dim 768; ``--tiny``: 32/64 channels) is saved as safetensors once and
loaded by each side, jot through ``jot.models.sd.convert``, in ``--dtype`` (parameters and
compute; fp32 or bf16). Inputs: ``--batch`` latents, timesteps, 77 text embeddings.

Runs, each in its own subprocess (so peak memory is per run):

* ``torch``: diffusers eager (``scaled_dot_product_attention`` attention), eval mode,
  ``torch.inference_mode()``;
* ``torch_compile``: the same under ``torch.compile`` (``--torch-compile``; on by default
  when CUDA is available, off on CPU), first call (compilation) reported separately;
* ``jot``: jitted forward with ``attention=--attention`` ("auto": cuDNN flash attention
  on a CUDA GPU for bf16, XLA otherwise; on CPU the blocked path), first call (compile)
  reported separately.

Device (``--device``, default cuda when torch sees a CUDA GPU): on CPU each run is pinned to
the same ``--threads`` cores (``JAX_PLATFORMS=cpu`` for jot) and memory is peak RSS
(``ru_maxrss``); on CUDA, torch runs on ``cuda`` with ``torch.cuda.synchronize()`` around every
timed call and jot on JAX's GPU (``jax.block_until_ready``), and memory is the peak device
memory: ``torch.cuda.max_memory_allocated()``, ``memory_stats()["peak_bytes_in_use"]`` of
JAX's device (weights included on both sides).

Reported per latent size and run: median of ``--repeats`` timed calls (after ``--warmup``
untimed ones), images/s, achieved TFLOP/s and MFU against ``--peak-tflops`` (default 989,
H100 SXM bf16 dense, on CUDA; not reported on CPU unless given) for two FLOP counts per
image: XLA's cost analysis of jot's forward lowered with one-shot XLA attention (the same
network for every run; the cuDNN custom call and the CPU blocked loop would hide attention
FLOPs from the count), and the nominal 803 GFLOP of SD 1.5 at 64x64 latents with 77 tokens
(only for that size and config); peak memory; the max abs difference of each output from
torch eager's. ``ratio = torch_time / jot_time`` (> 1: jot is faster). JSON to ``--out``.

Needs torch and diffusers (the test extras). Memory: ~3.4 GB of fp32 weights per process.
On a shared or loaded CPU, set ``OMP_WAIT_POLICY=PASSIVE`` (see ``ti_step.py``).
"""

from __future__ import annotations

import argparse
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
# A small random UNet with the SD layout (two levels, cross-attention at the first),
# heads of 8 and 16 channels (sizes cuDNN takes); for quick checks of the script.
TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=4,
    cross_attention_dim=32,
    norm_num_groups=8,
)
TEXT_LENGTH = 77
# Forward FLOPs per image of the SD 1.5 UNet at 64x64 latents with 77 text tokens.
SD15_GFLOP_PER_IMAGE_64 = 803.0
H100_BF16_DENSE_TFLOPS = 989.0
RUNS = ("torch", "torch_compile", "jot")


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
    """Wall time of ``repeats`` calls of ``fn``, which must wait for its own results (sync)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def unet_config(tiny: bool) -> dict:
    return TINY_UNET if tiny else SD15_UNET


def prepare(workdir: Path, sizes: list[int], batch: int, tiny: bool = False) -> None:
    """Save random UNet weights (safetensors, fp32) and the inputs for every latent size."""
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel

    config = unet_config(tiny)
    torch.manual_seed(0)
    UNet2DConditionModel(**config).save_pretrained(workdir / "unet", safe_serialization=True)
    rng = np.random.default_rng(0)
    for size in sizes:
        np.savez(
            workdir / f"inputs_{size}.npz",
            latents=rng.standard_normal((batch, 4, size, size)).astype(np.float32),  # NCHW
            timesteps=np.array([999.0, 10.0] * batch, np.float32)[:batch],
            context=rng.standard_normal((batch, TEXT_LENGTH, config["cross_attention_dim"])).astype(np.float32),
        )


def _torch_memory(device: str) -> dict[str, float]:
    import torch

    if device == "cuda":
        return {"peak_device_mb": torch.cuda.max_memory_allocated() / 2**20}
    return _rss_mb()


def run_torch(
    workdir: Path,
    sizes: list[int],
    threads: int,
    repeats: int,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    warmup: int = 1,
    compile_mode: str | None = None,
) -> dict:
    """diffusers' UNet, eager or (``compile_mode`` given) under ``torch.compile(mode=compile_mode)``."""
    cores = _pin(threads) if device == "cpu" else None
    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel

    if device == "cpu":
        torch.set_num_threads(threads)
    elif not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda, but torch sees no CUDA GPU; install a CUDA build of torch or use --device cpu."
        )
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    dev = torch.device(device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(workdir / "unet", torch_dtype=torch_dtype).to(dev).eval()
    if compile_mode is not None:
        unet = torch.compile(unet, mode=None if compile_mode == "default" else compile_mode, dynamic=False)
    sync()
    result = {
        "threads": torch.get_num_threads(),
        "cores": cores,
        "device": str(torch.cuda.get_device_name()) if device == "cuda" else "cpu",
        "attention": "torch.nn.functional.scaled_dot_product_attention (diffusers AttnProcessor2_0)",
        "compile_mode": compile_mode,
        "load_s": time.perf_counter() - start,
    }
    result["after_load"] = _torch_memory(device)
    for size in sizes:
        inputs = np.load(workdir / f"inputs_{size}.npz")
        latents, timesteps, context = (torch.from_numpy(inputs[k]).to(dev) for k in ("latents", "timesteps", "context"))
        args = (latents.to(torch_dtype), timesteps, context.to(torch_dtype))

        def call(args=args):
            out = unet(*args).sample
            sync()
            return out

        with torch.inference_mode():
            sync()
            start = time.perf_counter()
            out = call()  # warm-up (torch.compile: compilation)
            first_s = time.perf_counter() - start
            for _ in range(warmup):
                call()
            times = _time(call, repeats)
        np.save(workdir / f"{'torch_compile' if compile_mode else 'torch'}_{size}.npy",
                out.float().cpu().numpy().transpose(0, 2, 3, 1))
        result[str(size)] = {"times_s": times, "median_s": statistics.median(times), "first_call_s": first_s}
    result["final"] = _torch_memory(device)
    return result


def load_jot(folder: Path, cls, stem: str, **kwargs):
    """A jot SD network of class ``cls`` from a diffusers/transformers subfolder (config.json + safetensors).

    ``kwargs`` go to the constructor (``dtype``, ``param_dtype``, ``attention``, ...)."""
    from flax import nnx

    from jot.models.sd import load_module, read_weights

    config = json.loads((folder / "config.json").read_text())
    return load_module(lambda: cls(config, rngs=nnx.Rngs(0), **kwargs), read_weights(folder, stem), source=str(folder))


def run_role(script: str, role: str, workdir: Path, flags: list[str], device: str = "cpu") -> dict:
    """Runs ``script --role ROLE`` (on one CPU device when ``device`` is "cpu", as a user would) and
    returns the JSON it prints last."""
    cmd = [sys.executable, script, "--role", role, "--workdir", str(workdir), *flags]
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env.pop("XLA_FLAGS", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{role} subprocess failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def jax_memory(device: str) -> dict[str, float]:
    """Peak device memory of JAX's first device (GPU) or the process RSS (CPU), in MiB."""
    if device == "cuda":
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        return {"peak_device_mb": stats.get("peak_bytes_in_use", float("nan")) / 2**20}
    return _rss_mb()


def check_jax_device(device: str) -> None:
    import jax

    if device == "cuda" and jax.default_backend() != "gpu":
        raise RuntimeError(
            f"--device cuda, but JAX's default backend is {jax.default_backend()!r}; install jax[cuda12] "
            "(or jax[cuda13]) or use --device cpu."
        )


def xla_flops(fn, *args) -> float:
    """FLOPs of ``jax.jit(fn)(*args)`` by XLA's cost analysis of the lowered HLO (no compilation)."""
    import jax

    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis["flops"])


def run_jot(
    workdir: Path,
    sizes: list[int],
    threads: int,
    repeats: int,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    warmup: int = 1,
    attention: str = "auto",
) -> dict:
    cores = _pin(threads) if device == "cpu" else None
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jot.models.sd import UNet2DConditionModel
    from jot.models.sd.layers import resolve_attention

    check_jax_device(device)
    jax_dtype = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    start = time.perf_counter()
    unet = load_jot(
        workdir / "unet", UNet2DConditionModel, "diffusion_pytorch_model",
        dtype=jax_dtype, param_dtype=jax_dtype, attention=attention,
    )
    config = unet.config
    graphdef, state = nnx.split(unet)
    del unet
    # The same network with one-shot XLA attention, only lowered to count FLOPs.
    flops_graphdef = nnx.graphdef(
        nnx.eval_shape(
            lambda: UNet2DConditionModel(
                config, dtype=jax_dtype, param_dtype=jax_dtype, attention="xla", attention_chunk=None,
                rngs=nnx.Rngs(0),
            )
        )
    )
    forward = jax.jit(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c))
    head_dims = sorted({c // h for c, h in zip(config.block_out_channels, config.heads)})
    result = {
        "threads": threads,
        "cores": cores,
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "attention": attention,
        "attention_kernel_by_head_dim": {
            d: resolve_attention(attention, dtype=jax_dtype, head_dim=d) for d in head_dims
        },
        "load_s": time.perf_counter() - start,
    }
    result["after_load"] = jax_memory(device)
    for size in sizes:
        inputs = np.load(workdir / f"inputs_{size}.npz")
        args = tuple(
            jnp.asarray(a)
            for a in (inputs["latents"].transpose(0, 2, 3, 1), inputs["timesteps"], inputs["context"])
        )
        flops = xla_flops(lambda s, x, t, c: nnx.merge(flops_graphdef, s)(x, t, c), state, *args)
        start = time.perf_counter()
        out = jax.block_until_ready(forward(state, *args))  # compile + first call
        compile_s = time.perf_counter() - start
        for _ in range(warmup):
            jax.block_until_ready(forward(state, *args))
        times = _time(lambda args=args: jax.block_until_ready(forward(state, *args)), repeats)
        np.save(workdir / f"jot_{size}.npy", np.asarray(out.astype(jnp.float32)))
        result[str(size)] = {
            "times_s": times,
            "median_s": statistics.median(times),
            "compile_and_first_s": compile_s,
            "xla_flops_per_image": flops / len(inputs["latents"]),
        }
    result["final"] = jax_memory(device)
    return result


def _subprocess(role: str, args: argparse.Namespace, workdir: Path) -> dict:
    flags = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--batch", str(args.batch),
             "--warmup", str(args.warmup), "--device", args.device, "--dtype", args.dtype,
             "--attention", args.attention, "--torch-compile-mode", args.torch_compile_mode,
             "--sizes", *map(str, args.sizes), *(["--tiny"] if args.tiny else [])]
    return run_role(__file__, role, workdir, flags, device=args.device)


def _memory_mb(res: dict) -> float:
    final = res["final"]
    return final.get("peak_device_mb", final.get("peak_rss_mb", float("nan")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="latent sides (image side / 8)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="parameters and compute, both sides")
    parser.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto", help="jot's attention kernel")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: cuda when torch sees a CUDA GPU, else cpu")
    parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time diffusers under torch.compile (default: on with CUDA, off on CPU)")
    parser.add_argument("--torch-compile-mode", default="default",
                        help="torch.compile mode: default, reduce-overhead, max-autotune, ...")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"peak for MFU (default {H100_BF16_DENSE_TFLOPS:g} on CUDA: H100 bf16 dense; none on CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first (compiling) one")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--tiny", action="store_true", help="a small random UNet (TINY_UNET), a quick check")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sd_unet.json"))
    parser.add_argument("--role", choices=["prepare", *RUNS], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "prepare":
        prepare(args.workdir, args.sizes, args.batch, args.tiny)
        print(json.dumps({}))
        return
    common = dict(device=args.device, dtype=args.dtype, warmup=args.warmup)
    if args.role == "torch":
        print(json.dumps(run_torch(args.workdir, args.sizes, args.threads, args.repeats, **common)))
        return
    if args.role == "torch_compile":
        res = run_torch(args.workdir, args.sizes, args.threads, args.repeats, compile_mode=args.torch_compile_mode,
                        **common)
        print(json.dumps(res))
        return
    if args.role == "jot":
        print(json.dumps(run_jot(args.workdir, args.sizes, args.threads, args.repeats, attention=args.attention,
                                 **common)))
        return

    import numpy as np
    import torch

    cuda = torch.cuda.is_available()
    if args.device == "auto":
        args.device = "cuda" if cuda else "cpu"
    if args.torch_compile is None:
        args.torch_compile = args.device == "cuda"
    if args.peak_tflops is None and args.device == "cuda":
        args.peak_tflops = H100_BF16_DENSE_TFLOPS
    config = unet_config(args.tiny)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sd_unet_bench_") as tmp:
        workdir = Path(tmp)
        _subprocess("prepare", args, workdir)
        results = {"torch": _subprocess("torch", args, workdir)}
        if args.torch_compile:
            results["torch_compile"] = _subprocess("torch_compile", args, workdir)
        results["jot"] = _subprocess("jot", args, workdir)
        rows = []
        for size in args.sizes:
            ref = np.load(workdir / f"torch_{size}.npy")
            flops = results["jot"][str(size)]["xla_flops_per_image"]
            nominal = SD15_GFLOP_PER_IMAGE_64 * 1e9 if size == 64 and not args.tiny else None
            runs = {}
            for name, res in results.items():
                median = res[str(size)]["median_s"]
                images_per_s = args.batch / median
                run = {
                    "median_ms": 1e3 * median,
                    "images_per_s": images_per_s,
                    "tflops_xla_count": flops * images_per_s / 1e12,
                    "max_abs_diff_vs_torch": float(np.abs(np.load(workdir / f"{name}_{size}.npy") - ref).max()),
                    "peak_memory_mb": _memory_mb(res),
                    "first_call_s": res[str(size)].get("first_call_s", res[str(size)].get("compile_and_first_s")),
                }
                if args.peak_tflops:
                    run["mfu_xla_count"] = run["tflops_xla_count"] / args.peak_tflops
                    if nominal is not None:
                        run["mfu_nominal_803"] = nominal * images_per_s / 1e12 / args.peak_tflops
                runs[name] = run
            t_torch, t_jot = results["torch"][str(size)]["median_s"], results["jot"][str(size)]["median_s"]
            row = {
                "latent": f"{size}x{size}",
                "image": f"{8 * size}x{8 * size}",
                "torch_median_s": t_torch,
                "jot_median_s": t_jot,
                "ratio_torch_over_jot": t_torch / t_jot,
                "jot_compile_and_first_s": results["jot"][str(size)]["compile_and_first_s"],
                "max_abs_diff": runs["jot"]["max_abs_diff_vs_torch"],
                "output_scale": float(np.abs(ref).max()),
                "xla_gflop_per_image": flops / 1e9,
                "nominal_gflop_per_image": None if nominal is None else nominal / 1e9,
                "runs": runs,
            }
            if "torch_compile" in results:
                row["ratio_torch_compile_over_jot"] = results["torch_compile"][str(size)]["median_s"] / t_jot
            rows.append(row)
    report = {
        "config": {
            **config,
            "tiny": args.tiny,
            "batch": args.batch,
            "text_length": TEXT_LENGTH,
            "dtype": args.dtype,
            "attention": args.attention,
            "device": args.device,
            "torch_compile": args.torch_compile,
            "torch_compile_mode": args.torch_compile_mode if args.torch_compile else None,
            "peak_tflops": args.peak_tflops,
            "repeats": args.repeats,
            "warmup": args.warmup,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "XLA_FLAGS")},
        },
        **results,
        "rows": rows,
    }
    lines = [
        f"{'tiny' if args.tiny else 'SD 1.5'} UNet forward, batch {args.batch}, {args.dtype}, {args.device}, "
        f"jot attention={args.attention} ({results['jot']['attention_kernel_by_head_dim']} by head size), "
        f"median of {args.repeats} after {1 + args.warmup} warm-up calls",
    ]
    if args.device == "cpu":
        lines.append(f"threads: {results['torch']['threads']}, every run pinned to cores {results['torch']['cores']}")
    mem = "peak dev MiB" if args.device == "cuda" else "peak RSS MiB"
    for r in rows:
        lines.append(
            f"latent {r['latent']} (image {r['image']}): {r['xla_gflop_per_image']:.1f} GFLOP/image (XLA count)"
            + (f", {r['nominal_gflop_per_image']:.0f} nominal" if r["nominal_gflop_per_image"] else "")
        )
        head = f"  {'run':>14} {'ms':>9} {'img/s':>8} {'TFLOP/s':>8}"
        if args.peak_tflops:
            head += f" {'MFU':>6}" + (f" {'MFU 803':>7}" if r["nominal_gflop_per_image"] else "")
        lines.append(head + f" {mem:>13} {'first s':>8} {'max|diff|':>10}")
        for name, run in r["runs"].items():
            line = f"  {name:>14} {run['median_ms']:9.2f} {run['images_per_s']:8.2f} {run['tflops_xla_count']:8.3f}"
            if args.peak_tflops:
                line += f" {run['mfu_xla_count']:6.1%}"
                if "mfu_nominal_803" in run:
                    line += f" {run['mfu_nominal_803']:7.1%}"
            line += f" {run['peak_memory_mb']:13.0f} {run['first_call_s']:8.1f} {run['max_abs_diff_vs_torch']:10.2e}"
            lines.append(line)
        lines.append(f"  ratio torch / jot: {r['ratio_torch_over_jot']:.2f}"
                     + (f", torch.compile / jot: {r['ratio_torch_compile_over_jot']:.2f}"
                        if "ratio_torch_compile_over_jot" in r else "")
                     + f"; output scale {r['output_scale']:.3f}")
    for name, res in results.items():
        lines.append(f"{name:>14}: load {res['load_s']:.1f} s")
    lines.append(f"load average at start {tuple(round(x, 2) for x in load_at_start)}, "
                 f"at end {tuple(round(x, 2) for x in os.getloadavg())}; "
                 f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
