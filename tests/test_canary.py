"""The hardware canary: the real probe on the CPU, its failures, and the verdict on a reading against its history."""

from __future__ import annotations

import ast
import stat
import sys
from pathlib import Path

import pytest

from diffbench.canary import PROBE, CanaryReading, judge, run_probe
from diffbench.errors import EnvironmentFailed


def fake_python(tmp_path: Path, script: str) -> Path:
    """An 'interpreter' that is a shell script, to play a broken engine environment."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def reading(matmul: float = 500.0, bandwidth: float = 4000.0, gpu: int = 0, host: str = "h1",
            name: str = "NVIDIA H200") -> CanaryReading:
    return CanaryReading(host, gpu, name, matmul, bandwidth, 3.0)


def test_the_real_probe_measures_the_cpu() -> None:
    got = run_probe(Path(sys.executable), "ci", -1)
    assert (got.host, got.gpu) == ("ci", -1) and got.device_name
    assert got.matmul_tflops > 0 and got.bandwidth_gbs > 0 and 0 < got.seconds < 30


def test_the_probe_needs_only_the_stdlib_and_torch() -> None:
    tree = ast.parse(PROBE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"torch"}


def test_a_gpu_this_host_lacks_fails_naming_it() -> None:
    with pytest.raises(EnvironmentFailed) as caught:
        run_probe(Path(sys.executable), "ci", 7)
    message = str(caught.value)
    assert message.startswith("GPU 7 canary failed with exit code 1")
    assert "sees 0 CUDA devices (CUDA_VISIBLE_DEVICES=7)" in message


def test_the_gpu_is_given_as_servers_get_theirs(tmp_path: Path) -> None:
    python = fake_python(tmp_path, 'printf \'{"name": "%s %s", "torch": "2.13.0", "matmul_tflops": 1, '
                                   '"bandwidth_gbs": 2, "seconds": 3}\\n\' "$CUDA_VISIBLE_DEVICES" "$*"')
    got = run_probe(python, "h1", 3)
    assert got == CanaryReading("h1", 3, f"3 {PROBE} --device cuda:0 (torch 2.13.0)", 1.0, 2.0, 3.0)


@pytest.mark.parametrize(("script", "expected"), [
    ("echo 'ModuleNotFoundError: No module named torch' >&2; exit 1",
     "GPU 2 canary failed with exit code 1 with {python}\n--- probe stderr tail ---\n"
     "ModuleNotFoundError: No module named torch"),
    ("echo 'warming up'; echo 'almost' >&2",
     "GPU 2 canary printed no reading with {python} (JSONDecodeError("),
    ('echo \'{"name": "x"}\'', "GPU 2 canary printed no reading with {python} (KeyError('matmul_tflops'))"),
    ("echo 'loading' >&2; exec sleep 10", "GPU 2 canary did not finish within 0.5 s with {python}\n"
                                          "--- probe stderr tail ---\nloading"),
])
def test_a_broken_environment_fails_with_the_device_and_stderr(tmp_path: Path, script: str, expected: str) -> None:
    python = fake_python(tmp_path, script)
    with pytest.raises(EnvironmentFailed) as caught:
        run_probe(python, "h1", 2, timeout_s=0.5)
    assert str(caught.value).startswith(expected.format(python=python))


def test_a_missing_interpreter_fails_naming_the_device(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentFailed, match="CPU canary could not start .*nowhere"):
        run_probe(tmp_path / "nowhere", "h1", -1)


HISTORY = [reading(520, 4100), reading(530, 4000), reading(540, 3900), reading(500, 4200), reading(560, 4000),
           reading(530, 4050), reading(525, 3950)]


def test_a_reading_in_line_with_its_history_is_fine() -> None:
    assert judge(reading(490, 3600), HISTORY) is None  # 8 % and 10 % below: within the 15 % allowed


def test_too_little_history_judges_nothing() -> None:
    assert judge(reading(100, 100), HISTORY[:2]) is None
    assert judge(reading(100, 100), HISTORY[:2], min_history=2) is not None


def test_only_the_same_host_gpu_and_card_count_as_history() -> None:
    others = [reading(100, 100, gpu=1), reading(100, 100, host="h2"), reading(100, 100, name="NVIDIA H100")] * 3
    assert judge(reading(100, 100), others) is None
    assert judge(reading(500, 4000), HISTORY + others) is None


def test_a_matmul_drop_is_suspect() -> None:
    assert judge(reading(412, 4000), HISTORY) == (
        "GPU 0 canary: matmul 412 TFLOP/s, 22 % below its median 530 TFLOP/s of 7 earlier nights")


def test_a_bandwidth_drop_is_suspect() -> None:
    assert judge(reading(530, 3000), HISTORY[:3], drop=0.2) == (
        "GPU 0 canary: bandwidth 3000 GB/s, 25 % below its median 4000 GB/s of 3 earlier nights")


def test_both_drops_are_named() -> None:
    cpu = [reading(0.25, 27, gpu=-1, name="x86_64")] * 4
    assert judge(reading(0.1, 13.4, gpu=-1, name="x86_64"), cpu) == (
        "CPU canary: matmul 0.1 TFLOP/s, 60 % below its median 0.25 TFLOP/s; "
        "bandwidth 13 GB/s, 50 % below its median 27 GB/s of 4 earlier nights")
