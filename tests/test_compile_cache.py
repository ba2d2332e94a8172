"""launch.main's persistent compilation cache: on by default next to the workdir, reused by the
next run, configurable, and never fatal."""
import os
import subprocess
import sys

from launch import main as launch_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    """One CPU device, JAX's compiler log on stderr, and no cache directory inherited from the
    environment: each test's runs share only the cache they create."""
    drop = ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_DEBUG_LOG_MODULES="jax._src.compiler",
               **extra)
    return env


def _train(workdir, *flags):
    return subprocess.run(
        [sys.executable, "-m", "launch.main", "--config=configs/diotm_2d.py:test", f"--workdir={workdir}",
         "--config.train.steps=2", "--config.train.log_every=1", "--config.train.checkpoint_every=2", *flags],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )


def test_second_run_next_to_the_first_compiles_its_train_step_from_the_cache(tmp_path):
    first = _train(tmp_path / "a")
    assert first.returncode == 0, first.stderr
    cache = tmp_path / launch_main.CACHE_DIR_NAME
    entries = os.listdir(cache)
    assert any(name.startswith("jit_run-") for name in entries), entries  # the train step's program
    assert "PERSISTENT COMPILATION CACHE MISS for 'jit_run'" in first.stderr

    second = _train(tmp_path / "b")
    assert second.returncode == 0, second.stderr
    assert "Persistent compilation cache hit for 'jit_run'" in second.stderr
    assert "CACHE MISS for 'jit_run'" not in second.stderr
    for workdir in ("a", "b"):  # the workdirs hold only the run's own files
        assert sorted(os.listdir(tmp_path / workdir)) == [".lock",
            "checkpoints", "config.json", "metrics.json", "metrics.jsonl", "transport.npz", "transport.png"]


def test_cache_directory_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    workdir = str(tmp_path / "runs" / "x")
    choose = launch_main.compilation_cache_dir
    assert choose(None, workdir) == str(tmp_path / "runs" / ".jax_cache")
    assert choose("off", workdir) is None and choose("OFF", workdir) is None
    assert choose(str(tmp_path / "c"), workdir) == str(tmp_path / "c")
    # evaluate / translate of a path whose parent does not exist: no cache, nothing created
    assert choose(None, workdir, "evaluate") is None and choose(None, workdir, "translate") is None
    os.makedirs(tmp_path / "runs")
    assert choose(None, workdir, "evaluate") == str(tmp_path / "runs" / ".jax_cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert choose(None, workdir) == str(tmp_path / "env")
    assert choose(str(tmp_path / "c"), workdir) == str(tmp_path / "c")  # the flag wins


def test_unwritable_cache_directory_warns_once_and_runs_without_it(tmp_path, monkeypatch, capsys):
    import jax

    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.__setitem__(name, value))
    (tmp_path / "file").write_text("not a folder")
    assert launch_main.enable_compilation_cache(str(tmp_path / "file" / "cache"), str(tmp_path / "w")) is None
    err = capsys.readouterr().err
    assert err.count("warning: cannot write the compilation cache directory") == 1
    assert updates == {"jax_enable_compilation_cache": False}
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert launch_main.enable_compilation_cache(str(locked / "cache"), str(tmp_path / "w")) is None
    updates.clear()
    assert launch_main.enable_compilation_cache("off", str(tmp_path / "w")) is None
    assert updates == {"jax_enable_compilation_cache": False} and capsys.readouterr().err == ""
    updates.clear()
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    path = launch_main.enable_compilation_cache(None, str(tmp_path / "w"))
    assert path == str(tmp_path / ".jax_cache") and not os.path.exists(path)  # JAX creates it when it writes
    assert updates == {"jax_enable_compilation_cache": True, "jax_compilation_cache_dir": path,
                       "jax_persistent_cache_min_compile_time_secs": launch_main.CACHE_MIN_COMPILE_SECS}
