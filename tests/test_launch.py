"""launch.main end to end: the workdir a user gets, evaluate mode, and CLI errors."""
import json
import os
import subprocess
import sys

import numpy as np

from configs import diotm_2d
from launch import main as launch_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_then_evaluate_writes_the_documented_workdir(tmp_path):
    c = diotm_2d.get_config("test")
    workdir = str(tmp_path)
    metrics = launch_main.run(c, workdir, "train")
    for name in ("config.json", "metrics.jsonl", "metrics.json", "transport.npz", "transport.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    assert os.listdir(os.path.join(workdir, "checkpoints"))
    assert {"w2", "l2_to_ot", "w2_backward"} <= set(metrics)
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["method"] == "diotm" and saved["train"]["steps"] == 20
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [l["step"] for l in lines] == [5, 10, 15, 20]
    with np.load(os.path.join(workdir, "transport.npz")) as f:
        assert set(f.files) == {"x", "Tx", "y", "Sy"} and f["Tx"].shape == (256, 2)
    again = launch_main.run(c, workdir, "evaluate")
    assert again["w2"] == metrics["w2"]
    assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]


def test_cli_rejects_unknown_config_field(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "launch.main", "--config=configs/diotm_2d.py:test", f"--workdir={tmp_path}",
         "--config.train.stpes=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "unknown config field 'train.stpes'" in out.stderr and "steps" in out.stderr
