"""A module imported on first use: ``scipy.stats`` costs ~25 MiB and most of
``import pylmem``'s time, and a plain fit never needs it (only tests, intervals and
p-values do).

Usage: ``from ..util.lazy import stats`` then ``stats.norm.ppf(...)`` as with
``from scipy import stats``.
"""
from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """A stand-in for the module ``name`` that imports it at the first attribute access."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self):
        mod = self.__dict__["_lazy_target"]
        if mod is None:
            mod = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = mod
        return mod

    def __getattr__(self, attr):
        return getattr(self._load(), attr)

    def __dir__(self):
        return dir(self._load())


stats = LazyModule("scipy.stats")
