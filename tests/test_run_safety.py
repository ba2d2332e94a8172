"""Run safety: workdir lock, config record checks, clean CLI errors, signal stops,
metrics trimming, file modes, data validation, and nothing created outside the workdir."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import diotm_2d
from jot import data, files
from jot.errors import UserError
from jot.train import loop, records
from jot.train import workdir as workdir_lib
from datasets_for_tests import InterruptAt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CLI runs: one CPU device (fast steps) and the tests' compilation cache (conftest.py).
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
       "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}


def _config(**train):
    c = diotm_2d.get_config("test")
    for k, v in train.items():
        c.train[k] = v
    return c


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "launch.main", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=timeout,
    )


def _steps(workdir):
    return [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _params(state):
    return jax.tree.leaves(jax.device_get(state.params))


# 9. workdir lock


def test_second_process_on_a_locked_workdir_exits_at_once_naming_the_holder(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    with workdir_lib.lock(workdir):
        start = time.perf_counter()
        out = _cli("--config=configs/diotm_2d.py:test", f"--workdir={workdir}")
        elapsed = time.perf_counter() - start
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"workdir {workdir!r} is in use by pid {os.getpid()} on host" in out.stderr
    assert "another --workdir" in out.stderr
    assert elapsed < 60
    assert sorted(os.listdir(workdir)) == [".lock"]  # nothing trained, nothing written


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    workdir = str(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from jot.train import workdir as w\n"
         "with w.lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)", workdir],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(workdir_lib.WorkdirLocked, match=f"pid {holder.pid} on host"):
            loop.train(_config(), workdir)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    assert "pid" in open(os.path.join(workdir, ".lock")).read()  # the stale record is still there
    state = loop.train(_config(), workdir)
    assert int(state.step) == 20
    with workdir_lib.lock(workdir):  # evaluate writes into the workdir too: refused while it is held
        with pytest.raises(workdir_lib.WorkdirLocked, match=f"pid {os.getpid()} on host"):
            loop.evaluate(_config(), workdir)


# 10. the config record


def test_resume_with_a_result_changing_config_is_refused_with_the_fields(tmp_path):
    workdir = str(tmp_path)
    loop.train(_config(), workdir)
    before = {f: open(os.path.join(workdir, f)).read() for f in ("config.json", "metrics.jsonl", "metrics.json")}
    c = _config(lr_map=5e-4)
    c.seed = 1
    with pytest.raises(UserError) as e:
        loop.train(c, workdir)
    message = str(e.value)
    assert os.path.join(workdir, "config.json") in message
    assert "  seed: 0 -> 1\n" in message and "  train.lr_map: 0.001 -> 0.0005\n" in message
    assert "new --workdir" in message and "saved config" in message
    after = {f: open(os.path.join(workdir, f)).read() for f in before}
    assert after == before

    out = _cli("--config=configs/diotm_2d.py:test", f"--workdir={workdir}", "--config.seed=1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "seed: 0 -> 1" in out.stderr


def test_config_changes_ignore_neutral_fields_and_allow_extending_constant_runs():
    saved = _config()
    same = _config(progress=True, log_every=7, checkpoint_every=3, keep_checkpoints=5, eval_every=2)
    same.eval.paths = 3
    same.mesh.data = 2
    assert records.config_changes(saved, same) == []

    cosine_longer = _config(steps=40)
    [change] = records.config_changes(saved, cosine_longer)
    assert (change.field, change.old, change.new) == ("train.steps", 20, 40)
    assert "cosine" in str(change) and "constant" in str(change)

    constant = _config(lr_schedule="constant")
    assert records.config_changes(constant, _config(lr_schedule="constant", steps=40)) == []
    [shorter] = records.config_changes(constant, _config(lr_schedule="constant", steps=10))
    assert "not shortened" in str(shorter)
    assert [c.field for c in records.config_changes(constant, _config(lr_schedule="constant", steps=40),
                                                    extending=False)] == ["train.steps"]

    other = _config(batch_size=32, b1=0.5)
    other.method, other.model.width, other.loss.tau = "otm", 16, 0.2
    other.data.target_mean = (1.0, 1.0)
    fields = [c.field for c in records.config_changes(saved, other)]
    assert fields == ["data.target_mean", "loss.tau", "method", "model.width", "train.b1", "train.batch_size"]
    assert str(records.config_changes(saved, other)[0]) == "data.target_mean: [4.0, 4.0] -> [1.0, 1.0]"


def test_constant_schedule_run_can_be_extended(tmp_path):
    c = _config(lr_schedule="constant")
    loop.train(c, str(tmp_path))
    state = loop.train(_config(lr_schedule="constant", steps=30), str(tmp_path))
    assert int(state.step) == 30
    assert _steps(tmp_path) == [5, 10, 15, 20, 25, 30]
    assert json.load(open(tmp_path / "config.json"))["train"]["steps"] == 30


def test_evaluate_uses_the_saved_config_and_warns_about_ignored_fields(tmp_path, capsys):
    workdir = str(tmp_path)
    loop.train(_config(), workdir)
    trained = json.load(open(tmp_path / "metrics.json"))
    capsys.readouterr()
    other = _config()
    other.data.target_mean = (-3.0, 0.0)
    other.eval.paths = 5
    metrics = loop.evaluate(other, workdir)
    err = capsys.readouterr().err
    assert metrics["w2"] == trained["w2"]
    assert json.load(open(tmp_path / "metrics.json"))["w2"] == trained["w2"]
    assert err.startswith("warning: evaluating with the config recorded in")
    assert "data.target_mean: [4.0, 4.0] -> [-3.0, 0.0]" in err and "eval.paths" not in err


# 11. clean errors


def test_cli_bad_flag_value_is_one_message_without_traceback(tmp_path):
    out = _cli("--config=configs/diotm_2d.py:test", f"--workdir={tmp_path}", "--config.train.steps=abc")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: flag --config.train.steps=abc")
    assert "type int" in lines[0]


def test_config_ranges_are_checked_before_anything_is_written(tmp_path):
    c = _config(keep_checkpoints=0, ema=1.0, batch_size=0, steps=-1, log_every=0, checkpoint_every=0,
                eval_every=-1, lr_map=0.0, grad_clip=-1.0, lr_schedule="linear", lr_final_fraction=1.5)
    with pytest.raises(UserError) as e:
        loop.train(c, str(tmp_path / "w"))
    message = str(e.value)
    for field in ("keep_checkpoints=0", "ema=1.0", "batch_size=0", "steps=-1", "log_every=0", "checkpoint_every=0",
                  "eval_every=-1", "lr_map=0.0", "grad_clip=-1.0", "lr_schedule='linear'", "lr_final_fraction=1.5"):
        assert f"config.train.{field}: expected" in message, field
    assert "lr_potential" not in message
    assert not os.path.exists(tmp_path / "w")


def test_cli_unwritable_workdir_is_one_message(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = _cli("--config=configs/diotm_2d.py:test", f"--workdir={tmp_path}/file/run")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: cannot write to workdir '{tmp_path}/file/run'")


def test_damaged_latest_checkpoint_names_the_older_steps_and_the_fallback_works(tmp_path):
    workdir = str(tmp_path)
    c = _config()
    full = loop.train(c, workdir)
    for root, _, names in os.walk(tmp_path / "checkpoints" / "20"):
        for f in names if os.path.basename(root) == "d" else ():  # the array data files
            path = os.path.join(root, f)
            os.truncate(path, os.path.getsize(path) // 2)
    bad = os.path.join(workdir, "checkpoints", "20")
    with pytest.raises(UserError) as e:
        loop.evaluate(c, workdir)
    message = str(e.value)
    assert message.startswith(f"cannot read checkpoint {bad} (")
    assert "Older checkpoints: step 10. To resume from step 10" in message
    assert f"mv {bad} {workdir}/damaged-checkpoint-20" in message
    out = _cli("--config=configs/diotm_2d.py:test", f"--workdir={workdir}", "--mode=evaluate")
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: cannot read checkpoint {bad} (") and "Traceback" not in out.stderr
    os.rename(bad, os.path.join(workdir, "damaged-checkpoint-20"))
    resumed = loop.train(c, workdir)
    assert int(resumed.step) == 20
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert _steps(workdir) == [5, 10, 15, 20]


def test_checkpoint_of_another_model_shape_is_a_clean_error(tmp_path, capsys):
    workdir = str(tmp_path)
    loop.train(_config(), workdir)
    os.remove(tmp_path / "config.json")
    c = _config()
    c.model.width = 48
    with pytest.raises(UserError, match=r"was written by a different model: array .* has shape \(.*32.*\) there but "
                                        r"\(.*48.*\) in this config's model"):
        loop.evaluate(c, workdir)
    assert "has no config.json" in capsys.readouterr().err


# 12. SIGINT / SIGTERM


class _SignalAt:
    """Wraps a dataset and sends ``sig`` to this process when batch index ``at`` is drawn."""

    def __init__(self, inner, at, sig):
        self.inner, self.at, self.sig, self.sent = inner, at, sig, False

    def train_batch(self, step):
        if step >= self.at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.sig)
        return self.inner.train_batch(step)

    def eval_data(self):
        return self.inner.eval_data()


def test_sigint_saves_the_current_step_and_resume_matches_an_uninterrupted_run(tmp_path):
    c = _config(checkpoint_every=10)
    full = loop.train(c, str(tmp_path / "full"))
    workdir = str(tmp_path / "cut")
    k = loop.batch_counts(loop.methods.get(c.method), c)["x"]
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(loop.Interrupted) as e:
        loop.train(c, workdir, dataset=_SignalAt(data.build(c), at=13 * k, sig=signal.SIGINT))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert e.value.step == 14 and e.value.exit_code == 130
    assert str(e.value) == (f"interrupted at step 14; checkpoint saved in {tmp_path}/cut/checkpoints/14; "
                            "re-run the same command to resume")
    assert sorted(os.listdir(tmp_path / "cut" / "checkpoints"), key=int) == ["10", "14"]
    resumed = loop.train(c, workdir)
    assert int(resumed.step) == 20
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_array_equal(a, b)


def test_cli_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tmp_path):
    workdir = str(tmp_path)
    args = ["--config=configs/diotm_2d.py:test", f"--workdir={workdir}", "--config.train.steps=1000",
            "--config.train.log_every=10", "--config.train.checkpoint_every=100000"]
    proc = subprocess.Popen([sys.executable, "-m", "launch.main", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    step = int(last.split()[3].rstrip(";"))
    assert last == (f"interrupted at step {step}; checkpoint saved in {workdir}/checkpoints/{step}; "
                    "re-run the same command to resume")
    assert "Traceback" not in stderr
    assert 10 <= step < 1000
    assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(step)]

    out = _cli(*args)
    assert out.returncode == 0, out.stderr
    assert json.load(open(os.path.join(workdir, "metrics.json")))["step"] == 1000
    steps = _steps(workdir)
    assert steps == sorted(set(steps)) and steps[-1] == 1000


# 13. metrics.jsonl and file modes


def test_resume_trims_metrics_to_the_restored_step(tmp_path):
    c = _config()
    k = loop.batch_counts(loop.methods.get(c.method), c)["x"]
    with pytest.raises(KeyboardInterrupt):
        loop.train(c, str(tmp_path), dataset=InterruptAt(data.build(c), at=17 * k))
    assert _steps(tmp_path) == [5, 10, 15]  # logged step 15, last checkpoint at 10
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 16, "loss": 0.')  # a crash in the middle of a write
    loop.train(c, str(tmp_path))
    text = open(tmp_path / "metrics.jsonl").read()
    assert text.endswith("\n")
    assert _steps(tmp_path) == [5, 10, 15, 20]


def test_append_jsonl_never_glues_onto_a_partial_line(tmp_path):
    path = str(tmp_path / "m.jsonl")
    files.append_jsonl(path, {"step": 1})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')
    files.append_jsonl(path, {"step": 3})
    assert open(path).read() == '{"step": 1}\n{"step": 3}\n'
    open(path, "w").write('{"step": 9')
    files.append_jsonl(path, {"step": 4})
    assert open(path).read() == '{"step": 4}\n'
    assert files.trim_jsonl(path, 3) == 1 and open(path).read() == ""


def test_output_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        loop.train(_config(steps=5, checkpoint_every=5), str(tmp_path))
        files.write_json(str(tmp_path / "a.json"), {"a": 1})
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.json", "metrics.jsonl", "transport.png", "transport.npz", "a.json"):
        assert oct(os.stat(tmp_path / name).st_mode & 0o777) == oct(0o644), name
    old = os.umask(0o077)
    try:
        files.write_bytes(str(tmp_path / "private"), b"x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "private").st_mode & 0o777 == 0o600


# 14. data given to a dataset that does not read it


def test_source_for_a_dataset_that_does_not_read_it_is_an_error(tmp_path):
    c = diotm_2d.get_config("g8g")
    c.data.source = f"npz:{tmp_path}/mine.npz"
    with pytest.raises(UserError, match=r"config.data.source='npz:.*mine.npz' is set, but dataset "
                                        r"config.data.name='g8g' does not read it .*--config.data.name=points"):
        data.build(c)
    out = _cli("--config=configs/diotm_2d.py:g8g", f"--workdir={tmp_path}/w", f"--config.data.target={tmp_path}/imgs")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "config.data.target=" in out.stderr and "--config.data.name=folder" in out.stderr


# 15. nothing created outside the workdir


def test_evaluate_on_a_mistyped_workdir_creates_nothing(tmp_path):
    typo = tmp_path / "runz" / "diotm"
    with pytest.raises(FileNotFoundError, match=f"no run at '{typo}'"):
        loop.evaluate(_config(), str(typo))
    assert not os.path.exists(tmp_path / "runz")
    with pytest.raises(workdir_lib.NoRun, match=f"no run at '{typo}'"):
        loop.restore(str(typo))  # what --mode=translate calls to read a model
    assert not os.path.exists(tmp_path / "runz")
    out = _cli("--config=configs/diotm_2d.py:test", f"--workdir={typo}", "--mode=evaluate")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: no run at '{typo}'")
    assert not os.path.exists(tmp_path / "runz")
    out = _cli("--config=configs/translate_digits.py:test", f"--workdir={typo}", "--mode=translate")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"error: no checkpoint in {typo}/checkpoints; train a dsm model first")
    assert not os.path.exists(tmp_path / "runz")


def test_sd_index_may_not_point_outside_the_model_folder(tmp_path):
    from jot.models.sd import convert

    unet = tmp_path / "model" / "unet"
    unet.mkdir(parents=True)
    (tmp_path / "model" / "x.safetensors").write_bytes(b"")
    index = unet / "diffusion_pytorch_model.safetensors.index.json"
    for shard in ("../x.safetensors", str(tmp_path / "model" / "x.safetensors"), "a/../../x.safetensors"):
        index.write_text(json.dumps({"weight_map": {"conv_in.weight": shard}}))
        with pytest.raises(UserError, match=f"points to shard '{shard}' outside {unet}"):
            convert.find_weights(unet, "diffusion_pytorch_model")
    index.write_text("{not json")
    with pytest.raises(UserError, match="is not a safetensors index"):
        convert.find_weights(unet, "diffusion_pytorch_model")
    (unet / "ok.safetensors").write_bytes(b"")
    index.write_text(json.dumps({"weight_map": {"conv_in.weight": "ok.safetensors"}}))
    assert convert.find_weights(unet, "diffusion_pytorch_model") == [unet / "ok.safetensors"]
