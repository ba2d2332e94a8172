"""Iterations/s of jot's jitted DIOTM step against the same step in eager PyTorch.

    python benchmarks/speed_2d.py [--batch 512] [--iters 200] [--out benchmarks/results/speed_2d.json]

Both sides: residual-MLP maps T and S and the time-conditioned value function V of width
128 (the paper's 2D architecture), Adam, one T/S update and one V update with the HJB
regulariser (second-order autodiff through V), uniform times, the same batch on device,
and the same number of CPU threads. The PyTorch step is written here from the formulas.
"""
import argparse
import functools
import math
import os
import sys
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default="benchmarks/results/speed_2d.json")
    args = p.parse_args()

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
