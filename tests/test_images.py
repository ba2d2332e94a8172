"""Image folders: resize/crop, channels, determinism, and clear errors for bad inputs."""
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jot.data import images


def _write(folder, n, size=(20, 10), color=(255, 0, 0)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, color).save(folder / f"img{i}.png")


def _config(src, tgt, **data):
    return ml_collections.ConfigDict({
        "seed": 0, "train": {"batch_size": 4},
        "data": {"name": "folder", "source": str(src), "target": str(tgt), "size": 8, "channels": 3,
                 "resize": "crop", "num_eval": 2, **data},
    })


def test_folder_dataset_crops_scales_and_is_deterministic(tmp_path):
    _write(tmp_path / "a", 6, color=(255, 0, 0))
    _write(tmp_path / "b" / "sub", 5, size=(9, 30), color=(0, 0, 255))
    ds = images.build(_config(tmp_path / "a", tmp_path / "b"))
    batch = ds.train_batch(3)
    assert batch["x"].shape == batch["y"].shape == (4, 8, 8, 3)
    np.testing.assert_allclose(batch["x"][0, 0, 0], [1.0, -1.0, -1.0])
    np.testing.assert_allclose(batch["y"][0, 0, 0], [-1.0, -1.0, 1.0])
    ev = ds.eval_data()
    assert ev["x"].shape == (2, 8, 8, 3) and ev["y"].shape == (2, 8, 8, 3)
    again = images.build(_config(tmp_path / "a", tmp_path / "b"))
    np.testing.assert_array_equal(ds._train["x"][13], again._train["x"][13])
    grey = images.build(_config(tmp_path / "a", tmp_path / "b", channels=1)).train_batch(0)["x"]
    np.testing.assert_allclose(grey[0, 0, 0, 0], 76 / 127.5 - 1.0)  # PIL's L of pure red is 76


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    _write(tmp_path / "b", 4)
    with pytest.raises(ValueError, match=r"image folder '.*empty' contains no .png/.jpg/.jpeg files"):
        images.build(_config(tmp_path / "empty", tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match=r"image folder '.*nowhere' does not exist"):
        images.build(_config(tmp_path / "nowhere", tmp_path / "b"))


def test_wrong_image_size_without_resizing_is_a_clear_error(tmp_path):
    _write(tmp_path / "a", 4, size=(20, 10))
    ds = images.build(_config(tmp_path / "a", tmp_path / "a", resize="none"))
    with pytest.raises(ValueError, match=r"is 20x10; expected 8x8 with config.data.resize='none'"):
        ds.train_batch(0)


def test_wrong_batch_shape_or_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"shape \(2, 16, 16, 3\); expected \(batch, 16, 16, 1\)"):
        images.check_images(np.zeros((2, 16, 16, 3)), size=16, channels=1)
    with pytest.raises(ValueError, match=r"shape \(2, 32, 32, 1\); expected \(batch, 16, 16, 1\)"):
        images.check_images(np.zeros((2, 32, 32, 1)), size=16, channels=1)


def test_sixteen_bit_png_is_scaled_by_65535_not_clipped(tmp_path):
    pixels = np.array([[0, 16384], [32768, 65535]], np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode in ("I;16", "I")
    expected = pixels.astype(np.float32) / 32767.5 - 1.0
    gray = images.load_image(str(tmp_path / "deep.png"), size=2, channels=1, resize="none")
    np.testing.assert_allclose(gray[..., 0], expected, atol=1e-6)
    rgb = images.load_image(str(tmp_path / "deep.png"), size=2, channels=3, resize="none")
    np.testing.assert_allclose(rgb, np.repeat(expected[..., None], 3, axis=-1), atol=1e-6)
    Image.fromarray(np.full((6, 4), 32768, np.uint16)).save(tmp_path / "tall.png")
    cropped = images.load_image(str(tmp_path / "tall.png"), size=4, channels=1, resize="crop")
    np.testing.assert_allclose(cropped, 0.0, atol=1e-4)


def test_corrupt_or_truncated_images_are_named_when_the_dataset_is_built(tmp_path):
    _write(tmp_path / "a", 6)
    _write(tmp_path / "b", 6)
    data = (tmp_path / "a" / "img3.png").read_bytes()
    (tmp_path / "a" / "img3.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "a" / "img5.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"2 of 6 images in folder '.*a' cannot be decoded") as e:
        images.build(_config(tmp_path / "a", tmp_path / "b"))
    assert "img3.png" in str(e.value) and "img5.png" in str(e.value) and "img0.png" not in str(e.value)
