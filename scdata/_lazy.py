"""Lazy public names for scdata's packages (PEP 562), and the redirects of modules that moved.

A package's ``__init__`` lists its public names and the module each lives in; the module is
imported on first use. That keeps a Dask worker that only runs ingest tasks from loading xarray,
dask.array or anndata (each worker process would pay ~0.4 s for them).

Modules moved into subpackages in 0.2 (``scdata.dataset`` is now ``scdata.read.xarray_view``, ...).
Their old paths keep working for a while: importing one gives the new module's names and a
``FutureWarning`` naming the new path, as anndata does for its moved names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, exports: Mapping[str, str], moved: Mapping[str, str] | None = None
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    ``exports`` maps each public name to the submodule (relative to ``package``) that defines it.
    ``moved`` maps names that an old module of the same dotted path held to their new module;
    reading one warns with the new path.
    """
    moved = dict(moved or {})

    def __getattr__(name: str):
        module = exports.get(name)
        if module is not None:
            value = getattr(importlib.import_module(f"{package}.{module}"), name)
            sys.modules[package].__dict__[name] = value  # later lookups skip this function
            return value
        target = moved.get(name)
        if target is not None:
            warnings.warn(f"{package}.{name} moved to {target}.{name}; import it from there", FutureWarning, stacklevel=2)
            return getattr(importlib.import_module(target), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | set(exports))

    return __getattr__, __dir__, sorted(exports)


class _MovedModule(types.ModuleType):
    """What an old module path imports as: every attribute read from the module's new home."""

    def __init__(self, name: str, target: str):
        super().__init__(name, f"Moved to {target}.")
        self.__dict__["_target"] = target

    def __getattr__(self, name: str):
        return getattr(importlib.import_module(self.__dict__["_target"]), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__dict__["_target"]))


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A meta path finder that answers the old module paths of ``moves`` (old -> new dotted path)."""

    def __init__(self, moves: Mapping[str, str]):
        self.moves = dict(moves)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.moves:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        target = self.moves[spec.name]
        warnings.warn(f"{spec.name} moved to {target}; import it from there", FutureWarning, stacklevel=2)
        return _MovedModule(spec.name, target)

    def exec_module(self, module) -> None:
        importlib.import_module(module.__dict__["_target"])  # fail here, at the import, if the target is broken


def install_redirects(moves: Mapping[str, str]) -> None:
    """Answer the old paths of ``moves`` from now on (once per process)."""
    if not any(isinstance(finder, MovedModules) and finder.moves == dict(moves) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules(moves))
