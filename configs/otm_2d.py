"""OTM (semi-dual OT map; the DIOTM paper's baseline) on the 2D benchmarks.

    python -m launch.main --config=configs/otm_2d.py:g8g --workdir=runs/otm_g8g

Presets as in ``diotm_2d.py``. Paper Table 1 (OTM): g8g 4.93 / 6.48, g25g 10.09 / 13.09,
moon_spiral 0.40 / 1.77, g_circles 3.96 / 6.23 (W2 / L2).
"""
from configs import common_2d


def get_config(preset: str | None = None):
    c = common_2d.base("otm")
    c.loss.regularizer = "none"
    c.loss.k_t = 10  # Rout et al.: several map steps per potential step
    # moon_spiral keeps the cosine schedule: on the validation seed 0 (benchmarks/toy_2d.py --validate,
    # 4k iterations) W2 / L2 was 0.57 / 1.82 with cosine and 0.49 / 3.44 with a constant rate.
    return common_2d.apply_preset(c, preset)
