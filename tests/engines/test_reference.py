"""The reference engine's adapter: our own server, sglang's requests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from diffbench.engines import ENGINES
from diffbench.engines.environments import EngineEnvironment
from diffbench.engines.reference import ReferenceEngine
from diffbench.engines.sglang import SGLangEngine

from conftest import make_pair, make_spec

ENGINE = ReferenceEngine()


def test_argv_runs_diffbench_serve_with_this_python() -> None:
    pair = make_pair("diffusers", model="/models/tiny-flux", frameworks={"diffusers": {"serve_args": "--device cpu"}})
    assert ENGINE.command(make_spec(pair, port=31000)) == [
        sys.executable, "-m", "diffbench", "serve", "--model", "/models/tiny-flux",
        "--host", "127.0.0.1", "--port", "31000", "--device", "cpu"]
    assert ENGINE.side_ports(pair) == ()


def test_any_gpu_count_of_one_host() -> None:
    # Given several GPUs, the server spreads its pipeline's models over them (device_map="balanced").
    assert ENGINE.gpu_problem(make_pair("diffusers")) is None
    assert ENGINE.gpu_problem(make_pair("diffusers", num_gpus=2)) is None
    assert "more than one host has" in ENGINE.gpu_problem(make_pair("diffusers", num_gpus=16))


@pytest.mark.parametrize("task", ["text-to-image", "image-edit", "text-to-video", "image-to-video",
                                  "text-image-to-video"])
def test_requests_are_sglangs(task: str) -> None:
    image = None if task in {"text-to-image", "text-to-video"} else b"png"
    ours = ENGINE.request(make_pair("diffusers", task=task, seed=1), "org/model", image, Path("/d.json"))
    theirs = SGLangEngine().request(make_pair("sglang", task=task, seed=1), "org/model", image, Path("/d.json"))
    assert ours == theirs


def test_engines_are_listed_by_framework() -> None:
    assert {name: type(engine()).__name__ for name, engine in ENGINES.items()} == {
        "sglang": "SGLangEngine", "vllm-omni": "VllmOmniEngine", "diffusers": "ReferenceEngine",
        "comfyui": "ComfyUIEngine", "lightx2v": "LightX2VEngine"}


def test_it_runs_with_diffbenchs_own_python_unless_a_build_names_another(tmp_path) -> None:
    """A build of the reference engine is a Python environment holding diffbench: its `python` serves."""
    own = make_pair("diffusers", frameworks={"diffusers": {}})
    built = make_pair("diffusers", frameworks={"diffusers": {"python": str(tmp_path / "bin" / "python")}})
    venv = make_pair("diffusers", frameworks={"diffusers": {"pip": "diffbench-fork.whl"}})
    assert ReferenceEngine().command(make_spec(own))[0] == sys.executable
    # The Python named, whatever its file is called; a pip build's venv's own `python`.
    assert ReferenceEngine().command(make_spec(built))[:3] == [str(tmp_path / "bin" / "python"), "-m", "diffbench"]
    command = ReferenceEngine().command(make_spec(venv))
    assert EngineEnvironment(tmp_path / "venv" / "bin" / "python").argv(command)[0] == str(tmp_path / "venv/bin/python")
