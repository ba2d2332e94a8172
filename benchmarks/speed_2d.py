"""Iterations/s of jot's jitted DIOTM step against the same step in eager PyTorch, and of the
training loop itself by steps per call and batch sampler.

    python benchmarks/speed_2d.py [--batch 512] [--iters 200] [--out benchmarks/results/speed_2d.json]
    python benchmarks/speed_2d.py --sections loop,launch --sampler host,device --steps_per_call 1,10,50,100

``step`` (the default section): both sides run residual-MLP maps T and S and the
time-conditioned value function V of width 128 (the paper's 2D architecture), Adam, one T/S
update and one V update with the HJB regulariser (second-order autodiff through V), uniform
times, the same batch on device, and the same number of CPU threads. The PyTorch step is
written here from the formulas.

``loop``: the loop's jitted calls (``Trainer.call_fn``) of the 2D job ``--config`` (default
``configs/diotm_2d.py:g8g``, the README's default job) as ``train`` makes them, batches
included (host numpy batches stacked per call, or drawn inside the call), for every
``--sampler`` x ``--steps_per_call``; rounds interleave the settings, median of
``--repeats``. ``launch``: the whole ``python -m launch.main`` command for each setting,
``--launch_steps`` steps; its it/s is the median ``steps_per_sec`` of ``metrics.jsonl``
after the first log line (which includes compilation). ``--set FIELD=VALUE`` overrides
config fields of both (e.g. ``--set model.width=16`` for a step small enough that dispatch
and batches dominate, as on a GPU). Both write ``--dispatch_out``.
"""
import argparse
import ast
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def jot_step_rate(batch: int, iters: int, repeats: int) -> float:
    import jax
    import numpy as np

    from configs import diotm_2d
    from jot.methods import diotm

    c = diotm_2d.get_config("g8g")
    c.train.batch_size = batch
    counts = diotm.batches_per_step(c)  # a value step on batch 0, then k_t map steps on batches 1..k_t
    rng = np.random.default_rng(0)
    b = {"x": jax.numpy.asarray(rng.normal(size=(counts["x"], batch, 2)), jax.numpy.float32),
         "y": jax.numpy.asarray(rng.normal(size=(counts["y"], batch, 2)) * 3, jax.numpy.float32)}
    state = jax.jit(functools.partial(diotm.init, c))(jax.random.PRNGKey(0), b)
    step = jax.jit(functools.partial(diotm.train_step, c), donate_argnums=0)
    state, _ = step(state, b)
    jax.block_until_ready(state)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            state, _ = step(state, b)
        jax.block_until_ready(state)
        rates.append(iters / (time.perf_counter() - t0))
    return sorted(rates)[len(rates) // 2]


def torch_step_rate(batch: int, iters: int, repeats: int, threads: int) -> float:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    width, tau, lam = 128, 0.1, 1.0

    class ResidualMap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lift = nn.Linear(2, width)
            self.blocks = nn.ModuleList([nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)) for _ in range(3)])
            self.proj = nn.Linear(width, 2)

        def forward(self, x):
            h = self.lift(x)
            for blk in self.blocks:
                h = h + blk(h)
            return x + self.proj(nn.functional.silu(h))

    class TimePotential(nn.Module):
        def __init__(self):
            super().__init__()
            self.x_embed = nn.Sequential(nn.Linear(2, width), nn.SiLU(), nn.Linear(width, width))
            self.t_embed = nn.Sequential(nn.Linear(128, width), nn.SiLU(), nn.Linear(width, width))
            self.head = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))
            half = 64
            self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half))

        def forward(self, t, x):
            a = t[:, None] * self.freqs[None]
            emb = torch.cat([torch.cos(a), torch.sin(a)], -1)
            return self.head(self.x_embed(x) + self.t_embed(emb))[:, 0]

    T, S, V = ResidualMap(), ResidualMap(), TimePotential()
    opt = {n: torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.0, 0.9)) for n, m in (("T", T), ("S", S), ("V", V))}
    x = torch.randn(batch, 2)
    y = torch.randn(batch, 2) * 3

    def step():
        t_x, t_y = torch.rand(batch), torch.rand(batch)
        for p in V.parameters():
            p.requires_grad_(False)
        tx = T(x)
        loss_t = (t_x * tau * ((tx - x) ** 2).sum(-1) - V(t_x, (1 - t_x[:, None]) * x + t_x[:, None] * tx)).mean()
        sy = S(y)
        loss_s = ((1 - t_y) * tau * ((sy - y) ** 2).sum(-1) + V(t_y, t_y[:, None] * y + (1 - t_y[:, None]) * sy)).mean()
        opt["T"].zero_grad(); opt["S"].zero_grad()
        (loss_t + loss_s).backward()
        opt["T"].step(); opt["S"].step()
        for p in V.parameters():
            p.requires_grad_(True)
        t_x, t_y = torch.rand(batch), torch.rand(batch)
        with torch.no_grad():
            x_t = (1 - t_x[:, None]) * x + t_x[:, None] * T(x)
            y_t = t_y[:, None] * y + (1 - t_y[:, None]) * S(y)
        t_all = torch.cat([t_x, t_y]).requires_grad_(True)
        z_all = torch.cat([x_t, y_t]).requires_grad_(True)
        v_all = V(t_all, z_all)
        d_t, d_z = torch.autograd.grad(v_all.sum(), (t_all, z_all), create_graph=True)
        hjb = ((d_t + (d_z**2).sum(-1) / (4 * tau)) ** 2).mean()
        loss_v = v_all[:batch].mean() - v_all[batch:].mean() + lam * hjb
        opt["V"].zero_grad()
        loss_v.backward()
        opt["V"].step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        rates.append(iters / (time.perf_counter() - t0))
    return sorted(rates)[len(rates) // 2]


def _load_config(spec: str, overrides: list[str]):
    import importlib.util

    path, _, preset = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    c = module.get_config(preset or None)
    for item in overrides:
        field, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = field.split(".")
        node = c
        for part in parents:
            node = node[part]
        node[leaf] = value
    return c


def loop_rates(spec: str, overrides: list[str], samplers: list[str], per_calls: list[int], iters: int,
               repeats: int) -> dict:
    """it/s of ``Trainer.call_fn`` as ``train`` calls it, per (sampler, steps_per_call)."""
    import jax

    from jot.train import loop

    runs = {}
    for sampler in samplers:
        for n in per_calls:
            c = _load_config(spec, overrides)
            c.data.sampler, c.train.steps_per_call = sampler, n
            trainer = loop.Trainer(c, tempfile.mkdtemp(prefix="speed_2d_"), create=True)
            state, record, call = trainer.initial_state(), trainer.no_divergence(), trainer.call_fn(n)
            state, record, _ = call(state, record, *trainer.call_args(0, n))
            jax.block_until_ready(state)
            runs[(sampler, n)] = [trainer, call, state, record, n, []]
    for _ in range(repeats):
        for run in runs.values():
            trainer, call, state, record, n, rates = run
            todo = -(-iters // n) * n
            t0 = time.perf_counter()
            for step in range(n, n + todo, n):
                state, record, metrics = call(state, record, *trainer.call_args(step, n))
            jax.block_until_ready((state, metrics))
            rates.append(todo / (time.perf_counter() - t0))
            run[2], run[3] = state, record
    return {f"{sampler}/{n}": statistics.median(run[5]) for (sampler, n), run in runs.items()}


def launch_rates(spec: str, overrides: list[str], samplers: list[str], per_calls: list[int], steps: int) -> dict:
    """``steps_per_sec`` (median after the first log line) and wall time of the whole
    ``launch.main`` job, per (sampler, steps_per_call)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = tempfile.mkdtemp(prefix="speed_2d_launch_")
    out = {}
    for sampler in samplers:
        for n in per_calls:
            workdir = os.path.join(parent, f"{sampler}_{n}")
            cmd = [sys.executable, "-m", "launch.main", f"--config={spec}", f"--workdir={workdir}",
                   f"--config.train.steps={steps}", "--config.train.progress=False",
                   f"--config.data.sampler={sampler}", f"--config.train.steps_per_call={n}",
                   *[f"--config.{o}" for o in overrides]]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
            rates = [line["steps_per_sec"] for line in lines[1:] if "steps_per_sec" in line]
            out[f"{sampler}/{n}"] = {"it_s": statistics.median(rates) if rates else float("nan"), "wall_s": wall,
                                     "command": " ".join(cmd[1:])}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="step", help="comma-separated: step, loop, launch")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default="benchmarks/results/speed_2d.json")
    p.add_argument("--config", default="configs/diotm_2d.py:g8g", help="loop/launch: the 2D job")
    p.add_argument("--sampler", default="host,device", help="loop/launch: comma-separated host, device")
    p.add_argument("--steps_per_call", default="1,10,50,100", help="loop/launch: comma-separated")
    p.add_argument("--launch_steps", type=int, default=1000)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="loop/launch: config override")
    p.add_argument("--dispatch_out", default="benchmarks/results/speed_2d_dispatch.json")
    args = p.parse_args()
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    from jot import files

    if "loop" in sections or "launch" in sections:
        samplers = [x.strip() for x in args.sampler.split(",")]
        per_calls = [int(x) for x in args.steps_per_call.split(",")]
        result = {"args": vars(args)}
        if "loop" in sections:
            result["loop_it_s"] = loop_rates(args.config, args.set, samplers, per_calls, args.iters, args.repeats)
        if "launch" in sections:
            result["launch"] = launch_rates(args.config, args.set, samplers, per_calls, args.launch_steps)
        base = result.get("loop_it_s", {}).get("host/1") or result.get("launch", {}).get("host/1", {}).get("it_s")
        print(f"{args.config} {' '.join(args.set)}: it/s by batch sampler and steps per call "
              f"(loop: median of {args.repeats} x {args.iters} steps; launch: {args.launch_steps} steps)")
        print(f"{'sampler':<8} {'steps/call':>10} {'loop it/s':>10} {'launch it/s':>12} {'launch wall s':>14} {'vs host/1':>10}")
        for sampler in samplers:
            for n in per_calls:
                key = f"{sampler}/{n}"
                lr = result.get("loop_it_s", {}).get(key, float("nan"))
                la = result.get("launch", {}).get(key, {})
                rate = lr if "loop_it_s" in result else la.get("it_s", float("nan"))
                print(f"{sampler:<8} {n:>10} {lr:>10.1f} {la.get('it_s', float('nan')):>12.1f} "
                      f"{la.get('wall_s', float('nan')):>14.1f} {rate / base if base else float('nan'):>9.2f}x")
        files.write_json(args.dispatch_out, result)
        print(f"wrote {args.dispatch_out}")
    if "step" not in sections:
        return

    jot_rate = jot_step_rate(args.batch, args.iters, args.repeats)
    torch_rate = torch_step_rate(args.batch, args.iters, args.repeats, args.threads)
    print(f"DIOTM train step, batch {args.batch}, width 128, {args.threads} CPU threads (median of {args.repeats} x {args.iters} steps)")
    print(f"{'implementation':<22} {'it/s':>8} {'ms/step':>8}")
    print(f"{'jot (jax.jit)':<22} {jot_rate:>8.1f} {1e3 / jot_rate:>8.2f}")
    print(f"{'PyTorch eager':<22} {torch_rate:>8.1f} {1e3 / torch_rate:>8.2f}")
    print(f"speed-up: {jot_rate / torch_rate:.2f}x")
    from jot import files

    files.write_json(args.out, {"args": vars(args), "jot_it_s": jot_rate, "torch_it_s": torch_rate, "ratio": jot_rate / torch_rate})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
