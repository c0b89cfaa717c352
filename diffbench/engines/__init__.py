"""Engine adapters, found by module: adding an engine is adding one module here."""

from __future__ import annotations

import importlib
import pkgutil

from diffbench.engines.base import Engine, ServerSpec


def _discover() -> dict[str, type[Engine]]:
    found: dict[str, type[Engine]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Engine) and "name" in vars(value):
                found[value.name] = value
    return found


ENGINES: dict[str, type[Engine]] = _discover()

__all__ = ["ENGINES", "Engine", "ServerSpec"]
