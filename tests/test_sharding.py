"""``jot.sharding`` and the sharded loop: the parameter rule, batches over ``("data", "fsdp")``,
an fsdp-sharded train state that gives the same numbers as a replicated one, and a run of 2
processes x 4 CPU devices (gloo) that matches 1 process x 8 devices."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import diotm_2d
from jot import sharding, train
from jot.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The run every comparison uses: the test preset, short, logging every step. Only mesh.* (which
# changes no result) differs between the runs compared.
OVERRIDES = {"train.steps": 6, "train.log_every": 1, "train.checkpoint_every": 3, "train.progress": False}


def _config(**mesh):
    config = diotm_2d.get_config("test")
    for key, value in OVERRIDES.items():
        section, field = key.split(".")
        config[section][field] = value
    config.mesh.update(mesh)
    return config


def _losses(workdir):
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [{k: v for k, v in line.items() if k != "steps_per_sec"} for line in lines]


def _assert_close_runs(a, b, *, rtol, atol):
    la, lb = _losses(a), _losses(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb] == list(range(1, 7))
    for ra, rb in zip(la, lb):
        assert ra.keys() == rb.keys()
        for k in ra:
            np.testing.assert_allclose(rb[k], ra[k], rtol=rtol, atol=atol, err_msg=f"{k} at step {ra['step']}")
    sa, sb = train.restore(a).state, train.restore(b).state
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for x, y in zip(jax.tree.leaves(jax.device_get(sa)), jax.tree.leaves(jax.device_get(sb))):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run on one process with its 8 devices all on ``data`` (the state replicated)."""
    workdir = str(tmp_path_factory.mktemp("data8"))
    train.train(_config(data=8), workdir)
    return workdir


# --------------------------------------------------------------------------- the rule


def test_param_spec_splits_large_arrays_along_their_largest_divisible_dimension():
    assert sharding.param_spec((256, 512), 4, min_size=1024) == P(None, "fsdp")
    assert sharding.param_spec((512, 256), 4, min_size=1024) == P("fsdp")
    assert sharding.param_spec((512, 512), 4, min_size=1024) == P(None, "fsdp")  # ties: the output side
    assert sharding.param_spec((3, 3, 6, 512), 4, min_size=1024) == P(None, None, None, "fsdp")
    assert sharding.param_spec((510, 3), 4, min_size=1024) == P()  # nothing divisible
    assert sharding.param_spec((16, 16), 4, min_size=1024) == P()  # small
    assert sharding.param_spec((), 4, min_size=0) == P()
    assert sharding.param_spec((4096, 4096), 1) == P()  # no fsdp axis


def test_batches_are_split_over_data_and_fsdp():
    mesh = sharding.make_mesh(_config(data=2, fsdp=4))
    assert mesh.shape == {"data": 2, "fsdp": 4}
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    out = sharding.shard_batch(mesh, {"x": x}, batch_axis=0)
    shards = out["x"].addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (2, 3) for s in shards)
    assert sorted(tuple(np.asarray(s.data)[:, 0]) for s in shards) == sorted(tuple(x[i:i + 2, 0]) for i in range(0, 16, 2))
    np.testing.assert_array_equal(np.asarray(out["x"]), x)
    stacked = sharding.shard_batch(mesh, {"s": np.stack([x, x + 1])}, batch_axis=1)["s"]
    assert stacked.sharding.spec == P(None, ("data", "fsdp"), None) and stacked.addressable_shards[0].data.shape == (2, 2, 3)
    with pytest.raises(UserError, match=r"global batch of 12 for 'x' is not divisible by the 8 devices .*"
                                        r"data=2 x fsdp=4.*multiple of 8"):
        sharding.shard_batch(mesh, {"x": x[:12]})


def test_process_slices_of_a_toy_batch_make_the_single_process_batch():
    from jot.data import toy

    config = _config()
    whole = toy.build(config, process_index=0, process_count=1).train_batch(5)
    parts = [toy.build(config, process_index=i, process_count=4).train_batch(5) for i in range(4)]
    for key in ("x", "y"):
        assert all(p[key].shape == (config.train.batch_size // 4, 2) for p in parts)
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    # Drawing one key alone leaves its stream unchanged.
    np.testing.assert_array_equal(toy.build(config, process_index=2, process_count=4).train_batch(5, keys=("y",))["y"],
                                  parts[2]["y"])


def test_mesh_errors_name_the_fix():
    with pytest.raises(UserError, match=r"config.mesh.fsdp=3 must be >= 1 and divide the 8 devices"):
        sharding.make_mesh(_config(fsdp=3))
    with pytest.raises(UserError, match=r"config.mesh.data=4 x fsdp=4 needs 16 devices but 8 are visible"):
        sharding.make_mesh(_config(data=4, fsdp=4))
    with pytest.raises(UserError, match=r"fsdp_min_size=0; expected an integer >= 1"):
        sharding.min_shard_size(_config(fsdp_min_size=0))
    with pytest.raises(UserError, match=r"needs all three"):
        sharding.initialize_distributed("localhost:1234", None, None)
    with pytest.raises(UserError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
        sharding.initialize_distributed("localhost:1234", 2, 2)
    assert sharding.initialize_distributed("localhost:1234", 1, 0) is False  # one process: nothing to join


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "slurm"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # a one-task allocation is a single process
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "openmpi"),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "w0"}, None),
    ({"JOT_DISTRIBUTED": "1"}, "explicit"),
])
def test_cluster_launchers_are_detected_from_the_environment(monkeypatch, env, expected):
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "JOT_DISTRIBUTED",
                 "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert sharding._cluster_detected() == expected


# --------------------------------------------------------------------------- fsdp in training


def test_fsdp_state_is_sharded_and_gives_the_numbers_of_the_replicated_state(reference, tmp_path):
    workdir = str(tmp_path / "fsdp")
    state = train.train(_config(data=2, fsdp=4, fsdp_min_size=512), workdir)
    # The 32 x 32 hidden kernels (>= 512 elements) are split 4 ways over fsdp along their output
    # dimension, and so are their Adam moments and EMA; small arrays and counters are replicated.
    split, whole = [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        (split if leaf.size >= 512 else whole).append((jax.tree_util.keystr(path), leaf))
    assert len(split) >= 3 * 4  # params, two Adam moments and EMA of the maps' hidden kernels (and V's)
    assert any(".ema" in name for name, _ in split) and any(".opt_state" in name for name, _ in split)
    for name, leaf in split:
        assert leaf.shape[-1] % 4 == 0
        assert leaf.sharding.spec == P(*([None] * (leaf.ndim - 1)), "fsdp"), name
        assert {s.data.shape for s in leaf.addressable_shards} == {leaf.shape[:-1] + (leaf.shape[-1] // 4,)}, name
    assert all(leaf.sharding.is_fully_replicated for _, leaf in whole)
    restored = train.restore(workdir).state
    for (name, leaf), again in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(restored)):
        assert again.sharding.is_equivalent_to(leaf.sharding, leaf.ndim), jax.tree_util.keystr(name)
    _assert_close_runs(reference, workdir, rtol=1e-4, atol=1e-5)
    ra, rb = (json.load(open(os.path.join(w, "metrics.json"))) for w in (reference, workdir))
    assert ra.keys() == rb.keys()
    np.testing.assert_allclose([rb[k] for k in ra], [ra[k] for k in ra], rtol=1e-3)


# --------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_four_devices_match_one_process_of_eight(reference, tmp_path):
    workdir = str(tmp_path / "two_processes")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS")}
    env.update(JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    overrides = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "launch.main", "--config=configs/diotm_2d.py:test", f"--workdir={workdir}",
             *overrides, f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-3000:]}"
    # Process 0 alone prints the final table.
    assert "metric" in outputs[0] and "metric" not in outputs[1]
    # The same workdir files, written once (one line per step, no duplicates).
    def listing(w):
        return sorted(os.path.relpath(os.path.join(d, f), w) for d, _, fs in os.walk(w) for f in fs
                      if "checkpoints" not in d) + sorted(os.listdir(os.path.join(w, "checkpoints")))
    assert listing(workdir) == listing(reference)
    assert json.load(open(os.path.join(workdir, "config.json"))) == {
        **json.load(open(os.path.join(reference, "config.json"))),
        "mesh": json.load(open(os.path.join(workdir, "config.json")))["mesh"],
    }
    _assert_close_runs(reference, workdir, rtol=1e-4, atol=1e-5)
