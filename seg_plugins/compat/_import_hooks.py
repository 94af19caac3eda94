"""Run a callback right before / right after a named module executes.

Some repairs must touch a detectron2 module's namespace (e.g. give it a numpy that still
has ``np.float``) after the module is imported but before anybody uses it, without
importing heavy modules eagerly. The standard library has no post-import hook (PEP 369
was withdrawn), so this is a minimal meta-path finder that wraps the real loader.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from typing import Callable, Dict, List

__all__ = ["when_imported", "before_import"]

_Hook = Callable[[object], None]
_POST: Dict[str, List[_Hook]] = {}
_PRE: Dict[str, List[_Hook]] = {}
_LOCK = threading.RLock()


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader, name: str):
        self._wrapped = wrapped
        self._name = name

    def create_module(self, spec):
        return self._wrapped.create_module(spec)

    def exec_module(self, module):
        for hook in _PRE.get(self._name, ()):
            hook(module)
        try:
            self._wrapped.exec_module(module)
        finally:
            for hook in _PRE.get(self._name, ()):
                undo = getattr(hook, "undo", None)
                if undo is not None:
                    undo(module)
        for hook in _POST.get(self._name, ()):
            hook(module)

    def __getattr__(self, item):  # get_source, get_code, is_package, ... of the real loader
        return getattr(self._wrapped, item)


class _HookFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _POST and fullname not in _PRE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _HookedLoader):
                    spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
        return None


_FINDER = _HookFinder()


def _install_finder() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def when_imported(module_name: str, hook: _Hook) -> None:
    """Call ``hook(module)`` once ``module_name`` has executed (now, if it already has)."""
    with _LOCK:
        module = sys.modules.get(module_name)
        if module is not None:
            hook(module)
            return
        _POST.setdefault(module_name, []).append(hook)
        _install_finder()


def before_import(module_name: str, hook: _Hook) -> None:
    """Call ``hook(module)`` right before ``module_name`` executes; ``hook.undo(module)``,
    if the hook has that attribute, runs right after. No-op if already imported."""
    with _LOCK:
        if module_name in sys.modules:
            return
        _PRE.setdefault(module_name, []).append(hook)
        _install_finder()
