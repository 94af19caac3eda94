#!/usr/bin/env python
"""seg_plugins: FCN, U-Net, DeepLabV3 and DeepLabV3+ for detectron2.

detectron2 itself is not listed in ``install_requires``: it has never been published on
PyPI under that name (like detectron2's own projects, this package expects it installed
first). ``tools/setup_env.sh`` installs it; see README.md.
"""
from setuptools import find_packages, setup

EXPORT = ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"]

setup(
    name="seg_plugins",
    version="0.1.0",
    description="Semantic segmentation models (FCN, U-Net, DeepLabV3/V3+) for detectron2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # seg_plugins_cli: the tools' argument parsers, importable without torch (fast --help).
    # The repository's configs/ ship as package data under seg_plugins/model_zoo/configs
    # (seg_plugins.model_zoo finds them there, or in a checkout's configs/).
    packages=[
        *find_packages(include=("seg_plugins", "seg_plugins.*", "seg_plugins_cli")),
        "seg_plugins.model_zoo.configs",
        "seg_plugins.model_zoo.configs.lazy",  # LazyConfig .py files: modules to setuptools
    ],
    package_dir={"seg_plugins.model_zoo.configs": "configs"},
    package_data={"seg_plugins.model_zoo.configs": ["*.yaml", "*/*.yaml"]},
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        # No upper bound: cityscapesscripts (<= 2.3.0) calls np.in1d, removed in numpy 2.4;
        # seg_plugins.compat gives its modules an in1d (so installing never downgrades numpy).
        "numpy>=1.24",
        "pycocotools>=2.0.6",
        "fvcore>=0.1.5,<0.1.6",
        "opencv-python>=4.5",
        "Pillow>=9.0",
        "matplotlib>=3.5",
        "tabulate>=0.8",
        # The official Cityscapes evaluation (evaluator_type "cityscapes_sem_seg" /
        # "cityscapes_instance"): detectron2's Cityscapes evaluators import it lazily, so
        # without it the failure would come only at the end of training.
        "cityscapesscripts>=2.2",
        # detectron2's Cityscapes instance loader (polygons JSON -> masks) imports shapely.
        "shapely>=2.0",
    ],
    extras_require={
        # tools/export_model.py / seg_plugins.export: torch.onnx's exporter (onnxscript)
        # and onnxruntime to run and verify the exported file.
        "export": EXPORT,
        # torchmetrics: the tests compare the panoptic quality with its PanopticQuality.
        "test": ["pytest>=7", "hypothesis>=6", "torchmetrics==1.9.0", *EXPORT],
        # MODEL.CRF.BACKEND "pydensecrf2": Krähenbühl's C++ dense CRF (docs/crf.md); the
        # default PyTorch backend needs nothing extra. No wheel for most platforms: pip
        # builds the sdist (Cython, a C++ compiler; about 30 s).
        "crf": ["pydensecrf2>=1.1"],
    },
    entry_points={
        # One per tool; tools/*.py call the same functions (seg_plugins_cli.TOOLS).
        "console_scripts": [
            "seg-plugins-train=seg_plugins_cli.train:console",
            "seg-plugins-predict=seg_plugins_cli.predict:main",
            "seg-plugins-export=seg_plugins_cli.export:main",
            "seg-plugins-check=seg_plugins_cli.check:main",
            "seg-plugins-stats=seg_plugins_cli.stats:main",
            "seg-plugins-visualize=seg_plugins_cli.visualize:main",
            "seg-plugins-plot-metrics=seg_plugins_cli.plot_metrics:main",
        ],
    },
)
