"""Datasets for the training loop (see ``jot.data.base`` for the contract).

``build(config)`` picks a dataset module by ``config.data.name``:

- toy 2D benchmarks ``g8g``, ``g25g``, ``moon_spiral``, ``g_circles`` and user point clouds
  (``name="points"`` with ``source="npz:PATH"``, ``target="npz:PATH"``): ``jot.data.toy``
- ``digits``: the offline thin/thick digits image benchmark: ``jot.data.digits``
- ``folder``: unpaired image folders: ``jot.data.images``
- ``tfds``: ``tfds.data_source`` datasets (``cycle_gan/*``, ``celeb_a``): ``jot.data.tfds_source``

``config.data.sampler`` (``"host"`` | ``"device"``, toy 2D benchmarks and ``gaussians``) draws the
training batches on device inside the jitted step (``jot.data.base``: ``device_batch``).

``config.data.source`` / ``config.data.target`` are read only by ``points`` and ``folder``;
setting them for another dataset is an error rather than being silently ignored.
"""
import importlib

import ml_collections

from jot.errors import UserError

_MODULES = {
    "g8g": "jot.data.toy",
    "g25g": "jot.data.toy",
    "moon_spiral": "jot.data.toy",
    "g_circles": "jot.data.toy",
    "gaussians": "jot.data.toy",
    "points": "jot.data.toy",
    "digits": "jot.data.digits",
    "folder": "jot.data.images",
    "tfds": "jot.data.tfds_source",
}

_READS_SOURCE_TARGET = ("points", "folder")


def build(config: ml_collections.ConfigDict):
    """Builds the dataset described by ``config.data`` (seeded by ``config.seed``)."""
    name = config.data.name
    if name not in _MODULES:
        raise UserError(
            f"unknown dataset config.data.name={name!r}; expected one of {sorted(_MODULES)}."
        )
    if name not in _READS_SOURCE_TARGET:
        for role in ("source", "target"):
            value = config.data.get(role)
            if value:
                fix = "--config.data.name=points" if str(value).startswith("npz:") else "--config.data.name=folder"
                raise UserError(
                    f"config.data.{role}={value!r} is set, but dataset config.data.name={name!r} does not read it "
                    f"(only {' and '.join(_READS_SOURCE_TARGET)} do), so it would be ignored. To train on it set "
                    f"{fix}; otherwise drop the --config.data.{role} override."
                )
    return importlib.import_module(_MODULES[name]).build(config)
