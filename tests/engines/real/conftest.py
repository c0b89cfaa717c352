"""The real engines' environments, built once per machine from the lock files beside this file.

They are built by diffbench's own `pip:` environments (uv, `--no-deps`, keyed by the lock's
content) into a cache outside the clone, so a second clone or CI run on the same machine reuses
them; a fresh machine builds them (about 2.5 min each, mostly downloads). CI never skips them.
ComfyUI is not on PyPI: its source tree comes from a tarball in the clone's sibling `shared/`
folder, extracted into the same cache, and its tiny models are built there once as well.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diffbench.engines.environments import EngineEnvironment, build_venv

from .shims import apply_cpu_shims

HERE = Path(__file__).resolve().parent
LOCKS = {"sglang": HERE / "sglang-cpu.txt", "vllm-omni": HERE / "vllm-omni-cpu.txt",
         "comfyui": HERE / "comfyui-cpu.txt"}
ENVS_DIR = Path(os.environ.get("DIFFBENCH_TEST_ENVS_DIR", Path.home() / ".cache" / "diffbench" / "test-envs"))
# What no registry provides is in the project's `shared/` folder, beside the clone (or a folder above it).
COMFYUI_IN_SHARED = Path("shared", "engines", "comfyui", "ComfyUI-0.33.0-783545f6.tar.gz")
COMFYUI_TARBALL = Path(os.environ.get("DIFFBENCH_COMFYUI_TARBALL") or next(
    (folder / COMFYUI_IN_SHARED for folder in HERE.parents if (folder / COMFYUI_IN_SHARED).is_file()),
    HERE.parents[3] / COMFYUI_IN_SHARED))
TINY_COMFY = HERE / "tiny_comfy.py"
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
def comfyui_root() -> Path:
    """The folder holding the extracted ComfyUI tree: the server is `<root>/ComfyUI/main.py`."""
    if not COMFYUI_TARBALL.is_file():
        reason = f"no ComfyUI source tarball at {COMFYUI_TARBALL} (set DIFFBENCH_COMFYUI_TARBALL)"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    return comfyui_tree(COMFYUI_TARBALL)


@pytest.fixture(scope="session")
def comfyui_env() -> EngineEnvironment:
    return real_env("comfyui")


@pytest.fixture(scope="session")
def comfyui_models(comfyui_root: Path, comfyui_env: EngineEnvironment) -> Path:
    """A ComfyUI models folder (checkpoints/, text_encoders/, diffusion_models/, vae/) holding the tiny models."""
    assert comfyui_env.python is not None
    return tiny_comfy_models(comfyui_env.python, comfyui_root)


def comfyui_tree(tarball: Path) -> Path:
    """`tarball` extracted once per machine, with its bytecode compiled, into a folder named after it."""

    def extract(folder: Path) -> None:
        with tarfile.open(tarball) as archive:
            archive.extractall(folder, filter="data")
        # Servers may run with PYTHONDONTWRITEBYTECODE=1 (as here), which would compile every start from source;
        # compiled once, a start is about 1 s quicker. Our Python is the venvs' (build_venv makes them with it).
        _run([sys.executable, "-m", "compileall", "-q", str(folder)])

    return _built_once(ENVS_DIR / tarball.name.removesuffix(".tar.gz").lower(), extract)


def tiny_comfy_models(python: Path, root: Path) -> Path:
    """The models `tiny_comfy.py` builds with ComfyUI's own modules, once per version of the script and tree.

    Cached rather than built per session: building takes about 10 s, but the files take 603 MiB.
    """
    key = hashlib.sha256(TINY_COMFY.read_bytes() + root.name.encode()).hexdigest()[:16]

    def build(folder: Path) -> None:
        _run([str(python), str(TINY_COMFY), str(folder)], cwd=root / "ComfyUI")

    return _built_once(ENVS_DIR / f"comfyui-models-{key}", build)


def _built_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, made by `build` into a scratch folder then renamed, so a build killed half-way is never reused."""
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f"{folder.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session on this machine may be building the same one
        if folder.is_dir():
            return folder
        partial = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed build
        build(partial)
        partial.rename(folder)
    return folder


def _run(argv: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")


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
