"""The offline thin/thick digits benchmark: unpaired split, true twins, deterministic batches."""
import ml_collections
import numpy as np
import pytest
from scipy import ndimage
from sklearn.datasets import load_digits

from jot.data import digits


def _config(size=32, seed=0):
    return ml_collections.ConfigDict({"seed": seed, "data": {"name": "digits", "size": size},
                                      "train": {"batch_size": 8}})


def test_split_is_unpaired_and_test_keeps_true_twins():
    sp = digits.split(32)
    src, tgt, test = (set(i.tolist()) for i in sp.indices)
    assert not (src & tgt) and not (src & test) and not (tgt & test)
    assert len(src | tgt | test) == 1797
    labels = load_digits().target
    np.testing.assert_array_equal(sp.test_labels, labels[sp.indices[2]])
    np.testing.assert_array_equal(sp.target_labels, labels[sp.indices[1]])
    # The twin is the 5x5 grey dilation of the thin image (thickness 1 px of 8 at 32x32).
    np.testing.assert_array_equal(sp.test_y[..., 0], ndimage.grey_dilation(sp.test_x[..., 0], size=(1, 5, 5)))
    assert sp.test_x.shape == (len(test), 32, 32, 1) and sp.test_x.dtype == np.float32
    assert sp.test_x.min() == -1.0 and sp.test_x.max() == 1.0
    assert np.all(sp.test_y >= sp.test_x) and sp.test_y.mean() > sp.test_x.mean() + 0.2


def test_train_batches_are_a_pure_function_of_seed_and_step():
    a, b = digits.build(_config(16)), digits.build(_config(16))
    np.testing.assert_array_equal(a.train_batch(7)["x"], b.train_batch(7)["x"])
    np.testing.assert_array_equal(a.train_batch(7)["y"], b.train_batch(7)["y"])
    assert not np.array_equal(a.train_batch(7)["x"], a.train_batch(8)["x"])
    other = digits.build(_config(16, seed=1))
    assert not np.array_equal(a.train_batch(7)["x"], other.train_batch(7)["x"])
    batch = a.train_batch(0)
    assert batch["x"].shape == batch["y"].shape == (8, 16, 16, 1)
    ev = a.eval_data()
    assert set(ev) == {"x", "y", "label"} and len(ev["x"]) == len(ev["label"]) == 1797 - 2 * int(0.4 * 1797)


def test_bad_digits_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"config.data.size=20; .*multiple of 8"):
        digits.thin_and_thick(20)
