"""Package boundaries: no Prefect in diffbench/, and engines found by module alone."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import diffbench
from diffbench import engines

PACKAGE = Path(diffbench.__file__).parent


@pytest.mark.parametrize("module", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_diffbench_never_imports_prefect(module: Path) -> None:
    tree = ast.parse(module.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] == "prefect"]


def test_a_new_engine_is_one_new_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lightx2v.py").write_text(
        "from diffbench.engines.base import Engine\n\n\n"
        "class LightX2VEngine(Engine):\n    name = 'lightx2v'\n"
    )
    monkeypatch.setattr(engines, "__path__", [*engines.__path__, str(tmp_path)])
    found = engines._discover()
    assert found["lightx2v"].__name__ == "LightX2VEngine"
    assert set(found) == {"sglang", "vllm-omni", "diffusers", "lightx2v"}
    importlib.invalidate_caches()


def test_base_methods_name_themselves_when_missing() -> None:
    engine = engines.Engine()
    with pytest.raises(NotImplementedError, match="Engine.command"):
        engine.command(None)  # type: ignore[arg-type]
