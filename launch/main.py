"""jot's entry point: train, evaluate or translate with any config.

    python -m launch.main --config=configs/diotm_2d.py:g8g --workdir=runs/diotm_g8g
    python -m launch.main --config=configs/diotm_2d.py:g8g --workdir=runs/diotm_g8g --mode=evaluate
    python -m launch.main --config=configs/diotm_2d.py:g25g --workdir=runs/x --config.train.steps=5000

Every config field can be overridden with ``--config.FIELD=VALUE``. Training resumes from
the workdir's latest checkpoint. The same ``run`` function is what notebooks and tests call.

Multi-process runs start the same command on every process. Under SLURM (``srun``), Open MPI
(``mpirun``) or on a TPU pod slice the processes find each other from the environment
(``launch/slurm.sbatch``, ``launch/tpu_pod.sh``); elsewhere pass
``--coordinator_address=HOST0:PORT --num_processes=N --process_id=I``. Process 0 writes the
workdir's files and shows progress; every process writes its part of the checkpoints.

Compiled programs are kept in XLA's persistent compilation cache, by default
``<parent of --workdir>/.jax_cache`` (shared by the runs next to each other, never inside a
workdir), so a second run of the same job skips compilation. ``--compilation_cache=DIR``
picks another directory and ``--compilation_cache=off`` turns it off; without the flag, a
``JAX_COMPILATION_CACHE_DIR`` set in the environment is used instead of the default. An
unwritable cache directory is a warning, not an error. Evaluate and translate runs use the
default cache only when the workdir's parent exists, so a mistyped path creates nothing.

Exit status: 0 on success; 2 for a user error (a bad flag or config value, a config that
differs from the workdir's ``config.json``, a locked, missing or unwritable workdir, an
unreadable checkpoint or input file: one ``error: ...`` message on stderr naming the
value and the fix, no traceback); 128 + the signal (130 for SIGINT, 143 for SIGTERM) when
training was interrupted after saving a checkpoint; 1 with a traceback for anything else,
which is a bug.
"""
import importlib.util
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file and preset: path/to/config.py:preset.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "translate"], "What to run.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process runs without a cluster launcher: host:port of process 0 "
    "(with --num_processes and --process_id). SLURM, Open MPI and TPU pods are detected without flags.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "XLA's persistent compilation cache: a directory, or 'off'. Default: "
    "<parent of --workdir>/.jax_cache (or $JAX_COMPILATION_CACHE_DIR when set).")
flags.mark_flags_as_required(["config", "workdir"])

CACHE_DIR_NAME = ".jax_cache"
# Cache every compiled program: the 2D jobs' CPU programs compile in well under JAX's default
# threshold of 1 s, and reading an entry back costs less than compiling it.
CACHE_MIN_COMPILE_SECS = 0.0


def _writable_dir(path: str) -> bool:
    """Whether ``path`` is, or could be created as, a directory this process can write."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    return os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)


def compilation_cache_dir(setting: str | None, workdir: str, mode: str = "train") -> str | None:
    """The persistent compilation cache directory a run uses, or None for none (see the module
    docstring): ``setting`` is the ``--compilation_cache`` flag."""
    if setting is not None and setting.strip().lower() == "off":
        return None
    if setting:
        return os.path.abspath(os.path.expanduser(setting))
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.path.abspath(os.environ["JAX_COMPILATION_CACHE_DIR"])
    parent = os.path.dirname(os.path.abspath(workdir))
    if mode != "train" and not os.path.isdir(parent):
        return None
    return os.path.join(parent, CACHE_DIR_NAME)


def enable_compilation_cache(setting: str | None, workdir: str, mode: str = "train") -> str | None:
    """Points JAX's persistent compilation cache at ``compilation_cache_dir(...)`` (created by
    JAX at the first compilation) and returns it; turns the cache off and prints one warning
    when that directory cannot be written. Call before anything is compiled."""
    import jax

    path = compilation_cache_dir(setting, workdir, mode)
    if path is not None and not _writable_dir(path):
        print(f"warning: cannot write the compilation cache directory {path}; compiling without it "
              "(set --compilation_cache=DIR to another directory, or --compilation_cache=off).",
              file=sys.stderr, flush=True)
        path = None
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECS)
    return path


def run(config, workdir: str, mode: str = "train") -> dict:
    """Runs ``mode`` for ``config`` in ``workdir`` and returns the final metrics."""
    if mode == "train":
        from jot.train import loop

        loop.train(config, workdir)
        path = os.path.join(workdir, "metrics.json")
        return json.load(open(path)) if os.path.exists(path) else {}
    if mode == "evaluate":
        from jot.train import loop

        return loop.evaluate(config, workdir)
    if mode == "translate":
        from jot import translate

        return translate.run(config, workdir)
    raise ValueError(f"unknown mode {mode!r}; expected train, evaluate or translate.")


def print_metrics(metrics: dict, workdir: str) -> None:
    keys = [k for k in metrics if isinstance(metrics[k], (int, float))]
    width = max([len(k) for k in keys] + [6])
    print(f"\n{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for k in sorted(keys):
        v = metrics[k]
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    outputs = [f for f in ("metrics.json", "transport.npz", "transport.png") if os.path.exists(os.path.join(workdir, f))]
    if outputs:
        print(f"\nwrote {', '.join(os.path.join(workdir, f) for f in outputs)}")


def _unknown_override(argv: list[str], config) -> str | None:
    """The first ``--config.a.b=...`` override in ``argv`` that names no field of ``config``."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config."):].split("=", 1)[0].split(".")
        node = config
        for i, part in enumerate(path):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if part not in fields:
                where = "config" + "".join("." + p for p in path[:i])
                return (
                    f"unknown config field '{'.'.join(path)}': {where} has no field {part!r}. "
                    f"Fields of {where}: {', '.join(sorted(fields))}."
                )
            node = node[part]
    return None


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _flag_message(error: Exception) -> str:
    """absl's message for a bad flag, with an embedded traceback cut to its last line."""
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        head = text.split("\n", 1)[0].rstrip(":")
        text = f"{head}: {text.splitlines()[-1].strip()}"
    return text


def _load_config(argv: list[str]):
    """The config named by ``--config=PATH[:PRESET]`` in ``argv``, without overrides (None if absent)."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_arg is None:
        return None
    path, _, preset = config_arg.partition(":")
    spec = importlib.util.spec_from_file_location("_jot_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset or None)


def _expected_type(message: str, argv: list[str]) -> str:
    """``" (config.a.b holds a T, e.g. V)"`` for the ``--config.a.b`` override named in ``message``."""
    name = message.split("=", 1)[0].removeprefix("flag ").removeprefix("--")
    if not name.startswith("config."):
        return ""
    try:
        node = _load_config(argv)
        for part in name.split(".")[1:]:
            node = node[part]
    except Exception:
        return ""
    return f" ({name} takes a value of type {type(node).__name__}, e.g. {node!r})"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one clear message (exit status 2) for misspelt ``--config.*``
    overrides, values of the wrong type, and config files that cannot be loaded."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        message = _flag_message(e).rstrip(".")
        _fail(f"{message}{_expected_type(message, argv)}. Fix the value on the command line.")
    except (AttributeError, KeyError):
        config = _load_config(argv)
        if config is not None:
            message = _unknown_override(argv, config)
            if message:
                _fail(message)
        raise
    try:
        _CONFIG.value.keys()
    except OSError as e:
        config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
        reason = " ".join(line.strip() for line in str(e).splitlines()[-1:])
        _fail(f"cannot load --config={config_arg}: {reason}. Check the path of the config file (relative to "
              "the current directory), e.g. --config=configs/diotm_2d.py:g8g.")
    return rest


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from jot import sharding
    from jot.errors import UserError
    from jot.train.loop import Interrupted

    try:
        # Before anything touches a device or compiles.
        enable_compilation_cache(_COMPILATION_CACHE.value, _WORKDIR.value, _MODE.value)
        sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        metrics = run(_CONFIG.value, _WORKDIR.value, _MODE.value)
    except UserError as e:
        _fail(str(e))
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    if sharding.is_main_process():
        print_metrics(metrics, _WORKDIR.value)


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=parse_flags))
