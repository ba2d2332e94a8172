"""The colab notebooks run top to bottom (tiny preset) and print the metrics they promise."""
import math
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _execute(name: str, monkeypatch) -> tuple[str, list]:
    """Runs ``colab/<name>`` with the tiny preset; returns its printed text and its image outputs."""
    monkeypatch.setenv("JOT_NOTEBOOK_PRESET", "test")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device inside the kernel
    nb = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.path.join(ROOT, "colab")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    return text, images


@pytest.mark.slow
def test_diotm_notebook_runs(monkeypatch):
    text, images = _execute("diotm_2d.ipynb", monkeypatch)
    assert "W2^2(T#mu, nu) = " in text and "L2 to discrete OT = " in text
    assert "restored step 20; T(x) for 5 new source points:" in text  # the test preset trains 20 steps
    assert images, "the last cell shows transport.png"


@pytest.mark.slow
def test_digits_translation_notebook_runs(monkeypatch):
    text, images = _execute("digits_translation.ipynb", monkeypatch)
    for run, steps in (("diotm", 4), ("otm", 4), ("dsm", 4), ("rdmd", 2)):  # the test presets' steps
        assert f"{run}: trained {steps} steps in " in text
    assert "thin -> thick, 361 test digits (16x16), preset test" in text
    rows = {m[0]: (int(m[1]), float(m[2]), float(m[3]))
            for m in re.findall(r"^\| (\S+) +\| +(\d+) \| +(\S+) \| +(\S+) \|$", text, re.MULTILINE)}
    methods = {"DIOTM": 1, "OTM": 1, "SDEdit": 4, "DDIB": 4, "OT-ALD": 4, "LSB": 4, "RDMD": 1}  # name: NFE
    assert set(rows) == {"source", *methods}, rows
    for name, nfe in methods.items():
        got_nfe, psnr, fd = rows[name]
        assert got_nfe == nfe and math.isfinite(psnr) and psnr > 0 and math.isfinite(fd) and fd >= 0, (name, rows[name])
    for name in ("SDEdit", "OT-ALD", "LSB"):  # stochastic or mapped latents: never the identity, even untrained
        assert abs(rows[name][1] - rows["source"][1]) > 0.05, (name, rows)
    assert images, "the side-by-side figure (source, every method, thick twin)"


@pytest.mark.slow
def test_sd_lsb_notebook_runs(monkeypatch):
    text, images = _execute("sd_lsb.ipynb", monkeypatch)
    assert "folders: ['model_index.json', 'scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']" in text
    assert "4 input images, shape (4, 32, 32, 3)" in text
    assert "LSB output shape (4, 32, 32, 3), dtype float32" in text
    for method in ("lsb", "sdedit", "ddib"):
        assert re.search(rf"^{method} +guidance 11, 8 UNet calls per image: first call .* images \(\d+ ms per image\)$",
                         text, re.MULTILINE), method
        change = re.search(rf"^{method} +finite: True; mean \|output - input\| = (\S+)$", text, re.MULTILINE)
        assert change and float(change[1]) > 0.05, method  # finite, and not the input handed back
    assert images, "inputs above each method's outputs"
