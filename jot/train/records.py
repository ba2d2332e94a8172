"""The workdir's ``config.json`` as the record of a run, and the config checks run before any work.

``config_changes(saved, given)`` is the one comparison of two configs: it lists the fields
whose difference changes the results of a run. Fields that cannot change the numbers are
ignored (``NEUTRAL_FIELDS``: progress bar, logging, checkpoint and evaluation cadence, how
many checkpoints are kept, how many steps one jitted call runs, the attention kernel
(``model.attention_kernel``), ``eval.*``, ``mesh.*``).
``data.sampler`` (host or device random streams) changes the data and is not neutral. ``train.steps`` may be raised to extend
a run whose ``train.lr_schedule`` is ``"constant"``; with ``"cosine"`` the learning rate of
every step depends on ``train.steps``, so any change to it is reported.

``train`` refuses to resume a workdir whose record differs (``check_resume``); ``evaluate``
always evaluates with the record and warns about the given config's differences
(``config_for_evaluate``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import ml_collections

from jot.errors import UserError
from jot.train.workdir import CONFIG_FILE

NEUTRAL_FIELDS = (
    "train.progress",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.eval_every",
    "train.steps_per_call",
    "model.attention_kernel",
    "eval",
    "mesh",
)

_ABSENT = "<absent>"


@dataclasses.dataclass(frozen=True)
class Change:
    """One result-changing difference: ``field`` went from ``old`` to ``new``; ``why`` explains
    a rule beyond "the values differ"."""

    field: str
    old: Any
    new: Any
    why: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: {_show(self.old)} -> {_show(self.new)}"
        return f"{text} ({self.why})" if self.why else text


def _show(v: Any) -> str:
    return v if v is _ABSENT else json.dumps(v)


def _plain(config: ml_collections.ConfigDict | dict) -> dict:
    """The config as JSON types (tuples become lists), as ``config.json`` stores it."""
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _neutral(field: str) -> bool:
    return any(field == n or field.startswith(n + ".") for n in NEUTRAL_FIELDS)


def config_changes(saved, given, *, extending: bool = True) -> list[Change]:
    """The result-changing differences from ``saved`` (the run's record) to ``given``.

    Both are ``ConfigDict`` (or plain dicts); values are compared as JSON, so a tuple equals
    the list ``config.json`` holds. With ``extending=True`` a larger ``train.steps`` is not a
    change when both configs use ``train.lr_schedule="constant"``.
    """
    old, new = _flatten(_plain(saved)), _flatten(_plain(given))
    changes = []
    for field in sorted(set(old) | set(new)):
        a, b = old.get(field, _ABSENT), new.get(field, _ABSENT)
        if a == b or _neutral(field):
            continue
        if field == "train.steps" and isinstance(a, int) and isinstance(b, int):
            schedules = (old.get("train.lr_schedule"), new.get("train.lr_schedule"))
            if schedules == ("constant", "constant"):
                if b > a and extending:
                    continue
                why = "a run can be extended by raising train.steps, not shortened" if extending else ""
            elif extending:
                why = (
                    "with train.lr_schedule='cosine' the learning rate decays over train.steps, so a different "
                    "value changes the rate of every step already taken; only runs with a constant schedule "
                    "can be extended"
                )
            else:
                why = ""
            changes.append(Change(field, a, b, why))
            continue
        changes.append(Change(field, a, b))
    return changes


def read_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config recorded in ``workdir/config.json``, or None when there is none."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot read the run's config record {path} ({e}); restore it from a copy, or move the workdir "
            "aside and start a new run."
        ) from e
    if not isinstance(record, dict):
        raise UserError(f"{path} holds {type(record).__name__}, not a config; restore it from a copy.")
    return ml_collections.ConfigDict(record)


def check_resume(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises ``UserError`` listing the result-changing differences between a run's record
    ``saved`` and the ``given`` config of a re-run, and how to proceed."""
    changes = config_changes(saved, given)
    if changes:
        path = os.path.join(workdir, CONFIG_FILE)
        lines = "\n".join(f"  {c}" for c in changes)
        raise UserError(
            f"the config differs from the run recorded in {path} in fields that change the results "
            f"(saved -> given):\n{lines}\n"
            "Train this config in a new --workdir, or re-run with the saved config (drop these overrides or set "
            "them back to the saved values)."
        )


def config_for_evaluate(saved: ml_collections.ConfigDict, given: ml_collections.ConfigDict,
                        workdir: str) -> ml_collections.ConfigDict:
    """The config ``evaluate`` uses: the run's record ``saved``, with the neutral fields
    (``NEUTRAL_FIELDS``: ``eval.*``, ``mesh.*``, ...) taken from ``given``. Prints a warning on
    stderr listing the result-changing fields of ``given`` that are ignored."""
    changes = config_changes(saved, given, extending=False)
    if changes:
        lines = "\n".join(f"  {c}" for c in changes)
        warn(
            f"evaluating with the config recorded in {os.path.join(workdir, CONFIG_FILE)}; these fields of the "
            f"given config differ and are ignored (saved -> given):\n{lines}"
        )
    merged = _plain(saved)
    given_plain = _plain(given)
    for field in NEUTRAL_FIELDS:
        section, _, key = field.partition(".")
        if key:
            if key in given_plain.get(section, {}):
                merged.setdefault(section, {})[key] = given_plain[section][key]
        elif section in given_plain:
            merged[section] = given_plain[section]
    return ml_collections.ConfigDict(merged)


def warn(message: str) -> None:
    """Prints ``warning: message`` on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks the ranges of the loop's and optimiser's fields; raises one ``UserError`` listing
    every bad value with what is expected."""
    t = config.train
    problems = []

    def need(field: str, ok, expected: str) -> None:
        if field not in t:
            return
        value = t[field]
        good = False
        try:
            good = bool(ok(value))
        except TypeError:
            pass
        if not good:
            problems.append(f"config.train.{field}={value!r}: expected {expected}")

    integer = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    need("batch_size", lambda v: integer(v) and v > 0, "an integer > 0")
    need("steps", lambda v: integer(v) and v >= 0, "an integer >= 0")
    need("keep_checkpoints", lambda v: integer(v) and v >= 1,
         "an integer >= 1 (the number of latest checkpoints kept; 0 would delete them all)")
    need("log_every", lambda v: integer(v) and v > 0, "an integer > 0")
    need("checkpoint_every", lambda v: integer(v) and v > 0, "an integer > 0")
    need("eval_every", lambda v: integer(v) and v >= 0, "an integer >= 0 (0: evaluate only at the end)")
    need("steps_per_call", lambda v: integer(v) and v >= 1, "an integer >= 1 (train steps per jitted call)")
    need("ema", lambda v: _number(v) and 0 <= v < 1, "0 <= ema < 1 (0: no EMA)")
    for lr in ("lr", "lr_map", "lr_potential"):
        need(lr, lambda v: _number(v) and v > 0, "a learning rate > 0")
    need("grad_clip", lambda v: _number(v) and v >= 0, "a global norm >= 0 (0: no clipping)")
    need("lr_schedule", lambda v: v in ("constant", "cosine"), "'constant' or 'cosine'")
    need("lr_final_fraction", lambda v: _number(v) and 0 <= v <= 1, "a fraction 0 <= f <= 1 of the initial rate")
    data = config.get("data")
    if data is not None and "sampler" in data and data.sampler not in ("host", "device"):
        problems.append(f"config.data.sampler={data.sampler!r}: expected 'host' or 'device'")
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise UserError(f"invalid config values:\n{lines}\nSet them with --config.train.FIELD=VALUE "
                        "(--config.data.FIELD=VALUE for data fields).")
