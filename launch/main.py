"""jot's entry point: train, evaluate or translate with any config.

    python -m launch.main --config=configs/diotm_2d.py:g8g --workdir=runs/diotm_g8g
    python -m launch.main --config=configs/diotm_2d.py:g8g --workdir=runs/diotm_g8g --mode=evaluate
    python -m launch.main --config=configs/diotm_2d.py:g25g --workdir=runs/x --config.train.steps=5000

Every config field can be overridden with ``--config.FIELD=VALUE``. Training resumes from
the workdir's latest checkpoint. The same ``run`` function is what notebooks and tests call.
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
flags.mark_flags_as_required(["config", "workdir"])


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


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with a clear message for misspelt ``--config.*`` overrides."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError):
        config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if config_arg is not None:
            path, _, preset = config_arg.partition(":")
            spec = importlib.util.spec_from_file_location("_jot_config", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            message = _unknown_override(argv, module.get_config(preset or None))
            if message:
                print(f"error: {message}", file=sys.stderr)
                sys.exit(2)
        raise


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    metrics = run(_CONFIG.value, _WORKDIR.value, _MODE.value)
    print_metrics(metrics, _WORKDIR.value)


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=parse_flags))
