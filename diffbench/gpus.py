"""The GPUs of this host: what they are, who holds them, and whether their memory came back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pynvml

from diffbench.errors import ConfigError

MB = 1024 * 1024
# Memory a driver keeps on an idle GPU; anything above it after a stop belongs to a leftover.
IDLE_MEMORY_MB = 1024


@dataclass(frozen=True)
class Hardware:
    """What the host offers for measurements."""

    gpu_ids: tuple[int, ...]
    gpu_model: str
    driver: str


def _nvml_hardware() -> Hardware | None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        model = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)) if count else "none"
        return Hardware(tuple(range(count)), str(model), str(pynvml.nvmlSystemGetDriverVersion()))
    finally:
        pynvml.nvmlShutdown()


def detect(allowed: list[int] | None = None) -> Hardware:
    """This host's GPUs (limited to `allowed` when given); a host without NVML has none."""
    found = _nvml_hardware() or Hardware((), "cpu", "none")
    if allowed is None:
        return found
    return Hardware(tuple(i for i in found.gpu_ids if i in allowed) or tuple(allowed), found.gpu_model, found.driver)


def used_memory_mb(gpu_ids: tuple[int, ...]) -> dict[int, float]:
    """Memory in use per GPU; empty without NVML."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        return {i: pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used / MB for i in gpu_ids}
    finally:
        pynvml.nvmlShutdown()


def wait_memory_released(gpu_ids: tuple[int, ...], timeout_s: float = 60.0) -> dict[int, float]:
    """Wait until the GPUs hold no more than idle memory; return what is still held after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = {i: mb for i, mb in used_memory_mb(gpu_ids).items() if mb > IDLE_MEMORY_MB}
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


class GpuPool:
    """Hands out GPU ids to servers running side by side on one host.

    Without GPUs there is a single slot, so CPU servers run one at a time and do not
    compete for cores while they are measured.
    """

    def __init__(self, gpu_ids: tuple[int, ...]) -> None:
        self.free = list(gpu_ids)
        self.total = len(gpu_ids)
        self._cpu_slot_taken = False
        self._changed = threading.Condition()

    def refusal(self, count: int) -> ConfigError | None:
        """Why `count` GPUs can never be handed out here, or None."""
        if self.total and count > self.total:
            return ConfigError([f"needs {count} GPUs, this host offers {self.total}"])
        return None

    @contextmanager
    def take(self, count: int) -> Iterator[tuple[int, ...]]:
        """Block until `count` GPUs are free and hold them for the `with` block."""
        if error := self.refusal(count):
            raise error
        with self._changed:
            self._changed.wait_for(lambda: len(self.free) >= count if self.total else not self._cpu_slot_taken)
            taken = tuple(self.free[:count]) if self.total else ()
            self.free = self.free[count:] if self.total else self.free
            self._cpu_slot_taken = not self.total
        try:
            yield taken
        finally:
            with self._changed:
                self.free = sorted(self.free + list(taken))
                self._cpu_slot_taken = False
                self._changed.notify_all()
