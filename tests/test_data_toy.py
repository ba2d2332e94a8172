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


# device samplers (config.data.sampler="device")

_DEVICE_CASES = {
    "g8g": (toy.standard_normal(), toy.eight_gaussians(), toy.device_standard_normal(), toy.device_eight_gaussians()),
    "g25g": (None, toy.grid_gaussians(), None, toy.device_grid_gaussians()),
    "moon_spiral": (toy.two_moons(), toy.spiral(), toy.device_two_moons(), toy.device_spiral()),
    "g_circles": (None, toy.circles(), None, toy.device_circles()),
    "gaussians": (toy.gaussian((1.0, -2.0), 0.5), toy.gaussian((4.0, 4.0), 2.0),
                  toy.device_gaussian((1.0, -2.0), 0.5), toy.device_gaussian((4.0, 4.0), 2.0)),
}


def _sliced_w1(a, b, directions):
    """Mean over ``directions`` of the 1D W1 between the projections of two equal-size samples."""
    pa, pb = np.sort(a @ directions.T, axis=0), np.sort(b @ directions.T, axis=0)
    return float(np.mean(np.abs(pa - pb)))


@pytest.mark.parametrize("name", sorted(_DEVICE_CASES))
def test_device_samplers_match_the_numpy_distributions(name):
    import jax

    n = 20_000
    angles = np.linspace(0, np.pi, 16, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)], 1)
    np_src, np_tgt, dev_src, dev_tgt = _DEVICE_CASES[name]
    for i, (ref, dev) in enumerate(((np_src, dev_src), (np_tgt, dev_tgt))):
        if ref is None:
            continue
        a = ref(np.random.default_rng(i), n)
        b = ref(np.random.default_rng(100 + i), n)  # a second numpy sample: the two-sample floor
        d = np.asarray(dev(jax.random.PRNGKey(i), n), np.float64)
        assert d.shape == (n, 2) and d.dtype == np.float64
        scale = float(np.sqrt(np.trace(np.cov(a.T))))
        np.testing.assert_allclose(d.mean(0), a.mean(0), atol=0.03 * scale + 0.02)
        np.testing.assert_allclose(np.cov(d.T), np.cov(a.T), atol=0.05 * scale**2 + 0.02)
        floor = _sliced_w1(a, b, directions)
        assert _sliced_w1(a, d, directions) < 3 * floor + 1e-3, (name, i, floor)


def test_device_batches_are_a_pure_function_of_step_and_key_and_processes_split_them():
    import jax

    c = _config("moon_spiral", sampler="device")
    ds = data.build(c)
    assert ds.device_sampling
    draw = jax.jit(ds.device_batch, static_argnums=1)
    a = draw(np.int32(7), ("x", "y"))
    np.testing.assert_array_equal(a["x"], draw(np.int32(7), ("x", "y"))["x"])
    np.testing.assert_array_equal(a["y"], draw(np.int32(7), ("y",))["y"])  # keys draw independently
    # Outside jit the same random bits go through separately compiled transforms: equal up to rounding.
    np.testing.assert_allclose(a["x"], ds.device_batch(7)["x"], rtol=1e-6, atol=1e-6)
    assert not np.array_equal(a["x"], draw(np.int32(8), ("x", "y"))["x"])
    assert a["x"].shape == (c.train.batch_size, 2)
    parts = [toy.build(c, process_index=i, process_count=4).train_batch(7) for i in range(4)]
    for key in ("x", "y"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), np.asarray(a[key]))
    assert not data.build(_config("moon_spiral")).device_sampling  # host is the default


def test_unknown_sampler_is_a_user_error():
    from jot.errors import UserError

    with pytest.raises(UserError, match=r"config.data.sampler='gpu': expected one of \['host', 'device'\]"):
        data.build(_config(sampler="gpu"))
