"""GPU telemetry: arithmetic on recorded traces (expected values worked out by hand), and sampling."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from diffbench.telemetry import THROTTLING, Point, Sampler, Telemetry, reason_names, summarize, throttled

TRACES = Path(__file__).resolve().parent / "fixtures" / "telemetry"


def load(name: str) -> tuple[list[Point], list[tuple[float, float]], int]:
    trace = json.loads((TRACES / name).read_text())
    return [Point(**p) for p in trace["points"]], [tuple(w) for w in trace["windows"]], trace["outputs"]


def test_one_gpu_energy_from_its_counter() -> None:
    points, windows, outputs = load("h200_1gpu.json")
    telemetry = summarize(points, windows, outputs, None)

    assert telemetry.available and telemetry.reason is None
    assert telemetry.gpus == [0] and telemetry.points == 40
    # The counter rises 60 J per 0.1 s step through request 0 and 64 J through request 1; each window
    # starts and ends halfway between readings, so it spans 15 steps: 900 J + 960 J.
    assert telemetry.energy_source == "counter"
    assert telemetry.energy_j == pytest.approx(1860.0, rel=1e-9)
    assert telemetry.energy_j_per_output == pytest.approx(930.0, rel=1e-9)
    # 15 readings per window, averaging 600 W and 640 W.
    assert telemetry.mean_power_w == pytest.approx(620.0)
    assert telemetry.mean_utilization_pct == pytest.approx((28 * 100 + 2 * 97) / 30)
    assert telemetry.sm_clock_mhz == pytest.approx((27 * 1980 + 3 * 1965) / 30)
    assert telemetry.peak_memory_mb == 84960.25
    # Idle readings (also one inside request 0) are not throttling.
    assert telemetry.throttle_reasons == [] and telemetry.throttled_requests == []


def test_two_gpus_without_one_counter_integrate_power() -> None:
    points, windows, outputs = load("h200_2gpu_throttled.json")
    telemetry = summarize(points, windows, outputs, None)

    assert telemetry.gpus == [0, 1] and telemetry.points == 40
    # GPU 1 has no counter, so both GPUs' power is integrated. Request 0 on GPU 0: at 50.15 s power is
    # halfway from 80 to 500 W (290 W): 0.05 s * (290 + 500) / 2 + 0.6 s * 500 + the same at the end
    # = 19.75 + 300 + 19.75 = 339.5 J. Likewise GPU 0 request 1: 20.5 + 312 + 20.5 = 353 J;
    # GPU 1: 18.9375 + 288 + 18.9375 = 325.875 J and 19.6875 + 300 + 19.6875 = 339.375 J.
    assert telemetry.energy_source == "power"
    assert telemetry.energy_j == pytest.approx(339.5 + 353 + 325.875 + 339.375, rel=1e-9)
    assert telemetry.energy_j_per_output == pytest.approx(1357.75 / 2, rel=1e-9)
    # GPU 0: 7 readings at 500 W, 7 at 520 W; GPU 1: 480 W and 500 W.
    assert telemetry.mean_power_w == pytest.approx(510 + 490)
    # Round 51.3 s: 71200 + 68500; each GPU's own peak summed would be 71200 + 69100.
    assert telemetry.peak_memory_mb == 139700.0
    assert telemetry.mean_utilization_pct == pytest.approx((26 * 100 + 96 + 98) / 28)
    assert telemetry.sm_clock_mhz == pytest.approx((25 * 1980 + 2 * 1755 + 1890) / 28)
    # The power brake at 51.9 s is after the last request, the applications clocks at 50.5 s no throttling.
    assert telemetry.throttle_reasons == ["sw_power_cap", "sw_thermal"]
    assert telemetry.throttled_requests == [1]
    assert not throttled(points, windows[0]) and throttled(points, windows[1])


def test_reason_names() -> None:
    assert reason_names(0x4 | 0x8 | 0x20 | 0x40 | 0x80) == [
        "sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "power_brake"]
    assert reason_names(pynvml.nvmlClocksThrottleReasonGpuIdle
                        | pynvml.nvmlClocksThrottleReasonApplicationsClocksSetting) == []
    assert THROTTLING == 0xE8, "the power cap is reported, not flagged"


def test_json_round_trip() -> None:
    points, windows, outputs = load("h200_2gpu_throttled.json")
    telemetry = summarize(points, windows, outputs, None)
    assert Telemetry(**json.loads(json.dumps(telemetry.to_json()))) == telemetry
    absent = summarize([], [], 1, "no GPUs (CPU run)")
    assert Telemetry(**json.loads(json.dumps(absent.to_json()))) == absent


def test_without_nvml_nothing_is_sampled() -> None:
    """This machine has no NVIDIA driver."""
    with Sampler((0,), interval_s=0.01) as sampler:
        pass
    assert sampler.absent is not None and "NVML" in sampler.absent
    assert sampler.points == []
    telemetry = summarize(sampler.points, [(0.0, 1.0)], 1, sampler.absent)
    assert telemetry == Telemetry(available=False, reason=sampler.absent)
    assert telemetry.energy_j is None and telemetry.gpus == [] and telemetry.throttled_requests == []


def test_without_gpus_nothing_is_sampled() -> None:
    with Sampler(()) as sampler:
        pass
    assert sampler.absent == "no GPUs (CPU run)" and sampler.points == []


def test_sampler_reads_each_gpu_each_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stand-in NVML of a pre-R535 driver: rounds at enter, every interval and at exit; unsupported fields
    are None."""
    calls: list[str] = []
    energy = {0: 1000, 1: 5000}

    def not_supported(handle: int) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def function_not_found(handle: int) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    def throttle_reasons(handle: int) -> int:
        return not_supported(handle) if handle == 1 else pynvml.nvmlClocksThrottleReasonSwPowerCap

    def energy_mj(handle: int) -> int:
        if handle == 1:
            return not_supported(handle)
        energy[handle] += 100
        return energy[handle]

    fake = {
        "nvmlInit": lambda: calls.append("init"),
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=2048 * 1024 * 1024),
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=87),
        "nvmlDeviceGetPowerUsage": lambda h: 612_500,
        "nvmlDeviceGetClockInfo": lambda h, clock: 1980 if clock == pynvml.NVML_CLOCK_SM else 0,
        "nvmlDeviceGetCurrentClocksEventReasons": function_not_found,
        "nvmlDeviceGetCurrentClocksThrottleReasons": throttle_reasons,
        "nvmlDeviceGetTotalEnergyConsumption": energy_mj,
    }
    for name, stand_in in fake.items():
        monkeypatch.setattr(pynvml, name, stand_in)

    with Sampler((0, 1), interval_s=0.02) as sampler:
        time.sleep(0.1)
    assert calls == ["init", "shutdown"] and sampler.absent is None
    rounds = sorted({p.t for p in sampler.points})
    assert len(rounds) >= 3 and len(sampler.points) == 2 * len(rounds)
    first = sampler.points[0]
    assert first == Point(rounds[0], 0, 2048.0, 87.0, 612.5, 1980.0, 0x4, 1100)
    assert {(p.throttle_reasons, p.energy_mj) for p in sampler.points if p.gpu == 1} == {(None, None)}
    telemetry = summarize(sampler.points, [(rounds[0], rounds[-1])], 1, None)
    assert telemetry.energy_source == "power"
    assert telemetry.energy_j == pytest.approx(2 * 612.5 * (rounds[-1] - rounds[0]))


def test_a_power_capped_request_is_reported_but_not_flagged() -> None:
    capped, hot = pynvml.nvmlClocksThrottleReasonSwPowerCap, pynvml.nvmlClocksThrottleReasonHwThermalSlowdown
    points = [Point(t, 0, 1000.0, 100.0, 700.0, 1755.0, capped | (hot if t == 3.0 else 0), None)
              for t in (0.0, 1.0, 2.0, 3.0)]
    telemetry = summarize(points, [(0.5, 1.5), (2.5, 3.5)], 2, None)
    assert telemetry.throttle_reasons == ["hw_thermal", "sw_power_cap"]
    assert telemetry.throttled_requests == [1]
