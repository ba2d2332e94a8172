"""DIOTM (displacement-interpolation OT map, HJB regulariser) on the 2D benchmarks.

    python -m launch.main --config=configs/diotm_2d.py:g8g --workdir=runs/diotm_g8g

Presets: ``g8g`` (default), ``g25g``, ``moon_spiral``, ``g_circles``, ``test``. The workdir
ends with ``metrics.json`` (``w2``, ``l2_to_ot``, ``w2_backward`` on 1000 held-out points,
exact OT), ``transport.npz``, ``transport.png``. Paper Table 1 (120k iterations):
g8g 3.72 / 4.38, g25g 6.49 / 10.00, moon_spiral 0.55 / 1.67, g_circles 2.34 / 5.44 (W2 / L2);
``benchmarks/toy_2d.py`` prints jot's figures next to them.

On an accelerator, where the step is cheap and per-step host work dominates, add
``--config.data.sampler=device --config.train.steps_per_call=50``: batches drawn inside the
jitted step and 50 steps per call (a different random stream from the host sampler's, so
different numbers from the tables; ``benchmarks/speed_2d.py --sections loop,launch``).
"""
from configs import common_2d


def get_config(preset: str | None = None):
    c = common_2d.base("diotm")
    c = common_2d.apply_preset(c, preset)
    if preset == "moon_spiral":
        # Chosen on the validation seed 0 only (benchmarks/toy_2d.py --validate, 4k iterations):
        # W2 / L2 0.48 / 0.94 with a constant rate, 0.47 / 1.08 with cosine decay.
        c.train.lr_schedule = "constant"
    return c
