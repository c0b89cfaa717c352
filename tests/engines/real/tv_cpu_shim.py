"""TEST-ONLY torchvision shim for CPU venvs (loaded at interpreter start by ``zz_tv_cpu_shim.pth``).

Why it exists: the only torchvision release that matches torch 2.13 is PyPI's 0.28.0, and it is built against
the CUDA torch (``torchvision/_C.so`` needs ``libtorch_cuda.so``/``libc10_cuda.so``). Under the CPU build
``torch==2.13.0+cpu`` that extension never loads, so the ``torchvision::*`` C++ ops are never registered and
``import torchvision`` dies in ``torchvision/_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist``. sglang, vllm and transformers all import
torchvision (for ``torchvision.transforms``), so neither server starts without this.

What it does: on the first ``import torchvision`` it wraps ``torch.library.register_fake`` and
``register_autograd`` so that a registration for a ``torchvision::*`` op that does not exist becomes a no-op.
``torchvision.transforms`` then works; ``torchvision.ops`` (nms, roi_align) does not, and neither server needs it.
Not for production or GPU venvs.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def _op_exists(op: str) -> bool:
    import torch

    namespace, _, name = op.partition("::")
    try:
        getattr(getattr(torch.ops, namespace), name.split(".")[0])
    except (AttributeError, RuntimeError):
        return False
    return True


def _skip_missing_torchvision_ops() -> None:
    from torch import library

    for fname in ("register_fake", "register_autograd"):
        original = getattr(library, fname)

        def wrapped(op: Any, *args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            if isinstance(op, str) and op.startswith("torchvision::") and not _op_exists(op):
                # Used as a decorator (no function passed yet): hand back one that leaves the function alone.
                return (lambda f: f) if not args or not callable(args[0]) else None
            return _original(op, *args, **kwargs)

        setattr(library, fname, wrapped)


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Patches torch.library just before torchvision is first imported, then steps aside."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        # Importing torch only here keeps interpreter start-up cheap for processes that never touch torchvision.
        _skip_missing_torchvision_ops()
        return None


if not any(isinstance(finder, _TorchvisionHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionHook())
