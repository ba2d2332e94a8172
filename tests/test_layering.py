"""Imports go downward only (DESIGN.md, "Layers"): read from the source of every module under
``jot/`` (nothing is imported), each ``import jot.X`` / ``from jot.X import`` / ``from jot import X``,
function-level imports and ``importlib`` registry strings (``"jot.methods.dsm"``) included,
names a package in the module's own layer or below it."""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "jot"

# Top to bottom; the names of one entry share a layer. ``launch`` and ``configs`` live outside
# ``jot/`` and sit above all of it.
LAYERS = (
    ("launch",),
    ("configs",),
    ("jot.methods",),
    ("jot.translate",),
    ("jot.train",),
    ("jot.models",),
    ("jot.losses", "jot.ot", "jot.diffusion"),
    ("jot.sharding",),
    ("jot.data", "jot.metrics"),
)
# Ground-floor utilities that every layer may import (the package root included).
GROUND = ("jot", "jot.errors", "jot.files")

# The upward imports that remain, as (importing module, imported module). The test asserts
# that this is exactly the set found: removing one means deleting its line here, and a new one
# fails until it is removed (or, deliberately, listed).
KNOWN_UPWARD = {
    # The generic loop looks the method module up by name (``methods.get(config.method)``).
    ("jot.train.loop", "jot.methods"),
    # ``held_out`` computes exact W2 through ``jot.ot.exact``.
    ("jot.metrics.transport", "jot.ot"),
}

_MODULE_STRING = re.compile(r"jot(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _rank() -> dict[str, int]:
    rank = {name: len(LAYERS) - i for i, names in enumerate(LAYERS) for name in names}
    rank.update({name: 0 for name in GROUND})
    return rank


def _package(dotted: str) -> str:
    """``jot.translate.ddib`` -> ``jot.translate``; ``jot.files`` -> ``jot.files``; ``configs.x`` -> ``configs``."""
    parts = dotted.split(".")
    return ".".join(parts[:2]) if parts[0] == "jot" else parts[0]


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def _targets(tree: ast.Module) -> set[str]:
    """The ``jot``, ``configs`` and ``launch`` modules ``tree`` imports, at any depth."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "jot":
                found.update(f"jot.{a.name}" for a in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.fullmatch(node.value):
            found.add(node.value)
    return {t for t in found if t.split(".")[0] in ("jot", "configs", "launch")}


def _upward() -> set[tuple[str, str]]:
    rank = _rank()
    upward = set()
    for module, tree in _modules().items():
        own = _package(module)
        if own == "jot":
            continue
        for target in _targets(tree):
            package = _package(target)
            if package != own and rank[package] > rank[own]:
                upward.add((module, target))
    return upward


def test_every_package_has_a_layer():
    modules = _modules()
    packages = {_package(m) for m in modules} | {_package(t) for tree in modules.values() for t in _targets(tree)}
    unplaced = sorted(packages - set(_rank()))
    assert not unplaced, f"not in LAYERS or GROUND (tests/test_layering.py, DESIGN.md): {unplaced}"


def test_imports_go_downward_only():
    rank, layer = _rank(), {name: names for names in LAYERS for name in names}
    found = _upward()
    new = sorted(found - KNOWN_UPWARD)
    gone = sorted(KNOWN_UPWARD - found)

    def describe(pairs):
        return "\n".join(
            f"  {m} ({'/'.join(layer.get(_package(m), (_package(m),)))}) -> "
            f"{t} ({'/'.join(layer.get(_package(t), (_package(t),)))})" for m, t in pairs
        )

    message = []
    if new:
        message.append(f"upward imports (each must point to its own layer or below):\n{describe(new)}")
    if gone:
        message.append(f"KNOWN_UPWARD lists imports that are gone; delete them from the list:\n{describe(gone)}")
    assert not message, "\n".join(message)
    assert all(rank[_package(t)] > rank[_package(m)] for m, t in KNOWN_UPWARD)


@pytest.mark.parametrize("source, expected", [
    ("from jot.train import loop", {"jot.train"}),
    ("import jot.methods.dsm as d", {"jot.methods.dsm"}),
    ("def f():\n    from jot import files, translate", {"jot.files", "jot.translate"}),
    ("REGISTRY = {'a': 'jot.methods.otm'}", {"jot.methods.otm"}),
    ("import configs.common\nimport numpy\nfrom . import x", {"configs.common"}),
    ("'''See jot.ot.exact.'''", set()),
])
def test_import_targets_are_read_from_the_source(source, expected):
    assert _targets(ast.parse(source)) == expected
