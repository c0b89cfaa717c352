"""The real engines' environments, built once per machine from the lock files beside this file.

They are built by diffbench's own `pip:` environments (uv, `--no-deps`, keyed by the lock's
content) into a cache outside the clone, so a second clone or CI run on the same machine reuses
them; a fresh machine builds them (about 2.5 min each, mostly downloads). CI never skips them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffbench.engines.environments import EngineEnvironment, build_venv

from .shims import apply_cpu_shims

HERE = Path(__file__).resolve().parent
LOCKS = {"sglang": HERE / "sglang-cpu.txt", "vllm-omni": HERE / "vllm-omni-cpu.txt"}
ENVS_DIR = Path(os.environ.get("DIFFBENCH_TEST_ENVS_DIR", Path.home() / ".cache" / "diffbench" / "test-envs"))
# vllm picks its CPU platform only when told; the test-only plugin activates on the same variable.
CPU_ENV = {"vllm-omni": {"VLLM_TARGET_DEVICE": "cpu"}}
CPU_ARGS = {"vllm-omni": ["--dtype", "float32"]}  # bf16 fails on CPU in diffusers' embeddings


def pip_spec(framework: str) -> list[str]:
    """The `pip:` of a framework option that installs the real engine from its CPU lock."""
    return ["--no-deps", "-r", str(LOCKS[framework])]


def real_env(framework: str) -> EngineEnvironment:
    environment = build_venv(pip_spec(framework), ENVS_DIR)
    assert environment.python is not None
    apply_cpu_shims(environment.python, framework)
    return environment


@pytest.fixture(scope="session")
def sglang_env() -> EngineEnvironment:
    return real_env("sglang")


@pytest.fixture(scope="session")
def vllm_omni_env() -> EngineEnvironment:
    return real_env("vllm-omni")


@pytest.fixture(scope="session")
def real_models(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny models; FLUX under a name containing `FLUX.1`, which sglang needs to pick its native pipeline."""
    root = tmp_path_factory.mktemp("real-models")
    flux = root / "tiny-FLUX.1-dev"
    flux.symlink_to(tiny_models["flux"], target_is_directory=True)
    return {"flux": flux, "wan": tiny_models["wan"]}


@pytest.fixture
def envs_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Flows find the prebuilt engine venvs where the fixtures built them."""
    monkeypatch.setenv("DIFFBENCH_ENVS_DIR", str(ENVS_DIR))
    yield ENVS_DIR
