"""Make a venv built from a ``*-cpu.txt`` lock beside this file usable on a CPU-only machine (test-only).

The lock files (``sglang-cpu.txt``, ``vllm-omni-cpu.txt``, ``comfyui-cpu.txt``) install the engines' real packages
with ``--no-deps``; three things on PyPI are built for CUDA torch only and need a workaround on the CPU build
``torch==2.13.0+cpu``:

* torchvision 0.28.0 (every engine): ``tv_cpu_shim.py``, loaded at start-up by ``zz_tv_cpu_shim.pth``.
* torchaudio 2.11.x (vllm-omni, ComfyUI): its ``lib/*.so`` link ``libc10_cuda.so``; with them moved out of the
  package, torchaudio imports and reports its extension as unavailable (enough for ComfyUI's audio nodes to load).
* vllm-omni 0.30.0 ships no CPU platform: the ``omni_cpu_plugin`` project beside this file provides one.

``apply_cpu_shims`` is idempotent, so a test session can call it every time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
TV_SHIM = HERE / "tv_cpu_shim.py"
PTH_NAME = "zz_tv_cpu_shim.pth"  # "zz": .pth files run in name order; load after anything torch-related
PTH_LINE = "import tv_cpu_shim\n"
PLUGIN_DIR = HERE / "omni_cpu_plugin"
PLUGIN_DIST = "omni-cpu-plugin"
TORCHAUDIO_LIBS_DIR = "torchaudio-cuda-libs"
FRAMEWORKS = ("sglang", "vllm-omni", "comfyui")
TORCHAUDIO_USERS = ("vllm-omni", "comfyui")


def apply_cpu_shims(python: Path, framework: str) -> None:
    """Install the CPU workarounds that ``framework`` needs into the venv whose interpreter is ``python``.

    ``python`` is the venv's ``bin/python`` (not resolved through its symlink: the venv is its grandparent).
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
    venv = Path(python).absolute().parent.parent
    purelib = Path(_run_python(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    _install_tv_shim(purelib)
    if framework in TORCHAUDIO_USERS:
        _move_torchaudio_libs(purelib, venv / TORCHAUDIO_LIBS_DIR)
    if framework == "vllm-omni":
        _install_plugin(python)


def _run_python(python: Path, code: str) -> str:
    result = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def _write_if_changed(path: Path, content: bytes) -> None:
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)


def _install_tv_shim(purelib: Path) -> None:
    _write_if_changed(purelib / TV_SHIM.name, TV_SHIM.read_bytes())
    _write_if_changed(purelib / PTH_NAME, PTH_LINE.encode())


def _move_torchaudio_libs(purelib: Path, dest: Path) -> None:
    # Moved, not deleted: the venv stays inspectable and the move can be undone by hand.
    libs = sorted((purelib / "torchaudio" / "lib").glob("*.so"))
    if not libs:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for lib in libs:
        shutil.move(str(lib), str(dest / lib.name))


def _plugin_version() -> str:
    with (PLUGIN_DIR / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _installed_version(python: Path, dist: str) -> str | None:
    code = (
        "import importlib.metadata as m\n"
        "try:\n"
        f"    print(m.version({dist!r}))\n"
        "except m.PackageNotFoundError:\n"
        "    pass\n"
    )
    return _run_python(python, code) or None


def _find_uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    raise FileNotFoundError("uv not found on PATH nor next to the running interpreter")


def _install_plugin(python: Path) -> None:
    if _installed_version(python, PLUGIN_DIST) == _plugin_version():
        return
    # Built from a copy: setuptools writes build/ and *.egg-info/ into the source folder, which is in the repo.
    # Not editable, no deps: the plugin's imports (vllm, vllm_omni, torch, psutil) all come from the lock.
    with tempfile.TemporaryDirectory(prefix="omni-cpu-plugin-") as tmp:
        source = Path(tmp) / PLUGIN_DIR.name
        shutil.copytree(PLUGIN_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        argv = [_find_uv(), "pip", "install", "--quiet", "--python", str(python), "--no-deps", str(source)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr}")
