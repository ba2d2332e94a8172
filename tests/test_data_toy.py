"""jot.data.toy: benchmark samplers, determinism, and user point clouds from .npz."""
import numpy as np
import pytest

from configs import diotm_2d
from jot import data
from jot.data import toy


def _config(name="g8g", **data_fields):
    c = diotm_2d.get_config("test")
    c.data.name = name
    for k, v in data_fields.items():
        c.data[k] = v
    return c


def test_benchmark_targets_have_the_documented_geometry():
    rng = np.random.default_rng(0)
    y = toy.eight_gaussians()(rng, 20000)
    r = np.linalg.norm(y, axis=1)
    assert abs(np.median(r) - 12.0) < 0.1
    angles = np.round(np.degrees(np.arctan2(y[:, 1], y[:, 0])) / 45) % 8
    assert set(np.unique(angles)) == set(range(8))
    g = toy.grid_gaussians()(rng, 20000)
    np.testing.assert_allclose(np.sort(np.unique(np.round(g[:, 0] / 3) * 3)), [-6, -3, 0, 3, 6])
    assert np.std(g - np.round(g / 3) * 3) == pytest.approx(np.sqrt(0.005), rel=0.05)
    c = toy.circles()(rng, 20000)
    r = np.linalg.norm(c, axis=1)
    assert np.mean(np.abs(r - 4) < 1) == pytest.approx(0.5, abs=0.02)
    assert np.mean(np.abs(r - 8) < 1) == pytest.approx(0.5, abs=0.02)
    s = toy.spiral(noise=0.0)(rng, 1000)
    theta = np.arctan2(s[:, 1], s[:, 0])
    np.testing.assert_allclose(np.linalg.norm(s, axis=1) % (2 * np.pi), (theta + np.pi) % (2 * np.pi), atol=1e-6)


def test_batches_are_a_pure_function_of_the_step():
    ds = data.build(_config())
    a, b = ds.train_batch(7), ds.train_batch(7)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(ds.train_batch(8)["x"], a["x"])
    assert a["x"].shape == (64, 2) and a["y"].dtype == np.float32
    ev = ds.eval_data()
    assert ev["x"].shape == (256, 2) and not np.array_equal(ev["x"], a["x"][:1])


def test_npz_point_clouds(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "src.npz", x=rng.normal(size=(500, 3)))
    np.savez(tmp_path / "tgt.npz", pts=rng.normal(size=(400, 3)) + 5)  # the file's only array
    ds = data.build(_config("points", source=f"npz:{tmp_path}/src.npz", target=f"npz:{tmp_path}/tgt.npz"))
    b = ds.train_batch(0)
    assert b["x"].shape == (64, 3) and b["y"].mean() > 4
    ev = ds.eval_data()
    assert ev["x"].shape == ev["y"].shape == (80, 3)  # 20% of the smaller cloud, capped by eval_size


def test_npz_errors_are_clear(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(50, 2)))
    np.savez(tmp_path / "b3.npz", x=rng.normal(size=(50, 3)))
    bad = rng.normal(size=(50, 2))
    bad[7, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad)
    np.savez(tmp_path / "two.npz", a=bad, b=bad)
    with pytest.raises(ValueError, match="dimension 2 but target points .* dimension 3"):
        data.build(_config("points", source=f"npz:{tmp_path}/a.npz", target=f"npz:{tmp_path}/b3.npz"))
    with pytest.raises(ValueError, match="NaN or inf \\(first at row 7\\)"):
        data.build(_config("points", source=f"npz:{tmp_path}/nan.npz", target=f"npz:{tmp_path}/a.npz"))
    with pytest.raises(FileNotFoundError, match="no file at .*missing.npz"):
        data.build(_config("points", source=f"npz:{tmp_path}/missing.npz", target=f"npz:{tmp_path}/a.npz"))
    with pytest.raises(ValueError, match="none named 'x'"):
        data.build(_config("points", source=f"npz:{tmp_path}/two.npz", target=f"npz:{tmp_path}/a.npz"))
    with pytest.raises(ValueError, match="expected 'npz:"):
        data.build(_config("points", source=f"{tmp_path}/a.npz", target=f"npz:{tmp_path}/a.npz"))
    with pytest.raises(ValueError, match="unknown dataset"):
        data.build(_config("g9g"))


def test_npz_files_that_are_not_real_float32_points_are_rejected_naming_the_file(tmp_path):
    from jot.errors import UserError

    rng = np.random.default_rng(0)
    good = f"npz:{tmp_path}/a.npz"
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(50, 2)))
    np.savez(tmp_path / "complex.npz", x=rng.normal(size=(50, 2)) + 1j)
    huge = rng.normal(size=(50, 2))
    huge[4, 0] = 1e39
    np.savez(tmp_path / "huge.npz", x=huge)
    np.save(tmp_path / "plain.npy", rng.normal(size=(50, 2)))
    (tmp_path / "plain.npy").rename(tmp_path / "renamed.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x00junk")
    cases = {
        "complex.npz": r"complex.npz: points are complex \(complex128\); expected real numbers",
        "huge.npz": r"huge.npz: 1 of 50 points have coordinates beyond the float32 range .*first at row 4",
        "renamed.npz": r"renamed.npz is a single .npy array, not an .npz archive; save the points with np.savez",
        "junk.npz": r"junk.npz is not a readable .npz archive",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message):
            data.build(_config("points", source=f"npz:{tmp_path}/{name}", target=good))
