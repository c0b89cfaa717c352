"""vLLM-Omni: `vllm serve --omni`, with synchronous video generation."""

from __future__ import annotations

import json
from pathlib import Path

from diffbench import client
from diffbench.cases import Pair
from diffbench.engines.base import Engine, ServerSpec, form_fields, generation_fields, image_part, parallel_degree

PARALLEL_FLAGS = {
    "tp": ("--tensor-parallel-size", "-tp"),
    "ulysses": ("--ulysses-degree", "--usp"),
    "ring": ("--ring-degree", "--ring"),
    "cfg": ("--cfg-parallel-size",),
}


class VllmOmniEngine(Engine):
    """vLLM-Omni; its parallelism is given explicitly in serve_args, never derived."""

    name = "vllm-omni"
    package = "vllm-omni"

    def command(self, spec: ServerSpec) -> list[str]:
        return ["vllm", "serve", spec.model_path, "--omni", "--host", spec.host, "--port", str(spec.port),
                *spec.pair.options.serve_args]

    def gpu_problem(self, pair: Pair) -> str | None:
        if problem := super().gpu_problem(pair):
            return problem
        degree, factors = parallel_degree(pair.options.serve_args, PARALLEL_FLAGS)
        if degree != pair.num_gpus:
            spelled = " × ".join(factors) or "no parallel flags"
            return (f"serve_args use {degree} GPU(s) ({spelled}), but it gets {pair.num_gpus}; "
                    "vllm-omni derives nothing from a GPU count")
        return None

    def endpoint(self, pair: Pair) -> str:
        if pair.case.is_video:
            # The sync endpoint returns the video itself: no polling, so no quantised latency.
            return "/v1/videos/sync"
        return "/v1/images/edits" if pair.case.task == "image-edit" else "/v1/images/generations"

    def request(self, spec: ServerSpec, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        case = spec.pair.case
        fields = generation_fields(spec)
        path = self.endpoint(spec.pair)
        if case.is_video:
            files = {"input_reference": image_part(image)} if case.needs_image else None
            return client.Request(path, "video", "sync", data=form_fields(fields), files=files)
        if case.task == "image-edit":
            return client.Request(path, "image", data=form_fields(fields), files={"image": image_part(image)})
        return client.Request(path, "image", json=fields)

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        if output.headers.get("x-inference-time-s") is not None:
            headers = output.headers
            stages = json.loads(headers.get("x-stage-durations") or "{}")
            latency, peak = headers["x-inference-time-s"], headers.get("x-peak-memory-mb")
        else:
            metrics = output.body.get("metrics") or {}
            stages = metrics.get("stage_durations") or {}
            latency = metrics.get("inference_time_s", output.body.get("inference_time_s"))
            peak = metrics.get("peak_memory_mb", output.body.get("peak_memory_mb"))
        if latency is None:
            return client.ServerTiming()
        # vLLM-Omni reports stage durations in seconds.
        stage_ms = {name: float(seconds) * 1000 for name, seconds in stages.items()}
        return client.ServerTiming(float(latency), "response", stage_ms, (), float(peak) if peak is not None else None)
