"""Package boundaries: no Prefect in diffbench/, and the engines it lists."""

from __future__ import annotations

import ast
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


def test_engines_are_listed_under_their_own_names() -> None:
    assert {name: cls.name for name, cls in engines.ENGINES.items()} == {
        "sglang": "sglang", "vllm-omni": "vllm-omni", "diffusers": "diffusers"}


def test_base_methods_name_themselves_when_missing() -> None:
    engine = engines.Engine()
    with pytest.raises(NotImplementedError, match="Engine.command"):
        engine.command(None)  # type: ignore[arg-type]
