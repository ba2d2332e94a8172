"""What the digits benchmarks (``digits.py``, ``rdmd.py``) score with: the held-out test set, a
class-accuracy probe, the Frechet-distance floor and a throughput timer."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

FLOOR_DRAWS = 5


def flat(a) -> np.ndarray:
    return np.asarray(a).reshape(len(a), -1)


@dataclasses.dataclass
class Scoring:
    """``split`` (``jot.data.digits.DigitsSplit``), ``x``/``y``/``labels`` (test sources, their
    thick twins, classes), ``clf`` (logistic regression fit on the thick training digits) and
    ``floors`` (FD of ``FLOOR_DRAWS`` random sets of thick training digits, as many as the twins,
    to the twins)."""

    split: object
    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    clf: object
    floors: list


def scoring(data) -> Scoring:
    """The ``Scoring`` of the digits split of a config's ``data`` section."""
    from sklearn.linear_model import LogisticRegression

    from jot.data import digits
    from jot.metrics import frechet

    sp = digits.split(data.size, data.thickness, data.split_seed)
    clf = LogisticRegression(max_iter=2000).fit(flat(sp.target_train), sp.target_labels)
    pick = np.random.default_rng(0)
    y = sp.test_y
    floors = [frechet.frechet_distance(sp.target_train[pick.choice(len(sp.target_train), len(y), replace=False)], y)
              for _ in range(FLOOR_DRAWS)]
    return Scoring(sp, sp.test_x, y, sp.test_labels, clf, floors)


def rate(fn, x, repeats: int = 3) -> float:
    """Images per second of ``fn`` on the batch ``x`` (after a warm-up call, best of ``repeats``)."""
    import jax

    jax.block_until_ready(fn(x))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        best = min(best, time.perf_counter() - t0)
    return len(x) / best
