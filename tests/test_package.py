"""Package boundaries: no Prefect in diffbench/, the engines it lists, and the environment it is tested in."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
        "sglang": "sglang", "vllm-omni": "vllm-omni", "diffusers": "diffusers", "comfyui": "comfyui",
        "lightx2v": "lightx2v"}


def test_base_methods_name_themselves_when_missing() -> None:
    engine = engines.Engine()
    with pytest.raises(NotImplementedError, match="Engine.command"):
        engine.command(None)  # type: ignore[arg-type]


def test_the_environment_is_the_one_requirements_lock_pins() -> None:
    """`make test` installs with requirements.lock as constraints: every dependency pyproject.toml names is pinned
    there within its range, and what is installed is what is pinned (torch, left out of the lock, aside)."""
    root = PACKAGE.parent
    pinned: dict[str, set[str]] = {}
    for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (root / "requirements.lock").read_text(), re.M):
        pinned.setdefault(canonicalize_name(name), set()).add(version)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + [r for extra in project["optional-dependencies"]
                                                                 .values() for r in extra]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name != "torch":
            assert any(requirement.specifier.contains(v, prereleases=True) for v in pinned.get(name, ())), name
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    stale = {name: (installed[name], versions) for name, versions in pinned.items()
             if name in installed and installed[name] not in versions}
    assert not stale, f"installed versions differ from requirements.lock: {stale}"
