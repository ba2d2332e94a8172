"""Training methods. Each module implements the ``jot.methods.base.Method`` protocol.

``get(name)`` returns the module for ``config.method``; a new method is one module here
plus one entry in ``_REGISTRY`` and a config file, with no change to the loop.
"""
import importlib

_REGISTRY = {
    "otm": "jot.methods.otm",
    "diotm": "jot.methods.diotm",
    "dsm": "jot.methods.dsm",
    "rdmd": "jot.methods.rdmd",
    "sd_dsm": "jot.methods.sd_dsm",
    "textual_inversion": "jot.methods.textual_inversion",
}


def get(name: str):
    """Returns the method module registered under ``name``."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown method {name!r}; expected one of {sorted(_REGISTRY)}. "
            "Set --config.method to one of these, or register a new module in jot/methods/__init__.py."
        )
    return importlib.import_module(_REGISTRY[name])
