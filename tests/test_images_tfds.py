"""tfds.data_source domains under tfds.testing.mock_data (skipped without tensorflow-datasets)."""
import ml_collections
import numpy as np
import pytest

from jot.data import tfds_source


def _config(**data):
    return ml_collections.ConfigDict({"seed": 0, "train": {"batch_size": 4},
                                      "data": {"name": "tfds", "size": 16, "channels": 3, "num_eval": 3, **data}})


def test_cycle_gan_domains_from_mock_data_are_deterministic():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = tfds_source.build(_config(tfds_name="cycle_gan/horse2zebra"))
        a, b = ds.train_batch(2), ds.train_batch(2)
        ev = ds.eval_data()
    assert a["x"].shape == a["y"].shape == (4, 16, 16, 3) and a["x"].dtype == np.float32
    assert -1.0 <= a["x"].min() and a["x"].max() <= 1.0
    np.testing.assert_array_equal(a["x"], b["x"])
    assert ev["x"].shape == (3, 16, 16, 3)


def test_unknown_tfds_name_is_a_clear_error():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4), pytest.raises(ValueError, match=r"tfds_name='mnist'.*cycle_gan"):
        tfds_source.build(_config(tfds_name="mnist"))
