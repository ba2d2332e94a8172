"""The colab notebooks run top to bottom (tiny preset) and print the metrics they promise."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_diotm_notebook_runs(monkeypatch):
    monkeypatch.setenv("JOT_NOTEBOOK_PRESET", "test")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device inside the kernel
    nb = nbformat.read(os.path.join(ROOT, "colab", "diotm_2d.ipynb"), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.path.join(ROOT, "colab")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "W2^2(T#mu, nu) = " in text and "L2 to discrete OT = " in text
    assert "restored step 20; T(x) for 5 new source points:" in text  # the test preset trains 20 steps
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the last cell shows transport.png"
