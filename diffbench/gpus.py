"""The GPUs of this host: what they are, who holds them, and whether their memory came back."""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pynvml

from diffbench.errors import ConfigError
from diffbench.packing import priority

MB = 1024 * 1024
# What a stopped server may leave above the GPU's idle baseline: NVML's reading moves by a few MiB.
IDLE_MARGIN_MB = 128
LOCK_POLL_S = 0.5
# The GPU index that stands for the CPU of a host without GPUs, in canaries and suspects.
CPU_SLOT = -1


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


@dataclass(frozen=True)
class Released:
    """How a stopped server's GPUs came back: seconds until idle, and MiB above idle still held then."""

    seconds: float
    held_mb: dict[int, float]


def wait_memory_released(idle_mb: dict[int, float], timeout_s: float = 60.0) -> Released:
    """Wait until each GPU of `idle_mb` is back to its idle reading (taken when the run started).

    A driver keeps memory on an idle GPU (615 MiB on an H200 where nvidia-smi shows 0), so "idle"
    is each GPU's own baseline, not a fixed figure.
    """
    started = time.monotonic()
    while True:
        held = {i: round(mb - idle_mb[i], 1) for i, mb in used_memory_mb(tuple(idle_mb)).items()
                if mb > idle_mb[i] + IDLE_MARGIN_MB}
        waited = time.monotonic() - started
        if not held or waited > timeout_s:
            return Released(round(waited, 3), held)
        time.sleep(0.05)


@dataclass(frozen=True)
class Hold:
    """One server's time on its GPUs, wall clock: from getting them to giving them back."""

    label: str
    gpus: tuple[int, ...]
    taken_at: float
    released_at: float


@dataclass
class _Waiter:
    """A server waiting for GPUs; `held` is set once its turn came."""

    key: tuple[bool, float, int, int]
    count: int
    held: dict[int | str, int] | None = field(default=None)


class GpuPool:
    """Hands out GPU ids to servers on one host, across threads and flow runs alike.

    Each GPU is a lock file under `lock_dir`, held with flock while a server uses it, so two
    flow runs on one host (two shards, say) never get the same GPU; a crashed holder's locks go
    with its process. Within a run, waiting servers get GPUs by `packing`'s rule: in priority
    order, each that fits the GPUs free now. Without GPUs there is a single CPU slot, so CPU
    servers run one at a time and do not compete for cores while measured. `idle_mb` is each
    GPU's memory reading when the pool was made, at the start of a run: its idle baseline.
    `suspects` are the GPUs (CPU_SLOT: the CPU) the night's canary doubts, with why.
    """

    def __init__(self, gpu_ids: tuple[int, ...], lock_dir: Path) -> None:
        self.gpu_ids = gpu_ids
        self.lock_dir = lock_dir
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.idle_mb = used_memory_mb(gpu_ids)
        self._turns = threading.Condition()
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()
        self.holds: list[Hold] = []
        self.suspects: dict[int, str] = {}

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

    def _dispatch(self) -> None:
        """Start every waiter, in priority order, whose GPUs are free now (`packing.startable`'s rule).

        Free means lockable: GPUs held by another flow run on the host count as taken.
        """
        for waiter in list(self._waiting):
            if (held := self._try_take(waiter.count)) is not None:
                waiter.held = held
                self._waiting.remove(waiter)
        self._turns.notify_all()

    @contextmanager
    def take(self, count: int, estimate_s: float | None = None, label: str = "") -> Iterator[tuple[int, ...]]:
        """Block until `count` GPUs are free and this server's turn has come; hold them for the `with` block.

        `estimate_s` is how long the server is expected to hold them (None: never measured here);
        each hold is kept in `holds` under `label`.
        """
        if error := self.refusal(count):
            raise error
        waiter = _Waiter((*priority(count, estimate_s), next(self._arrivals)), count)
        with self._turns:
            self._waiting.append(waiter)
            self._waiting.sort(key=lambda w: w.key)
            while waiter.held is None:
                self._dispatch()
                if waiter.held is None:
                    self._turns.wait(LOCK_POLL_S)  # woken by a release here, or polling for other runs'
        gpus, taken_at = tuple(sorted(slot for slot in waiter.held if isinstance(slot, int))), time.time()
        try:
            yield gpus
        finally:
            with self._turns:
                self.holds.append(Hold(label, gpus, taken_at, time.time()))
                self._release(waiter.held)
                self._dispatch()
