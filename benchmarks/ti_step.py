"""Time of one textual-inversion training step, jot vs diffusers/transformers PyTorch, SD 1.5 size.

    python benchmarks/ti_step.py                                   # batch 1, latent 32x32
    python benchmarks/ti_step.py --batch 1 --sizes 32 --repeats 3 --out /tmp/ti_step.json
    python benchmarks/ti_step.py --small                           # tiny UNet and CLIP, a quick check
    # CUDA GPU (H100): bf16, batch 8 at 512x512; jot with cuDNN attention
    python benchmarks/ti_step.py --dtype bf16 --batch 8 --sizes 64 --repeats 20 --attention cudnn

One step, identical on both sides (``--dtype``: fp32 or bf16 weights and compute; the same
random weights and inputs):

- frozen CLIP text encoder (SD 1.5 text config: hidden 768, 12 layers, 12 heads,
  vocab 49408, 77 positions) and frozen UNet (SD 1.5 config, as in ``sd_unet.py``),
  both random, saved once as safetensors (transformers ``CLIPTextModel`` and diffusers
  ``UNet2DConditionModel``) and loaded by each side, jot through ``jot.models.sd.convert``;
- one trainable placeholder row E [1, 768] for the id V (V = the table size) in the fixed
  ids ``<bos> a photo of a <ph> <eos> <eos>...`` (77 ids, repeated over the batch);
- latents x0 [B, 4, h, w], noise and integer timesteps in [0, 1000) (fixed, from numpy);
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise with SD's scaled-linear schedule
  (betas 0.00085..0.012), gathered inside the step;
- loss = MSE(UNet(x_t, t, text_encoder(ids)), noise) (in float32 on the network's output);
  gradient w.r.t. E only; AdamW update of E (lr 1e-4, weight decay 1e-2, betas 0.9/0.999,
  eps 1e-8). E and its optimizer state stay float32 under bf16 (cast where it is spliced in).

jot: ``CLIPTextModel(ids, extra_embeddings=E)``; the whole step (text encoder, noising,
UNet, backward, ``optax.adamw``) is one ``jax.jit`` with E and the optimizer state donated;
NHWC latents; attention kernel ``--attention`` (see ``sd_unet.py``; "auto": cuDNN on a CUDA
GPU for bf16). The first call (compile + run) is reported as compile time.

torch: eager, eval mode (dropout off), every weight ``requires_grad=False``. The token
table is grown by one row (``resize_token_embeddings(V + 1)``) so the placeholder id is
valid, and a forward hook on ``token_embedding`` splices a leaf tensor E (the only tensor
with ``requires_grad``) into the rows where ``ids == V``; ``torch.optim.AdamW([E])``. So only
E gets a gradient and an update, as in jot. (diffusers' ``examples/textual_inversion``
instead trains the whole table and restores the other rows after each step, which adds a
dense [V + 1, 768] gradient, AdamW over the whole table and the restore; not timed here.)
NCHW latents.

Each framework runs in its own subprocess (helpers from ``sd_unet.py``): on CPU pinned to
the same cores with the same thread count; on CUDA (``--device``, default cuda when torch
sees a GPU) torch on ``cuda`` with ``torch.cuda.synchronize()`` closing every step, jot on
JAX's GPU, and memory is peak device memory instead of RSS. Per size one warm-up step (jot:
compile), then ``--repeats`` timed steps; all steps use the same inputs. Reported per latent size: median
step time per framework, ``ratio = torch / jot`` (> 1: jot is faster), jot compile time,
peak RSS (CPU) or peak device memory (CUDA) per process, and the first step's loss on both
sides with their difference (and the max abs difference of E after the first update) as a
check that both compute the same step.
Results go to ``--out`` as JSON.

On a shared or loaded machine, set ``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP threads otherwise
spin at every op's barrier while a sibling thread is descheduled, which can make torch's step
several times slower with 2 threads than with 1 (recorded under ``machine.env``).

Needs torch, transformers and diffusers. Memory: ~3.4 GB of UNet weights + ~0.5 GB of CLIP
weights + activations per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_unet import (  # noqa: E402
    SD15_UNET,
    TINY_UNET,
    _pin,
    _time,
    _torch_memory,
    check_jax_device,
    jax_memory,
    load_jot,
    run_role,
)

SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
SMALL_UNET = TINY_UNET  # the same small SD-layout UNet as sd_unet.py --tiny
SMALL_TEXT = dict(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=998,
    eos_token_id=999,
    pad_token_id=1,
)
PROMPT_IDS = [320, 1125, 539, 320]  # "a photo of a" in the SD 1.5 vocabulary
LR, WEIGHT_DECAY = 1e-4, 1e-2
TRAIN_STEPS = 1000


def _configs(small: bool) -> tuple[dict, dict]:
    return (SMALL_UNET, SMALL_TEXT) if small else (SD15_UNET, SD15_TEXT)


def _prompt_ids(text: dict) -> list[int]:
    """``<bos> a photo of a <ph> <eos>`` padded with ``<eos>`` to 77 ids (the SD 1.5 tokenizer's padding)."""
    vocab = text["vocab_size"]
    words = [i % (vocab - 2) for i in PROMPT_IDS]
    ids = [text["bos_token_id"], *words, vocab, text["eos_token_id"]]
    return ids + [text["eos_token_id"]] * (text["max_position_embeddings"] - len(ids))


def prepare(workdir: Path, sizes: list[int], batch: int, small: bool) -> None:
    """Save random UNet and CLIP text encoder weights (safetensors) and the inputs for every latent size."""
    import numpy as np
    import torch
    import transformers
    from diffusers import UNet2DConditionModel

    unet_cfg, text_cfg = _configs(small)
    torch.manual_seed(0)
    UNet2DConditionModel(**unet_cfg).save_pretrained(workdir / "unet", safe_serialization=True)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_cfg))
    text.save_pretrained(workdir / "text_encoder", safe_serialization=True)
    ids = np.array([_prompt_ids(text_cfg)] * batch, np.int64)
    init_row = text.get_input_embeddings().weight[PROMPT_IDS[1] % (text_cfg["vocab_size"] - 2)]
    betas = np.linspace(0.00085**0.5, 0.012**0.5, TRAIN_STEPS, dtype=np.float64) ** 2
    rng = np.random.default_rng(0)
    for size in sizes:
        np.savez(
            workdir / f"inputs_{size}.npz",
            latents=rng.standard_normal((batch, 4, size, size)).astype(np.float32),  # NCHW
            noise=rng.standard_normal((batch, 4, size, size)).astype(np.float32),  # NCHW
            timesteps=rng.integers(0, TRAIN_STEPS, batch).astype(np.int64),
            ids=ids,
            embedding=init_row.detach().numpy()[None].astype(np.float32),  # [1, D], the initializer token's row
            alphas_cumprod=np.cumprod(1.0 - betas).astype(np.float32),
        )


def run_torch(
    workdir: Path, sizes: list[int], threads: int, repeats: int, *, device: str = "cpu", dtype: str = "fp32"
) -> dict:
    cores = _pin(threads) if device == "cpu" else None
    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from diffusers import UNet2DConditionModel

    if device == "cpu":
        torch.set_num_threads(threads)
    elif not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA GPU; use --device cpu.")
    dev = torch.device(device)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(workdir / "unet", torch_dtype=torch_dtype)
    unet = unet.to(dev).eval().requires_grad_(False)
    text = transformers.CLIPTextModel.from_pretrained(workdir / "text_encoder").eval()
    placeholder = text.config.vocab_size
    text.resize_token_embeddings(placeholder + 1, mean_resizing=False)
    text = text.to(dev, torch_dtype).requires_grad_(False)
    sync()
    result = {
        "threads": torch.get_num_threads(),
        "cores": cores,
        "device": str(torch.cuda.get_device_name()) if device == "cuda" else "cpu",
        "load_s": time.perf_counter() - start,
    }
    result["after_load"] = _torch_memory(device)
    for size in sizes:
        inputs = np.load(workdir / f"inputs_{size}.npz")
        x0, noise, ids, acp = (
            torch.from_numpy(inputs[k]).to(dev) for k in ("latents", "noise", "ids", "alphas_cumprod")
        )
        t = torch.from_numpy(inputs["timesteps"]).to(dev)
        E = torch.nn.Parameter(torch.from_numpy(inputs["embedding"].copy()).to(dev))  # float32
        optimizer = torch.optim.AdamW([E], lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.999), eps=1e-8)
        is_placeholder = (ids == placeholder)[..., None]

        def splice(module, args, output):
            return torch.where(is_placeholder, E.to(output.dtype), output)

        hook = text.get_input_embeddings().register_forward_hook(splice)

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            context = text(ids)[0]
            a = acp[t].view(-1, 1, 1, 1)
            noisy = (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(torch_dtype)
            pred = unet(noisy, t, context).sample
            loss = F.mse_loss(pred.float(), noise, reduction="mean")
            loss.backward()
            optimizer.step()
            sync()
            return loss.item()

        sync()
        start = time.perf_counter()
        first_loss = step()
        first_s = time.perf_counter() - start
        np.save(workdir / f"torch_E1_{size}.npy", E.detach().cpu().numpy().copy())
        times = _time(step, repeats)
        hook.remove()
        result[str(size)] = {
            "times_s": times,
            "median_s": statistics.median(times),
            "first_step_s": first_s,
            "first_loss": first_loss,
        }
    result["final"] = _torch_memory(device)
    return result


def run_jot(
    workdir: Path,
    sizes: list[int],
    threads: int,
    repeats: int,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    attention: str = "auto",
) -> dict:
    cores = _pin(threads) if device == "cpu" else None
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from jot.models.sd import CLIPTextModel, UNet2DConditionModel

    check_jax_device(device)
    jax_dtype = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    kw = dict(dtype=jax_dtype, param_dtype=jax_dtype)
    start = time.perf_counter()
    unet = load_jot(workdir / "unet", UNet2DConditionModel, "diffusion_pytorch_model", attention=attention, **kw)
    text = load_jot(workdir / "text_encoder", CLIPTextModel, "model", **kw)
    unet_graph, unet_state = nnx.split(unet)
    text_graph, text_state = nnx.split(text)
    del unet, text
    tx = optax.adamw(LR, b1=0.9, b2=0.999, eps=1e-8, weight_decay=WEIGHT_DECAY)

    def loss_fn(E, unet_state, text_state, x0, noise, t, ids, acp):
        context = nnx.merge(text_graph, text_state)(ids, extra_embeddings=E)
        a = acp[t][:, None, None, None]
        noisy = jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise
        pred = nnx.merge(unet_graph, unet_state)(noisy, t, context)
        return jnp.mean(jnp.square(pred.astype(jnp.float32) - noise))

    def step(E, opt_state, unet_state, text_state, x0, noise, t, ids, acp):
        loss, grad = jax.value_and_grad(loss_fn)(E, unet_state, text_state, x0, noise, t, ids, acp)
        updates, opt_state = tx.update(grad, opt_state, E)
        return optax.apply_updates(E, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    result = {
        "threads": threads,
        "cores": cores,
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "attention": attention,
        "load_s": time.perf_counter() - start,
    }
    result["after_load"] = jax_memory(device)
    for size in sizes:
        inputs = np.load(workdir / f"inputs_{size}.npz")
        data = (
            jnp.asarray(inputs["latents"].transpose(0, 2, 3, 1)),
            jnp.asarray(inputs["noise"].transpose(0, 2, 3, 1)),
            jnp.asarray(inputs["timesteps"].astype(np.int32)),
            jnp.asarray(inputs["ids"].astype(np.int32)),
            jnp.asarray(inputs["alphas_cumprod"]),
        )
        E = jnp.asarray(inputs["embedding"])
        opt_state = tx.init(E)
        start = time.perf_counter()
        E, opt_state, loss = jax.block_until_ready(step(E, opt_state, unet_state, text_state, *data))
        compile_s = time.perf_counter() - start
        first_loss = float(loss)
        np.save(workdir / f"jot_E1_{size}.npy", np.asarray(E))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            E, opt_state, loss = jax.block_until_ready(step(E, opt_state, unet_state, text_state, *data))
            times.append(time.perf_counter() - start)
        result[str(size)] = {
            "times_s": times,
            "median_s": statistics.median(times),
            "compile_and_first_s": compile_s,
            "first_loss": first_loss,
        }
    result["final"] = jax_memory(device)
    return result


def _subprocess(role: str, args: argparse.Namespace, workdir: Path) -> dict:
    flags = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--batch", str(args.batch),
             "--device", args.device, "--dtype", args.dtype, "--attention", args.attention,
             "--sizes", *map(str, args.sizes), *(["--small"] if args.small else [])]
    return run_role(__file__, role, workdir, flags, device=args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32], help="latent sides (image side / 8)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--small", "--tiny", action="store_true", help="tiny UNet and CLIP text encoder (quick check)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="weights and compute, both sides")
    parser.add_argument("--attention", choices=["auto", "xla", "cudnn"], default="auto", help="jot's attention kernel")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: cuda when torch sees a CUDA GPU, else cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ti_step.json"))
    parser.add_argument("--role", choices=["prepare", "torch", "jot"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "prepare":
        prepare(args.workdir, args.sizes, args.batch, args.small)
        print(json.dumps({}))
        return
    if args.role == "torch":
        print(json.dumps(run_torch(args.workdir, args.sizes, args.threads, args.repeats, device=args.device,
                                   dtype=args.dtype)))
        return
    if args.role == "jot":
        print(json.dumps(run_jot(args.workdir, args.sizes, args.threads, args.repeats, device=args.device,
                                 dtype=args.dtype, attention=args.attention)))
        return

    import numpy as np
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    from jot.files import write_json

    unet_cfg, text_cfg = _configs(args.small)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ti_step_bench_") as tmp:
        workdir = Path(tmp)
        _subprocess("prepare", args, workdir)
        torch_res = _subprocess("torch", args, workdir)
        jot_res = _subprocess("jot", args, workdir)
        rows = []
        for size in args.sizes:
            tr, jr = torch_res[str(size)], jot_res[str(size)]
            e_torch = np.load(workdir / f"torch_E1_{size}.npy")
            e_jot = np.load(workdir / f"jot_E1_{size}.npy")
            e0 = np.load(workdir / f"inputs_{size}.npz")["embedding"]
            loss_diff = abs(tr["first_loss"] - jr["first_loss"])
            rows.append(
                {
                    "latent": f"{size}x{size}",
                    "image": f"{8 * size}x{8 * size}",
                    "torch_median_s": tr["median_s"],
                    "jot_median_s": jr["median_s"],
                    "ratio_torch_over_jot": tr["median_s"] / jr["median_s"],
                    "jot_compile_and_first_s": jr["compile_and_first_s"],
                    "torch_first_step_s": tr["first_step_s"],
                    "torch_first_loss": tr["first_loss"],
                    "jot_first_loss": jr["first_loss"],
                    "first_loss_abs_diff": loss_diff,
                    "first_loss_rel_diff": loss_diff / abs(tr["first_loss"]),
                    "E_after_first_step_max_abs_diff": float(np.abs(e_torch - e_jot).max()),
                    "E_first_update_max_abs": float(np.abs(e_torch - e0).max()),
                }
            )
    report = {
        "config": {
            "small": args.small,
            "unet": unet_cfg,
            "text_encoder": text_cfg,
            "batch": args.batch,
            "text_length": 77,
            "trainable": "one placeholder row [1, hidden]",
            "optimizer": {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "betas": [0.9, 0.999], "eps": 1e-8},
            "dtype": args.dtype,
            "attention": args.attention,
            "device": args.device,
            "repeats": args.repeats,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")},
        },
        "torch": torch_res,
        "jot": jot_res,
        "rows": rows,
    }
    lines = [
        f"{'small' if args.small else 'SD 1.5'} textual-inversion step, batch {args.batch}, {args.dtype}, "
        f"{args.device}, jot attention={args.attention}, median of {args.repeats} steps after one warm-up step",
        f"threads: torch.set_num_threads({torch_res['threads']}), both pinned to cores {torch_res['cores']}"
        if args.device == "cpu" else f"GPU: {torch_res['device']}",
        f"{'latent':>8} {'torch s':>9} {'jot s':>9} {'ratio':>7} {'jot compile s':>14} "
        f"{'torch loss':>11} {'jot loss':>11} {'|dloss|':>9} {'max|dE1|':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r['latent']:>8} {r['torch_median_s']:9.3f} {r['jot_median_s']:9.3f} {r['ratio_torch_over_jot']:7.2f} "
            f"{r['jot_compile_and_first_s']:14.1f} {r['torch_first_loss']:11.6f} {r['jot_first_loss']:11.6f} "
            f"{r['first_loss_abs_diff']:9.2e} {r['E_after_first_step_max_abs_diff']:9.2e}"
        )
    for name, res in (("torch", torch_res), ("jot", jot_res)):
        if args.device == "cuda":
            memory = f"peak device memory {res['final']['peak_device_mb']:.0f} MiB"
        else:
            memory = (
                f"RSS after load {res['after_load']['rss_mb']:.0f} MiB, peak RSS {res['final']['peak_rss_mb']:.0f} MiB"
            )
        lines.append(f"{name:>6}: load {res['load_s']:.1f} s, {memory}")
    lines.append(
        f"load average at start {tuple(round(x, 2) for x in load_at_start)}, "
        f"at end {tuple(round(x, 2) for x in os.getloadavg())}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(str(args.out), report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
