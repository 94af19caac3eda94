"""seg_plugins' command-line tools: argument parsing only.

Each module here parses its command line with the standard library alone, then imports the
tool's implementation (:mod:`seg_plugins.tools`, which loads torch and detectron2). So
``--help`` and mistakes in the command answer at once. The console scripts
(``seg-plugins-train``, ``seg-plugins-predict``, ...; setup.py) and the scripts in the
repository's ``tools/`` call the same ``main`` functions; the convention they share is in
:mod:`seg_plugins_cli.common`.

This is a top-level package of its own because importing anything under ``seg_plugins``
first runs ``seg_plugins/__init__.py``, which repairs and imports detectron2 (and torch) to
register the models.
"""

# console script -> module (setup.py's entry points and tests/tools/test_cli.py use this)
TOOLS = {
    "seg-plugins-train": "train",
    "seg-plugins-predict": "predict",
    "seg-plugins-export": "export",
    "seg-plugins-check": "check",
    "seg-plugins-stats": "stats",
    "seg-plugins-visualize": "visualize",
    "seg-plugins-plot-metrics": "plot_metrics",
}
