"""Stage and per-step timings of a diffusers pipeline call, taken through module hooks."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch

MB = 1024 * 1024


def memory_checkpoint(devices: list[torch.device]) -> dict[str, float]:
    """Memory now and at peak: torch's CUDA allocator summed over the GPUs, the process RSS on CPU."""
    if devices[0].type == "cuda":
        return {name: sum(read(device) for device in devices) / MB for name, read in (
            ("allocated_mb", torch.cuda.memory_allocated), ("reserved_mb", torch.cuda.memory_reserved),
            ("peak_allocated_mb", torch.cuda.max_memory_allocated),
            ("peak_reserved_mb", torch.cuda.max_memory_reserved))}
    info = psutil.Process().memory_info()
    # ru_maxrss (KiB on Linux) cannot be reset, so a CPU peak covers the whole process life.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"allocated_mb": info.rss / MB, "reserved_mb": info.rss / MB,
            "peak_allocated_mb": peak, "peak_reserved_mb": peak}


class StageClock:
    """Times text encoding, each denoising step and decoding of one pipeline call.

    Hooks are installed once; `reset()` starts a new request. Calls must not overlap.
    """

    def __init__(self, pipeline: Any, devices: list[torch.device]) -> None:
        self.devices = devices
        self.on_gpu = devices[0].type == "cuda"
        self.reset()
        for name in ("text_encoder", "text_encoder_2"):
            encoder = getattr(pipeline, name, None)
            if encoder is not None:
                encoder.register_forward_pre_hook(lambda *_: self._begin("TextEncodingStage"))
                encoder.register_forward_hook(lambda *_: self._end("TextEncodingStage"))
        pipeline.transformer.register_forward_pre_hook(lambda *_: self._step_begin())
        decode = pipeline.vae.decode

        def timed_decode(*args: Any, **kwargs: Any) -> Any:
            self._begin("DecodingStage")
            result = decode(*args, **kwargs)
            self._end("DecodingStage")
            return result

        # Instance attribute: shadows the method for this pipeline's VAE only.
        pipeline.vae.decode = timed_decode

    def reset(self) -> None:
        self.stage_ms: dict[str, float] = {}
        self.step_ms: list[float] = []
        self.checkpoints: dict[str, dict[str, float]] = {}
        self._started: dict[str, float] = {}
        self._step_started: float | None = None
        for device in self.devices if self.on_gpu else ():
            torch.cuda.reset_peak_memory_stats(device)

    def now(self) -> float:
        for device in self.devices if self.on_gpu else ():
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def _begin(self, stage: str) -> None:
        self._started.setdefault(stage, self.now())

    def _end(self, stage: str) -> None:
        started = self._started.pop(stage, None)
        if started is not None:
            self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + (self.now() - started) * 1000
            self.checkpoints[stage] = memory_checkpoint(self.devices)

    def _step_begin(self) -> None:
        # The transformer runs once or more per step (e.g. for guidance); the first call starts it.
        if self._step_started is None:
            self._step_started = self.now()

    def step_end_callback(self) -> Callable[..., dict[str, Any]]:
        """A `callback_on_step_end` that closes the current denoising step."""

        def on_step_end(_pipeline: Any, _step: int, _timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if self._step_started is not None:
                self.step_ms.append((self.now() - self._step_started) * 1000)
                self.stage_ms["DenoisingStage"] = sum(self.step_ms)
                self._step_started = None
                self.checkpoints["DenoisingStage"] = memory_checkpoint(self.devices)
            return callback_kwargs

        return on_step_end
