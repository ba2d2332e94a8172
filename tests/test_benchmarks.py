"""The 2D benchmark's protocol (hyperparameters chosen on seed 0 only) and self-contained docs."""
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}


def _bench(*args):
    return subprocess.run([sys.executable, "benchmarks/toy_2d.py", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_tables_refuse_the_validation_seed():
    out = _bench("--seeds", "0,1", "--steps", "1")
    assert out.returncode == 2
    assert "seed 0 is the validation seed; report on other seeds" in out.stderr


def test_validate_runs_on_seed_0_only_and_names_the_choice(tmp_path):
    path = tmp_path / "v.json"
    out = _bench("--validate", "train.lr_schedule=constant,cosine", "--methods", "diotm", "--datasets", "g8g",
                 "--steps", "3", "--out", str(path))
    assert out.returncode == 0, out.stderr
    rows = json.load(open(path))["rows"]
    assert [r["seed"] for r in rows] == [0, 0]
    assert [r["overrides"]["train.lr_schedule"] for r in rows] == ["constant", "cosine"]
    assert re.search(r"chosen: (constant|cosine)", out.stdout)


def test_library_docs_name_no_files_outside_the_repository():
    """Docstrings and comments cite papers and equations, never paths outside the project."""
    pattern = re.compile(r"ALGORITHMS\.md|DESIGN\.md|papers/|\.\./shared")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for folder in ("jot", "configs", "launch", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, offenders
