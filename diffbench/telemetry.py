"""GPU telemetry while a case is measured: NVML readings sampled in a thread, summarized per case."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import reduce
from operator import or_
from typing import Any, Literal, TypeVar

import numpy as np
import pynvml

from diffbench.gpus import MB

T = TypeVar("T")
Window = tuple[float, float]
EnergySource = Literal["counter", "power"]
Series = tuple[np.ndarray, np.ndarray]

# Clock event reasons that slow the GPU; idle and application clocks are choices, not limits.
_REASON_NAMES = {
    pynvml.nvmlClocksThrottleReasonSwPowerCap: "sw_power_cap",
    pynvml.nvmlClocksThrottleReasonHwSlowdown: "hw_slowdown",
    pynvml.nvmlClocksThrottleReasonSwThermalSlowdown: "sw_thermal",
    pynvml.nvmlClocksThrottleReasonHwThermalSlowdown: "hw_thermal",
    pynvml.nvmlClocksThrottleReasonHwPowerBrakeSlowdown: "power_brake",
}
# Those that flag a request: heat and hardware slowdowns. The power cap is a GPU at full load working
# as designed (an H200 at 700 W showed it on every FLUX and Wan request), so it is reported, not flagged.
THROTTLING = reduce(or_, _REASON_NAMES) & ~pynvml.nvmlClocksThrottleReasonSwPowerCap


@dataclass(frozen=True)
class Point:
    """One NVML reading of one GPU; the readings of one sampling round share `t` (time.monotonic).

    A field is None where this GPU does not support it; `energy_mj` counts since the driver loaded.
    """

    t: float
    gpu: int
    memory_used_mb: float | None
    utilization_pct: float | None
    power_w: float | None
    sm_clock_mhz: float | None
    throttle_reasons: int | None
    energy_mj: int | None


def reason_names(mask: int) -> list[str]:
    """Short names of the slowdown reasons (THROTTLING's and the power cap) set in a clock event reasons mask."""
    return [name for bit, name in _REASON_NAMES.items() if mask & bit]


def _supported(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except pynvml.NVMLError_NotSupported:
        return None


def _clock_event_reasons(handle: Any) -> int:
    try:
        return pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
    except (AttributeError, pynvml.NVMLError_FunctionNotFound):
        # Bindings and drivers older than R535 only have the name NVML has since deprecated.
        return pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)


def _read(gpu: int, handle: Any, t: float) -> Point:
    """One reading of one GPU, NVML initialized."""
    return Point(
        t=t,
        gpu=gpu,
        memory_used_mb=_supported(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / MB),
        utilization_pct=_supported(lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        power_w=_supported(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000),
        sm_clock_mhz=_supported(lambda: float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))),
        throttle_reasons=_supported(lambda: _clock_event_reasons(handle)),
        energy_mj=_supported(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
    )


def _shutdown() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass  # the readings are taken; a failing shutdown must not replace the case's own outcome


class Sampler:
    """Reads every GPU of `gpu_ids` each `interval_s` in a daemon thread, for the `with` block.

    One round is read on entering and one on leaving, so even a request shorter than `interval_s`
    has its energy counters read before and after. Without NVML or GPUs nothing is read, and
    `absent` says why. Read `points` after the block.
    """

    def __init__(self, gpu_ids: tuple[int, ...], interval_s: float = 0.1) -> None:
        self.gpu_ids = gpu_ids
        self.interval_s = interval_s
        self.absent: str | None = None
        self.points: list[Point] = []
        self._handles: dict[int, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def __enter__(self) -> Sampler:
        if not self.gpu_ids:
            self.absent = "no GPUs (CPU run)"
            return self
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            self.absent = f"NVML not available: {error}"
            return self
        try:
            self._handles = {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in self.gpu_ids}
        except pynvml.NVMLError as error:
            self.absent = f"NVML cannot read GPUs {list(self.gpu_ids)}: {error}"
        if self._round():
            self._thread.start()
        else:
            _shutdown()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.ident is None:  # never started: NVML was never opened, or already closed
            return
        self._stop.set()
        self._thread.join()
        self._round()
        _shutdown()

    def _round(self) -> bool:
        """Read every GPU once; False (and `absent` says why) once NVML fails: telemetry never fails a case."""
        if self.absent is not None:
            return False
        t = time.monotonic()
        try:
            self.points.extend([_read(i, handle, t) for i, handle in self._handles.items()])
        except pynvml.NVMLError as error:
            self.absent = f"NVML failed while sampling: {error}"
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self._round():
            pass


@dataclass(frozen=True)
class Telemetry:
    """What the GPUs did during a case's measured requests (its windows).

    - `peak_memory_mb`: the highest sum over the GPUs of one round's memory readings, over the whole trace.
    - `mean_utilization_pct`, `sm_clock_mhz`: means over all readings inside the windows, GPUs pooled.
    - `mean_power_w`: the sum over GPUs of each GPU's mean power inside the windows.
    - `energy_j`: over the windows, all GPUs alike: from the energy counters (linearly interpolated
      at each window's start and end) where every GPU's counter has readings around all windows,
      else from power (piecewise linear between readings, integrated over each window); None if neither.
    - `throttle_reasons`: names of the slowdown reasons read inside the windows, power cap included;
      `throttled_requests`: the indices of the windows with a THROTTLING reading.
    """

    available: bool
    reason: str | None = None
    gpus: list[int] = field(default_factory=list)
    points: int = 0
    peak_memory_mb: float | None = None
    mean_utilization_pct: float | None = None
    mean_power_w: float | None = None
    energy_j: float | None = None
    energy_j_per_output: float | None = None
    energy_source: EnergySource | None = None
    sm_clock_mhz: float | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    throttled_requests: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)



def _inside(t: float, window: Window) -> bool:
    return window[0] <= t <= window[1]


def throttled(points: list[Point], window: Window) -> bool:
    """Whether any reading inside `window` had a THROTTLING reason."""
    return any(_inside(p.t, window) and (p.throttle_reasons or 0) & THROTTLING for p in points)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _series(points: list[Point], gpu: int, value: Callable[[Point], float | None]) -> Series:
    pairs = sorted((p.t, v) for p in points if p.gpu == gpu and (v := value(p)) is not None)
    return np.array([t for t, _ in pairs], dtype=float), np.array([v for _, v in pairs], dtype=float)


def _covers(all_series: list[Series], windows: list[Window]) -> bool:
    first, last = min(s for s, _ in windows), max(e for _, e in windows)
    return all(len(ts) > 0 and ts[0] <= first and ts[-1] >= last for ts, _ in all_series)


def _counter_j(series: Series, window: Window) -> float:
    """The counter's rise over `window`, linear between its readings; mJ to J."""
    start, end = np.interp(window, *series)
    return float(end - start) / 1000


def _power_j(series: Series, window: Window) -> float:
    """Trapezoid integral of power over `window`, linear between its readings."""
    ts, _ = series
    knots = np.concatenate([[window[0]], ts[(ts > window[0]) & (ts < window[1])], [window[1]]])
    watts = np.interp(knots, *series)
    return float(np.sum(np.diff(knots) * (watts[1:] + watts[:-1]) / 2))


def _energy(points: list[Point], gpus: list[int], windows: list[Window]) -> tuple[float | None, EnergySource | None]:
    if not gpus or not windows:
        return None, None
    counters = [_series(points, g, lambda p: p.energy_mj) for g in gpus]
    if _covers(counters, windows):
        return sum(_counter_j(s, w) for s in counters for w in windows), "counter"
    powers = [_series(points, g, lambda p: p.power_w) for g in gpus]
    if _covers(powers, windows):
        return sum(_power_j(s, w) for s in powers for w in windows), "power"
    return None, None


def _peak_memory(points: list[Point]) -> float | None:
    rounds: dict[float, float] = defaultdict(float)
    for p in points:
        if p.memory_used_mb is not None:
            rounds[p.t] += p.memory_used_mb
    return max(rounds.values(), default=None)


def summarize(points: list[Point], windows: list[Window], outputs: int, absent: str | None) -> Telemetry:
    """Telemetry of a recorded trace; `windows` are the measured requests' (start, end) monotonic times."""
    if absent is not None:
        return Telemetry(available=False, reason=absent)
    gpus = sorted({p.gpu for p in points})
    inside = [p for p in points if any(_inside(p.t, w) for w in windows)]
    power_means = [m for g in gpus if (m := _mean(p.power_w for p in inside if p.gpu == g)) is not None]
    energy, source = _energy(points, gpus, windows)
    return Telemetry(
        available=True,
        gpus=gpus,
        points=len(points),
        peak_memory_mb=_peak_memory(points),
        mean_utilization_pct=_mean(p.utilization_pct for p in inside),
        # A GPU without power readings would make the sum look lower than it was.
        mean_power_w=sum(power_means) if gpus and len(power_means) == len(gpus) else None,
        energy_j=energy,
        energy_j_per_output=energy / outputs if energy is not None and outputs else None,
        energy_source=source,
        sm_clock_mhz=_mean(p.sm_clock_mhz for p in inside),
        throttle_reasons=sorted({name for p in inside for name in reason_names(p.throttle_reasons or 0)}),
        throttled_requests=[i for i, window in enumerate(windows) if throttled(points, window)],
    )
