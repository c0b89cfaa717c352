"""vLLM-Omni: `vllm serve --omni`, with synchronous video generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffbench import client
from diffbench.cases import Pair
from diffbench.engines.base import (
    Engine,
    ServerSpec,
    flag_value,
    form_fields,
    generation_fields,
    image_part,
    parallel_degree,
)

# vllm_omni/diffusion/data.py: world = dp × (pp × tp × sp × cfg), sp = allgather, else ulysses × ring;
# `--num-gpus` sets the world and dp follows from it, else dp is 1.
PARALLEL_FLAGS = {
    "pp": ("--pipeline-parallel-size", "-pp"),
    "tp": ("--tensor-parallel-size", "-tp"),
    "ulysses": ("--ulysses-degree", "--usp"),
    "ring": ("--ring-degree", "--ring"),
    "cfg": ("--cfg-parallel-size",),
}
ALLGATHER_FLAG = "--allgather-degree"
WORLD_FLAG = "--num-gpus"
# /v1/videos/sync gives up after this many seconds (default 600) and answers 504.
SYNC_TIMEOUT_ENV = "VLLM_OMNI_VIDEO_SYNC_TIMEOUT"


def stage_ms(durations: dict[str, Any]) -> dict[str, float]:
    """Stage durations in ms: vLLM-Omni's `*_ms` keys are ms already, the others (`ar_stage_N`) seconds."""
    return {name: float(value) * (1 if name.endswith("_ms") else 1000) for name, value in durations.items()}


class VllmOmniEngine(Engine):
    """vLLM-Omni; its parallelism is given explicitly in serve_args, never derived."""

    name = "vllm-omni"
    package = "vllm-omni"

    def command(self, spec: ServerSpec) -> list[str]:
        return ["vllm", "serve", spec.model_path, "--omni", "--host", spec.host, "--port", str(spec.port),
                *spec.pair.options.serve_args]

    def parsed_args(self, argv: list[str]) -> list[str] | None:
        return argv[1:]  # `serve M --omni ...`, after `vllm`

    def environment(self, spec: ServerSpec) -> dict[str, str]:
        # Our own deadlines decide when a request is abandoned: the server's sync timeout must not come first.
        longest_s = max(p.deadlines.request_s for p in spec.pairs)
        return {SYNC_TIMEOUT_ENV: f"{longest_s:g}"} | super().environment(spec)

    def gpu_problem(self, pair: Pair) -> str | None:
        if problem := super().gpu_problem(pair):
            return problem
        if flag_value(pair.options.serve_args, "--data-parallel-size", "-dp") is not None:
            return "vllm serve --omni refuses --data-parallel-size; --num-gpus sets the data-parallel degree"
        args = pair.options.serve_args
        flags = PARALLEL_FLAGS
        if (allgather := flag_value(args, ALLGATHER_FLAG)) and allgather.isdigit() and int(allgather) > 1:
            flags = {k: v for k, v in PARALLEL_FLAGS.items() if k not in ("ulysses", "ring")} | {
                "allgather": (ALLGATHER_FLAG,)}
        degree, factors = parallel_degree(args, flags)
        spelled = " × ".join(factors) or "no parallel flags"
        world = flag_value(args, WORLD_FLAG)
        if world is not None and world.isdigit():
            if int(world) != pair.num_gpus:
                return f"serve_args say {WORLD_FLAG} {world}, but it gets {pair.num_gpus}"
            return f"{WORLD_FLAG} {world} is not a multiple of {spelled} ({degree})" if int(world) % degree else None
        if degree != pair.num_gpus:
            return (f"serve_args use {degree} GPU(s) ({spelled}), but it gets {pair.num_gpus}; "
                    f"vllm-omni derives nothing from a GPU count unless {WORLD_FLAG} is given")
        return None

    def endpoint(self, pair: Pair) -> str:
        if pair.case.is_video:
            # The sync endpoint returns the video itself: no polling, so no quantised latency.
            return "/v1/videos/sync"
        return "/v1/images/edits" if pair.case.task == "image-edit" else "/v1/images/generations"

    def request(self, pair: Pair, model: str, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        case = pair.case
        path = self.endpoint(pair)
        if case.is_video:
            files = {"input_reference": image_part(image)} if case.needs_image else None
            return client.Request(path, "video", data=form_fields(generation_fields(pair, model)), files=files)
        # Image responses carry no inference time; stage metrics carry the server's generation time.
        fields = generation_fields(pair, model, return_stage_metrics=True)
        if case.task == "image-edit":
            return client.Request(path, "image", data=form_fields(fields), files={"image": image_part(image)})
        return client.Request(path, "image", json=fields)

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        headers = output.headers
        if headers.get("x-inference-time-s") is not None:
            peak = headers.get("x-peak-memory-mb")
            return client.ServerTiming(float(headers["x-inference-time-s"]), "response",
                                       stage_ms(json.loads(headers.get("x-stage-durations") or "{}")),
                                       peak_reserved_mb=float(peak) if peak is not None else None)
        metrics = output.body.get("metrics") or {}
        peak = metrics.get("peak_memory_mb")  # torch's max_memory_reserved in vLLM-Omni's runner
        generation_ms = [float(stage["stage_gen_time_ms"]) for stage in (metrics.get("stage_metrics") or {}).values()
                         if isinstance(stage, dict) and stage.get("stage_gen_time_ms") is not None]
        return client.ServerTiming(
            sum(generation_ms) / 1000 if generation_ms else None, "response" if generation_ms else "none",
            stage_ms(metrics.get("stage_durations") or {}), peak_reserved_mb=float(peak) if peak is not None else None,
        )
