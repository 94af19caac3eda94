"""Stands in for ``detectron2._C`` when detectron2 was installed without its extension.

Provides the operators that have a pure-PyTorch or torchvision equivalent (see ops.py) and
answers every other attribute with an error that names the operator, instead of the
``ImportError: cannot import name '_C'`` that otherwise breaks ``import detectron2.modeling``.
"""
from __future__ import annotations

import types

from . import ops

IS_FALLBACK = True


class _FallbackC(types.ModuleType):
    IS_FALLBACK = True

    @staticmethod
    def box_iou_rotated(boxes1, boxes2):
        return ops.box_iou_rotated(boxes1, boxes2)

    @staticmethod
    def get_compiler_version():
        return "none: detectron2._C not built; seg_plugins.compat pure-PyTorch fallback"

    @staticmethod
    def get_cuda_version():
        return "none"

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"detectron2._C.{name} is not available: this detectron2 was installed without "
            "its compiled C++/CUDA extension and seg_plugins.compat has no pure-PyTorch "
            f"version of '{name}'. Install detectron2 from source with its extension "
            "(pip install 'git+https://github.com/facebookresearch/detectron2.git') to use it."
        )


def make_module(name: str = "detectron2._C") -> types.ModuleType:
    module = _FallbackC(name, __doc__)
    module.__file__ = __file__
    return module
