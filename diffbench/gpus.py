"""The GPUs of this host: what they are, who holds them, and whether their memory came back."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pynvml

from diffbench.errors import ConfigError

MB = 1024 * 1024
# Memory a driver keeps on an idle GPU; anything above it after a stop belongs to a leftover.
IDLE_MEMORY_MB = 1024
LOCK_POLL_S = 0.5


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
    """Hands out GPU ids to servers on one host, across threads and flow runs alike.

    Each GPU is a lock file under `lock_dir`, held with flock while a server uses it, so two
    flow runs on one host (two shards, say) never get the same GPU; a crashed holder's locks go
    with its process. Without GPUs there is a single CPU slot, so CPU servers run one at a
    time and do not compete for cores while measured.
    """

    def __init__(self, gpu_ids: tuple[int, ...], lock_dir: Path) -> None:
        self.gpu_ids = gpu_ids
        self.lock_dir = lock_dir
        lock_dir.mkdir(parents=True, exist_ok=True)

    def refusal(self, count: int) -> ConfigError | None:
        """Why `count` GPUs can never be handed out here, or None."""
        if self.gpu_ids and count > len(self.gpu_ids):
            return ConfigError([f"needs {count} GPUs, this host offers {len(self.gpu_ids)}"])
        return None

    def _try_take(self, count: int) -> dict[int | str, int] | None:
        """Lock files held for `count` GPUs (or the CPU slot), or None if not all are free now."""
        slots: list[int | str] = list(self.gpu_ids) or ["cpu"]
        needed = count if self.gpu_ids else 1
        held: dict[int | str, int] = {}
        for slot in slots:
            if len(held) == needed:
                break
            fd = os.open(self.lock_dir / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held[slot] = fd
        if len(held) == needed:
            return held
        self._release(held)
        return None

    @staticmethod
    def _release(held: dict[int | str, int]) -> None:
        for fd in held.values():
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextmanager
    def take(self, count: int) -> Iterator[tuple[int, ...]]:
        """Block until `count` GPUs are free and hold them for the `with` block."""
        if error := self.refusal(count):
            raise error
        while (held := self._try_take(count)) is None:
            time.sleep(LOCK_POLL_S)
        try:
            yield tuple(sorted(slot for slot in held if isinstance(slot, int)))
        finally:
            self._release(held)
