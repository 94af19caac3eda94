"""``python -m seg_plugins.compat``: which compat repairs this detectron2 needs.

Imports seg_plugins, then every detectron2 module that a repair watches (so that each
import-time repair has had its chance to apply), and prints one JSON object: the detectron2
build (version, location, compiled ops) and :func:`seg_plugins.compat.applied_repairs`.
``tools/compat_table.py`` turns the output of several builds into docs/compat.md.
"""

import importlib
import json
import os
import sys

import seg_plugins  # noqa: F401  (first: applies the repairs)

# isort: split
from seg_plugins import compat

# The modules that the repairs hook (compat/__init__.py), imported here so that every
# repair that detects a breakage on import has run.
WATCHED = (
    "detectron2.modeling",
    "detectron2.data",
    "detectron2.data.datasets.pascal_voc",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.evaluation.pascal_voc_evaluation",
    "detectron2.export",
    "detectron2.model_zoo",
    "detectron2.projects.deeplab",
    "detectron2.utils.visualizer",
    "detectron2.utils.video_visualizer",
    "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
    "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
    "cityscapesscripts.evaluation.instances2dict",
)


def build_info() -> dict:
    import detectron2

    return {
        "installed_from": compat.installed_from(),
        "detectron2": detectron2.__version__,
        "location": os.path.dirname(detectron2.__file__),
        "compiled_ops": compat.has_compiled_ops(),
        "python": sys.version.split()[0],
    }


def main() -> None:
    failed = {}
    for name in WATCHED:
        try:
            importlib.import_module(name)
        except Exception as err:  # reported, not fatal: the table shows what did not import
            failed[name] = f"{type(err).__name__}: {err}"
    json.dump(
        {**build_info(), "repairs": compat.applied_repairs(), "import_errors": failed},
        sys.stdout,
        indent=1,
        sort_keys=True,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
