"""The configs shipped with seg_plugins, found from Python as detectron2's ``model_zoo`` finds
its own::

    from seg_plugins import model_zoo

    path = model_zoo.get_config_file("shapes/unet_shapes.yaml")   # a path on disk
    cfg = model_zoo.get_config("shapes/unet_shapes.yaml")         # a CfgNode, keys registered
    lazy = model_zoo.get_config("lazy/unet_shapes.py")            # a LazyConfig (omegaconf)
    model_zoo.list_configs()                                      # every name

Names are paths relative to the repository's ``configs/`` folder (a leading ``configs/`` is
accepted). An installed wheel carries them as package data under ``model_zoo/configs``
(setup.py maps the repository's ``configs/`` there); a source checkout or an editable
install reads the repository's ``configs/`` itself. ``python -m seg_plugins.model_zoo``
prints the list.
"""

from __future__ import annotations

import difflib
import os
from typing import List

__all__ = ["get_config", "get_config_file", "list_configs", "configs_dir"]

_SUFFIXES = (".yaml", ".py")


def configs_dir() -> str:
    """The folder holding the shipped configs (installed package data, else the checkout's)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(here, "configs"),  # a wheel / sdist install
        os.path.join(os.path.dirname(os.path.dirname(here)), "configs"),  # a checkout
    ):
        if os.path.isdir(candidate) and any(n.startswith("Base-") for n in os.listdir(candidate)):
            return candidate
    raise FileNotFoundError(
        f"seg_plugins' configs are not installed beside {here}: reinstall the package "
        "(pip install seg_plugins) or use a source checkout"
    )


def list_configs() -> List[str]:
    """Every shipped config name (``shapes/unet_shapes.yaml``, ...), sorted."""
    root = configs_dir()
    names = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(_SUFFIXES) and name != "__init__.py":
                names.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(names)


def _normalize(name: str) -> str:
    name = name.replace("\\", "/")
    return name[len("configs/") :] if name.startswith("configs/") else name


def get_config_file(name: str) -> str:
    """The path of the shipped config ``name`` (e.g. ``"shapes/unet_shapes.yaml"``).

    Raises:
        FileNotFoundError: no such shipped config; the message names the closest ones.
    """
    rel = _normalize(name)
    path = os.path.join(configs_dir(), *rel.split("/"))
    if os.path.isfile(path) and rel.endswith(_SUFFIXES):
        return path
    names = list_configs()
    close = difflib.get_close_matches(rel, names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"{name!r} is not a config shipped with seg_plugins{hint} "
        "(python -m seg_plugins.model_zoo lists them)"
    )


def get_config(name: str):
    """The shipped config ``name``: a yacs ``CfgNode`` (detectron2's ``get_cfg()`` with
    seg_plugins' keys, the file merged, not frozen) for ``.yaml``, or the LazyConfig for
    ``.py``."""
    path = get_config_file(name)
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        return LazyConfig.load(path)
    from detectron2.config import get_cfg

    from ..config import add_seg_plugins_config

    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(path, allow_unsafe=False)
    return cfg
