"""``jot.metrics.fid``: the FID InceptionV3 against an independent PyTorch reference
(``fid_reference``: random weights through the converter), the resize against ``F.interpolate``, the
Frechet formula against scipy, KID against a direct unbiased MMD^2, and the errors for missing or
wrong weights. Where pytorch-fid imports, the reference itself and jot are also checked against it
(state-dict keys, features, ``calculate_frechet_distance``); elsewhere those tests skip."""
import os
import sys

import numpy as np
import pytest
import scipy.linalg

from jot.errors import UserError, UserFileNotFoundError
from jot.metrics import fid as fidlib

torch = pytest.importorskip("torch")
import fid_reference  # the tests/ helper module; needs torch only

SHAPES = [(3, 32, 32, 1), (3, 64, 64, 3), (2, 320, 320, 3)]


def _import_pytorch_fid():
    """pytorch-fid's inception module. Where torchvision's C++ ops do not load (the PyPI wheel is
    built for CUDA torch; this is a CPU torch), torchvision's import still registers fake kernels
    for ``torchvision::nms``/``qnms``; declaring their schemas first lets it import. pytorch-fid
    only uses torchvision's pure-Python Inception modules."""
    try:
        import pytorch_fid.inception as pfi
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "pytorch_fid"))]:
            del sys.modules[name]
        _import_pytorch_fid.lib = torch.library.Library("torchvision", "DEF")  # kept alive with the function
        for op in ("nms", "qnms"):
            _import_pytorch_fid.lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import pytorch_fid.inception as pfi
    return pfi


@pytest.fixture(scope="module")
def pfi():
    """pytorch-fid's ``inception`` module, or a skip: pytorch-fid (and the torchvision it imports) is
    not a test dependency, since the index's torchvision for this CPU torch breaks other imports."""
    try:
        return _import_pytorch_fid()
    except ImportError as e:
        pytest.skip(f"pytorch-fid cannot be imported ({e}); the comparison with pytorch-fid itself runs only "
                    "where pytorch-fid and torchvision are importable (e.g. on PYTHONPATH). "
                    "fid_reference stands in for it in the other tests.")


# --------------------------------------------------------------------------- the network


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``fid_reference``'s network with random weights and BatchNorm statistics that are not the
    identity, its state dict saved as a .pth, and that file converted to safetensors with the
    command-line converter."""
    model = fid_reference.random_network(seed=0)
    tmp = tmp_path_factory.mktemp("fid")
    pth = str(tmp / "pt_inception-random.pth")
    torch.save(model.state_dict(), pth)
    dst = str(tmp / "inception_fid.safetensors")
    assert fidlib.main(["convert", "--src", pth, "--dst", dst]) == 0
    return model, pth, dst


@pytest.fixture(scope="module")
def jot_net(reference):
    return fidlib.load_inception(reference[2])


@pytest.fixture(scope="module", params=SHAPES, ids=["32x32-grey", "64x64-rgb", "320x320-rgb"])
def case(request, reference):
    """Random NHWC images in [0, 1] of one shape and the reference's pool3 features for them."""
    shape = request.param
    x01 = np.random.default_rng(sum(shape)).uniform(0, 1, shape).astype(np.float32)
    return shape, x01, _torch_features(reference[0], x01)


def _nchw3(images_nhwc_01: np.ndarray):
    x = torch.from_numpy(np.ascontiguousarray(images_nhwc_01.transpose(0, 3, 1, 2)))
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def _torch_features(model, images_nhwc_01: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(_nchw3(images_nhwc_01))
    if isinstance(out, list):  # pytorch-fid's InceptionV3: [pool3 (N, 2048, 1, 1)]
        out = out[0][:, :, 0, 0]
    return out.double().numpy()


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest deviation relative to the reference's largest magnitude (pool3 features are >= 0)."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_reference_loads_its_file_strictly(reference):
    """The saved file is a pytorch-fid weight file in layout: every tensor of the FID network plus the
    unused 1008-class head and ``num_batches_tracked``; it loads back strictly and gives the same network."""
    model, pth, _ = reference
    sd = torch.load(pth, map_location="cpu", weights_only=True)
    assert sd["fc.weight"].shape == (1008, 2048) and sd["fc.bias"].shape == (1008,)
    assert sd["Mixed_7c.branch_pool.bn.num_batches_tracked"].dtype == torch.int64
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3) and "Conv2d_1a_3x3.conv.bias" not in sd
    # 94 conv + BN units (conv weight; BN weight, bias, mean, var, count) and the head.
    assert sum(k.endswith(".conv.weight") for k in sd) == 94 and len(sd) == 94 * 6 + 2
    again = fid_reference.load(pth).state_dict()
    assert list(again) == list(model.state_dict())
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())


def test_features_match_reference(case, jot_net):
    """32x32 grey and 64x64 RGB images go up to 299, 320x320 comes down; jot gets [-1, 1] images,
    the reference the same images in [0, 1] (pytorch-fid's ``resize_input`` and ``normalize_input`` path)."""
    shape, x01, want = case
    got = fidlib.features(2 * x01 - 1, jot_net, batch_size=2)  # two batches, the last one padded
    assert got.shape == (shape[0], 2048) and got.dtype == np.float64
    # The features depend on the image: two images differ by 100x the tolerance below.
    assert np.abs(want[0] - want[1]).max() > 1e-2 * np.abs(want).max()
    rel = _max_rel(got, want)
    print(f"max relative error jot vs fid_reference {shape}: {rel:.2e}")
    assert rel <= 1e-4, rel
    # The same images given in [0, 1].
    assert _max_rel(fidlib.features(x01, jot_net, batch_size=2, value_range=(0, 1)), want) <= 1e-4


# --------------------------------------------------------------------------- against pytorch-fid itself


def test_reference_state_dict_is_pytorch_fids(pfi):
    """Same keys in the same order, shapes and dtypes as pytorch-fid's ``fid_inception_v3()``."""
    built = []
    real = pfi._inception_v3

    def capture(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(pfi, "_inception_v3", capture)
    mp.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: built[-1].state_dict())  # no download
    try:
        theirs = pfi.fid_inception_v3().state_dict()
    finally:
        mp.undo()
    ours = fid_reference.FIDInceptionV3().state_dict()
    assert list(ours) == list(theirs)
    assert {k: (tuple(v.shape), v.dtype) for k, v in ours.items()} == \
        {k: (tuple(v.shape), v.dtype) for k, v in theirs.items()}


@pytest.fixture(scope="module")
def pytorch_fid_model(pfi, reference):
    """pytorch-fid's ``InceptionV3([3], resize_input=True, normalize_input=True)`` with the reference's
    .pth (``fid_inception_v3`` loads it strictly: a missing or extra key fails here)."""
    state_dict = torch.load(reference[1], map_location="cpu", weights_only=True)
    mp = pytest.MonkeyPatch()
    mp.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state_dict)  # instead of the download
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    finally:
        mp.undo()
    return model.eval()


@pytest.fixture(scope="module")
def pytorch_fid_features(case, pytorch_fid_model):
    """pytorch-fid's pool3 features for ``case``'s images."""
    return _torch_features(pytorch_fid_model, case[1])


def test_reference_matches_pytorch_fid(case, pytorch_fid_features):
    """The same operations in the same order: bit for bit the same features."""
    shape, _, want = case
    print(f"max relative error fid_reference vs pytorch-fid {shape}: {_max_rel(want, pytorch_fid_features):.2e}")
    np.testing.assert_array_equal(want, pytorch_fid_features)


def test_features_match_pytorch_fid(case, jot_net, pytorch_fid_features):
    shape, x01, _ = case
    rel = _max_rel(fidlib.features(2 * x01 - 1, jot_net, batch_size=2), pytorch_fid_features)
    print(f"max relative error jot vs pytorch-fid {shape}: {rel:.2e}")
    assert rel <= 1e-4, rel


def test_fid_class_on_images(reference, monkeypatch):
    """``FID`` wires features, ``fid`` and ``kid`` together. ``fid`` itself is replaced by a recorder:
    ``sqrtm`` of a 2048 x 2048 product takes most of a minute on two cores (the formula is tested below)."""
    _, _, dst = reference
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-1, 1, (3, 40, 40, 3)), rng.uniform(-1, 1, (2, 40, 40, 3)) * 0.5
    metric = fidlib.FID(dst, batch_size=2, kid_subsets=3)
    calls = []
    monkeypatch.setattr(fidlib, "fid", lambda fa, fb: calls.append((fa, fb)) or 1.5)
    out = metric(a, b)
    fa, fb = metric.features(a), metric.features(b)
    assert out["fid"] == 1.5 and len(calls) == 1
    np.testing.assert_array_equal(calls[0][0], fa)
    np.testing.assert_array_equal(calls[0][1], fb)
    assert (out["kid"], out["kid_std"]) == pytest.approx(fidlib.kid(fa, fb, subsets=3), rel=1e-12)
    assert np.isfinite(out["kid"]) and out["kid_std"] >= 0


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (128, 128), (299, 299), (300, 299), (512, 512)])
def test_resize_matches_torch_bilinear(size):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, *size, 3)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(299, 299),
                                           mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(fidlib.resize_bilinear(x, 299, 299))
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_preprocess_grey_and_value_range():
    rng = np.random.default_rng(0)
    grey = rng.uniform(-1, 1, (2, 299, 299, 1)).astype(np.float32)
    out = np.asarray(fidlib.preprocess(grey))
    assert out.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(out, np.repeat(grey, 3, -1), atol=1e-6)  # already 299: no resize
    np.testing.assert_allclose(np.asarray(fidlib.preprocess(grey * 127.5 + 127.5, value_range=(0, 255))), out,
                               atol=1e-5)


# --------------------------------------------------------------------------- Frechet and KID


def _gaussian_stats(rng, d, n):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + rng.normal(size=d)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _frechet_eigh(mu1, s1, mu2, s2):
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1^1/2 S2 S1^1/2), from symmetric eigendecompositions
    only (S1 S2 is similar to the symmetric S1^1/2 S2 S1^1/2, so their square roots have the same trace)."""
    w, v = scipy.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sum(np.sqrt(np.clip(scipy.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    for d in (1, 2, 5, 64):
        mu1, s1 = _gaussian_stats(rng, d, 4 * d + 10)
        mu2, s2 = _gaussian_stats(rng, d, 4 * d + 10)
        r1 = scipy.linalg.sqrtm(s1)
        want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1)))
        got = fidlib.frechet_distance(mu1, s1, mu2, s2)
        assert got == pytest.approx(want, rel=1e-8, abs=1e-10)
        assert got == pytest.approx(_frechet_eigh(mu1, s1, mu2, s2), rel=1e-8, abs=1e-10)
    assert fidlib.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="different sizes"):
        fidlib.frechet_distance(mu1, s1, mu1[:3], s1[:3, :3])


def _singular_case():
    """Covariances of 3 samples in 10 dimensions: rank 2, so the product is singular."""
    rng = np.random.default_rng(1)
    return rng.normal(size=(3, 10)), rng.normal(size=(3, 10)) + 1


def test_frechet_distance_singular_product_and_fid_of_features():
    a, b = _singular_case()
    with np.errstate(all="ignore"):
        got = fidlib.fid(a, b)
    want = _frechet_eigh(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isfinite(got) and got == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="N >= 2"):
        fidlib.fid(a[:1], b)


def test_frechet_distance_matches_pytorch_fid(pfi):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    for d in (2, 5, 64):  # scipy >= 1.16 returns a 1 x 1 sqrtm(disp=False) without the error pytorch-fid unpacks
        mu1, s1 = _gaussian_stats(rng, d, 4 * d + 10)
        mu2, s2 = _gaussian_stats(rng, d, 4 * d + 10)
        assert fidlib.frechet_distance(mu1, s1, mu2, s2) == \
            pytest.approx(calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-10, abs=1e-12)
    a, b = _singular_case()
    with np.errstate(all="ignore"):
        got = fidlib.fid(a, b)
        want = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert got == pytest.approx(want, rel=1e-6)


def _mmd2_unbiased(x, y):
    """The unbiased MMD^2 estimate with k(u, v) = (u.v / d + 1)^3, written out pair by pair."""
    m, d = len(x), x.shape[1]

    def k(u, v):
        return (u @ v / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 8)), rng.normal(size=(25, 8)) * 1.3 + 0.2
    mean, std = fidlib.kid(a, b, subsets=4, subset_size=12, seed=7)
    pick = np.random.RandomState(7)
    mmds = []
    for _ in range(4):
        x = a[pick.choice(30, 12, replace=False)]
        y = b[pick.choice(25, 12, replace=False)]
        mmds.append(_mmd2_unbiased(x, y))
    assert (mean, std) == pytest.approx((np.mean(mmds), np.std(mmds)), rel=1e-10)
    # The subset size is capped at the smaller set; one subset of everything has std 0.
    whole, zero = fidlib.kid(a[:10], b[:10], subsets=1, subset_size=1000)
    assert whole == pytest.approx(_mmd2_unbiased(a[:10], b[:10]), rel=1e-10) and zero == 0
    # Unbiased: same-distribution sets give values around 0, shifted ones clearly above.
    same = fidlib.kid(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), subsets=20, subset_size=50)[0]
    shifted = fidlib.kid(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1, subsets=20, subset_size=50)[0]
    assert abs(same) < 0.1 * shifted


# --------------------------------------------------------------------------- errors


def test_missing_weights_name_the_file_and_the_fix(tmp_path):
    path = str(tmp_path / "nowhere" / "inception_fid.safetensors")
    with pytest.raises(UserFileNotFoundError) as err:
        fidlib.load_inception(path)
    msg = str(err.value)
    assert path in msg and fidlib.TORCH_WEIGHTS in msg and "pytorch-fid" in msg
    assert f"python -m jot.metrics.fid convert --src {fidlib.TORCH_WEIGHTS} --dst {path}" in msg
    assert isinstance(err.value, UserError) and isinstance(err.value, FileNotFoundError)


def test_converter_refuses_files_that_are_not_the_fid_state_dict(tmp_path, capsys):
    dst = str(tmp_path / "out.safetensors")
    wrong_keys = str(tmp_path / "other.pth")
    torch.save({"conv.weight": torch.zeros(8, 3, 3, 3), "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)},
               wrong_keys)
    with pytest.raises(UserError, match="not a state dict of pytorch-fid's FID InceptionV3") as err:
        fidlib.convert(wrong_keys, dst)
    msg = str(err.value)
    assert "unexpected tensor 'conv.weight'" in msg and "(32, 3, 5, 5)" in msg and "missing tensor" in msg
    not_a_dict = str(tmp_path / "list.pth")
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(UserError, match="not a state dict"):
        fidlib.convert(not_a_dict, dst)
    garbage = str(tmp_path / "garbage.pth")
    with open(garbage, "wb") as f:
        f.write(b"not a torch file")
    with pytest.raises(UserError, match=r"weights_only=True"):
        fidlib.convert(garbage, dst)
    with pytest.raises(UserFileNotFoundError, match="pytorch-fid"):
        fidlib.convert(str(tmp_path / "absent.pth"), dst)
    assert not os.path.exists(dst) and fidlib.main(["convert", "--src", not_a_dict, "--dst", dst]) == 2
    assert "not a state dict" in capsys.readouterr().err
    with pytest.raises(UserError, match="safetensors only"):
        fidlib.load_inception(not_a_dict)
