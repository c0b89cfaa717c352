"""Hardware canary: a short fixed micro-benchmark per GPU before a night's measurements.

The probe (canary_probe.py) runs with the engine's own interpreter, since that torch is the one the night's
servers use. A reading well below the same GPU's own history marks that GPU's results of the night as suspect.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from diffbench.errors import EnvironmentFailed

PROBE = Path(__file__).with_name("canary_probe.py")
STDERR_TAIL_LINES = 15
# (word in a verdict, CanaryReading field, unit)
METRICS = (("matmul", "matmul_tflops", "TFLOP/s"), ("bandwidth", "bandwidth_gbs", "GB/s"))


@dataclass(frozen=True)
class CanaryReading:
    """One canary run on one device of one host; gpu is -1 for the CPU."""

    host: str
    gpu: int
    device_name: str
    matmul_tflops: float
    bandwidth_gbs: float
    seconds: float


def _device_label(gpu: int) -> str:
    """How a verdict or an error names the device."""
    return "CPU" if gpu < 0 else f"GPU {gpu}"


def run_probe(python: Path, host: str, gpu: int, timeout_s: float = 120) -> CanaryReading:
    """Run the canary on `gpu` (-1: the CPU) with interpreter `python`; `host` labels the reading.

    The GPU is given to the probe as servers get theirs, through CUDA_VISIBLE_DEVICES, so the canary
    measures the very device that the night's results of that GPU come from.
    Raises EnvironmentFailed, naming the device and ending with the probe's stderr, when it yields no reading.
    """
    env = dict(os.environ)
    if gpu >= 0:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    argv = [str(python), str(PROBE), "--device", "cpu" if gpu < 0 else "cuda:0"]
    label = _device_label(gpu)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentFailed(f"{label} canary did not finish within {timeout_s:g} s with {python}"
                                f"{_tail(exc.stderr)}") from exc
    except OSError as exc:
        raise EnvironmentFailed(f"{label} canary could not start {python}: {exc}") from exc
    if done.returncode != 0:
        raise EnvironmentFailed(f"{label} canary failed with exit code {done.returncode} with {python}"
                                f"{_tail(done.stderr)}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
        matmul, bandwidth, seconds = (float(data[key]) for key in ("matmul_tflops", "bandwidth_gbs", "seconds"))
        # The torch that ran it is part of the device's identity: another cuBLAS is another history.
        return CanaryReading(host, gpu, f"{data['name']} (torch {data['torch']})", matmul, bandwidth, seconds)
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise EnvironmentFailed(f"{label} canary printed no reading with {python} ({exc!r}); stdout: "
                                f"{done.stdout.strip()[-500:]!r}{_tail(done.stderr)}") from None


def _tail(stderr: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even from a text-mode run.
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    lines = text.strip().splitlines()[-STDERR_TAIL_LINES:]
    return "\n--- probe stderr tail ---\n" + "\n".join(lines) if lines else " (no stderr)"


def judge(reading: CanaryReading, history: list[CanaryReading], drop: float = 0.15,
          min_history: int = 3) -> str | None:
    """None if `reading` is in line with the earlier readings of its device, else a sentence on what dropped.

    A device's history is the readings of the same host, GPU and device name (a swapped card starts afresh).
    A metric is suspect below (1 - drop) x its median; with fewer than `min_history` readings nothing is judged,
    since a median of one or two nights says little.
    """
    own = [r for r in history if (r.host, r.gpu, r.device_name) == (reading.host, reading.gpu, reading.device_name)]
    if len(own) < min_history:
        return None
    drops = []
    for word, field, unit in METRICS:
        value = getattr(reading, field)
        median = statistics.median([getattr(r, field) for r in own])
        if value < (1 - drop) * median:
            drops.append(f"{word} {_figure(value)} {unit}, {100 * (1 - value / median):.0f} % below "
                         f"its median {_figure(median)} {unit}")
    if not drops:
        return None
    nights = f"{len(own)} earlier night{'s' if len(own) > 1 else ''}"
    return f"{_device_label(reading.gpu)} canary: {'; '.join(drops)} of {nights}"


def _figure(value: float) -> str:
    # Whole numbers for GPU figures (412 TFLOP/s); two digits for a CPU's small ones (0.23 TFLOP/s).
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
