"""Runs one generation on a loaded diffusers pipeline and accounts for it like SGLang does."""

from __future__ import annotations

import functools
import inspect
import io
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoPipelineForImage2Image, DiffusionPipeline
from PIL import Image

import diffbench
from diffbench import media, perf_dump
from diffbench.reference.stage_clock import StageClock

DEFAULT_FPS = 16
EDIT_STRENGTH = 0.8


class BadRequest(ValueError):
    """A request this model cannot serve as asked; the server answers 400."""


@dataclass(frozen=True)
class Generation:
    """What the client asked for, already parsed."""

    prompt: str
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    num_frames: int | None = None
    fps: int | None = None
    max_sequence_length: int | None = None
    image: bytes | None = None
    perf_dump_path: str | None = None


@dataclass(frozen=True)
class Result:
    """An encoded output with the server-side account of it."""

    content: bytes
    inference_time_s: float
    peak_memory_mb: float
    perf: dict[str, Any]


@functools.cache
def _parameters(pipeline_class: type) -> frozenset[str]:
    """What a pipeline's call takes; read once per class, as it costs ~50 µs outside the inference time."""
    return frozenset(inspect.signature(pipeline_class.__call__).parameters)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class PipelineRunner:
    """One pipeline on the CPU or on every visible GPU; `run` must not be called concurrently.

    With several GPUs visible (a server given several), diffusers' `balanced` device map spreads
    the pipeline's models over them.
    """

    def __init__(self, model_dir: str, device: str = "auto", dtype: str = "auto", step_delay_s: float = 0.0) -> None:
        self.model = model_dir
        self.step_delay_s = step_delay_s
        self.device = pick_device(device)
        on_gpu = self.device.type == "cuda"
        if dtype == "auto":
            dtype = "bfloat16" if on_gpu else "float32"
        self.dtype = getattr(torch, dtype)
        self.devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if on_gpu else [self.device]
        if len(self.devices) > 1:
            self.pipeline = DiffusionPipeline.from_pretrained(model_dir, dtype=self.dtype, device_map="balanced")
        else:
            self.pipeline = DiffusionPipeline.from_pretrained(model_dir, dtype=self.dtype).to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.is_video = "num_frames" in _parameters(type(self.pipeline))
        spatial = getattr(self.pipeline, "vae_scale_factor_spatial", None) or self.pipeline.vae_scale_factor
        # Latents are packed or patchified 2x2, so sizes are multiples of twice the VAE factor.
        self.size_multiple = int(spatial) * 2
        self.frame_step = int(getattr(self.pipeline, "vae_scale_factor_temporal", 1))
        self.clock = StageClock(self.pipeline, self.devices)
        self._edit_pipeline: Any = None

    def _edit(self) -> Any:
        if self.is_video:
            raise BadRequest(f"model {self.model} generates video and takes no input image")
        if self._edit_pipeline is None:
            try:
                self._edit_pipeline = AutoPipelineForImage2Image.from_pipe(self.pipeline)
            except ValueError as exc:
                raise BadRequest(f"model {self.model} has no image-to-image variant: {exc}") from exc
            self._edit_pipeline.set_progress_bar_config(disable=True)
        return self._edit_pipeline

    def check(self, request: Generation, video: bool) -> None:
        """Refuse, before any work, what this model cannot produce."""
        if video != self.is_video:
            kind = "video" if self.is_video else "image"
            raise BadRequest(f"model {self.model} generates {kind}; use the {kind} endpoint")
        for name, value in (("width", request.width), ("height", request.height)):
            if value is not None and value % self.size_multiple:
                raise BadRequest(f"{name} {value} is not a multiple of {self.size_multiple}")
        if request.num_frames is not None and (request.num_frames - 1) % self.frame_step:
            raise BadRequest(f"num_frames {request.num_frames} must be {self.frame_step}k+1")
        if video and request.image is not None:
            raise BadRequest(f"model {self.model} is text-to-video and takes no input image")

    def _arguments(self, request: Generation) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "width": request.width,
            "height": request.height,
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "negative_prompt": request.negative_prompt,
            "max_sequence_length": request.max_sequence_length,
        }
        if self.is_video:
            arguments |= {"num_frames": request.num_frames, "output_type": "np"}
        if request.seed is not None:
            arguments["generator"] = torch.Generator(device="cpu").manual_seed(request.seed)
        return {k: v for k, v in arguments.items() if v is not None}

    def run(self, request: Generation) -> Result:
        """Generate and encode; the perf document goes with the result, for the server to write."""
        pipeline, arguments = self.pipeline, self._arguments(request)
        if request.image is not None:
            pipeline = self._edit()
            arguments |= {"image": Image.open(io.BytesIO(request.image)).convert("RGB"), "strength": EDIT_STRENGTH}
        accepted = _parameters(type(pipeline))
        arguments = {k: v for k, v in arguments.items() if k in accepted}
        self.clock.reset()
        started = self.clock.now()
        output = pipeline(**arguments, callback_on_step_end=self._on_step_end())
        total_s = self.clock.now() - started
        content = self._encode(output, request.fps or DEFAULT_FPS)
        perf = self._perf_document(total_s)
        peak = max(c["peak_reserved_mb"] for c in perf["memory_checkpoints"].values())
        return Result(content, total_s, peak, perf)

    def _on_step_end(self) -> Callable[..., dict[str, Any]]:
        """The clock's step callback, after the `step_delay_s` sleep that counts as part of the step."""
        close_step = self.clock.step_end_callback()
        if not self.step_delay_s:
            return close_step

        def delayed(*args: Any) -> dict[str, Any]:
            time.sleep(self.step_delay_s)
            return close_step(*args)

        return delayed

    def _encode(self, output: Any, fps: int) -> bytes:
        if self.is_video:
            frames = (np.clip(output.frames[0], 0, 1) * 255).round().astype(np.uint8)
            return media.encode_video(frames, fps)
        return media.encode_png(np.asarray(output.images[0].convert("RGB")))

    def _perf_document(self, total_s: float) -> dict[str, Any]:
        clock = self.clock
        return {
            "timestamp": time.time(),
            "request_id": uuid.uuid4().hex,
            "commit_hash": f"diffbench-{diffbench.__version__}",
            "tag": perf_dump.TAG,
            "total_duration_ms": total_s * 1000,
            "steps": [{"name": name, "duration_ms": ms} for name, ms in clock.stage_ms.items()],
            "denoise_steps_ms": [{"step": i, "duration_ms": ms} for i, ms in enumerate(clock.step_ms)],
            "memory_checkpoints": clock.checkpoints,
            "meta": {"model": self.model, "devices": [str(d) for d in self.devices], "dtype": str(self.dtype)},
        }
