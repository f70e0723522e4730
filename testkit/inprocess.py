"""Both services' code in one process, for a test that needs what only one process shares
(an in-memory span exporter). The end-to-end tests run them as processes instead.

The services' top-level packages have the same names (`main`, `api`, `services`, `models`),
so each service's `main` is imported with its own source first on the path, and its
packages are then taken out of `sys.modules`, out of the way of the other's: the modules
loaded keep working through the references they hold. What a service imports only when it
runs must be named in `preload`, to be imported while its source is on the path.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterable
from types import ModuleType

from testkit.processes import ROOT

SHARED_NAMES = frozenset({"main", "api", "services", "models"})


def _take_shared() -> dict[str, ModuleType]:
    taken = [name for name in sys.modules if name.partition(".")[0] in SHARED_NAMES]
    return {name: sys.modules.pop(name) for name in taken}


def load_main(service: str, *, preload: Iterable[str] = ()) -> ModuleType:
    """`<service>/src/main.py` as a module (with every module it imports)."""
    source = str(ROOT / service / "src")
    others = _take_shared()
    sys.path.insert(0, source)
    try:
        main = importlib.import_module("main")
        for name in preload:
            with contextlib.suppress(ModuleNotFoundError):
                importlib.import_module(name)
        return main
    finally:
        sys.path.remove(source)
        _take_shared()
        sys.modules.update(others)
