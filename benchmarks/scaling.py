"""Steps/s and final loss of one DIOTM run on 1, 2, 4 and 8 devices, and on 2 processes x 4.

    python benchmarks/scaling.py [--steps 300] [--batch 256] [--out benchmarks/results/scaling.json]

Every row is the README's training command (``python -m launch.main``) in a fresh process
with ``JAX_NUM_CPU_DEVICES`` forced CPU devices, the same config (``diotm_2d.py:g8g`` cut to
``--steps``) and the same global batch, so the final losses must agree to float tolerance
whatever the layout (batches are a function of the step only). Steps/s is measured over the
log windows after the first (which holds the compilation). ``--fsdp`` adds rows whose state is
split over an ``fsdp`` axis of 4 (arrays of >= 1024 elements).

Forced CPU devices share the machine's cores, so on a small machine more devices mean more
partitioning and collective overhead, not more compute: the table measures the spine's
overhead, and real speed-ups need real accelerators.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run(devices: int, processes: int, args, workdir: str, mesh: dict) -> dict:
    """Trains in ``processes`` processes of ``devices`` CPU devices each; returns its figures."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS")}
    env.update(JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "launch.main", "--config=configs/diotm_2d.py:g8g", f"--workdir={workdir}",
               f"--config.train.steps={args.steps}", f"--config.train.batch_size={args.batch}",
               f"--config.train.log_every={args.log_every}", f"--config.train.checkpoint_every={args.steps}",
               "--config.train.progress=False", *[f"--config.mesh.{k}={v}" for k, v in mesh.items()]]
    if processes > 1:
        port = _port()
        procs = [subprocess.Popen(command + [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
                                             f"--process_id={i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for i in range(processes)]
    else:
        procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)]
    t0 = time.perf_counter()
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    for p, out in zip(procs, outputs):
        if p.returncode:
            raise RuntimeError(f"run with {processes} x {devices} devices failed ({p.returncode}):\n{out[-3000:]}")
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    later = [r for r in lines if "steps_per_sec" in r][1:]
    rate = len(later) * args.log_every / sum(args.log_every / r["steps_per_sec"] for r in later)
    final = [r for r in lines if "loss" in r][-1]
    return {"processes": processes, "devices_per_process": devices, "mesh": mesh, "steps_per_sec": rate,
            "final_loss": final["loss"], "final_step": final["step"], "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--fsdp", action="store_true", help="also time fsdp=4 layouts")
    p.add_argument("--out", default="benchmarks/results/scaling.json")
    args = p.parse_args()
    if args.steps < 2 * args.log_every:
        p.error(f"--steps={args.steps} must be at least 2 x --log_every={args.log_every} (the first window compiles).")

    layouts = [(1, 1, {}), (2, 1, {}), (4, 1, {}), (8, 1, {}), (1, 2, {}), (4, 2, {})]
    if args.fsdp:
        layouts += [(8, 1, {"data": 2, "fsdp": 4, "fsdp_min_size": 1024}),
                    (4, 2, {"data": 2, "fsdp": 4, "fsdp_min_size": 1024})]
    rows = []
    scratch = tempfile.mkdtemp(prefix="jot-scaling-")
    try:
        for i, (devices, processes, mesh) in enumerate(layouts):
            rows.append(run(devices, processes, args, os.path.join(scratch, str(i)), mesh))
            r = rows[-1]
            print(f"  {processes} x {devices} devices {mesh or ''}: {r['steps_per_sec']:.1f} steps/s, "
                  f"final loss {r['final_loss']:.6f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    base = rows[0]
    print(f"\nDIOTM g8g, {args.steps} steps, global batch {args.batch}, {os.cpu_count()} CPU cores\n")
    print(f"{'layout':<34} {'steps/s':>8} {'vs 1 dev':>9} {'final loss':>12} {'|d loss|':>9}")
    for r in rows:
        layout = f"{r['processes']} proc x {r['devices_per_process']} dev"
        if r["mesh"]:
            layout += f" data={r['mesh']['data']} fsdp={r['mesh']['fsdp']}"
        print(f"{layout:<34} {r['steps_per_sec']:>8.1f} {r['steps_per_sec'] / base['steps_per_sec']:>9.2f} "
              f"{r['final_loss']:>12.6f} {abs(r['final_loss'] - base['final_loss']):>9.1e}")

    from jot import files

    files.write_json(args.out, {"args": vars(args), "cpu_count": os.cpu_count(), "rows": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
