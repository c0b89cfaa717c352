"""SGLang-Diffusion: `sglang serve`, its OpenAI-style API, and its perf-dump file."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from diffbench import client, perf_dump
from diffbench.cases import Pair
from diffbench.engines.base import (
    Engine,
    ServerSpec,
    flag_enabled,
    flag_value,
    form_fields,
    generation_fields,
    image_part,
    parallel_degree,
)

PARALLEL_FLAGS = {"tp": ("--tp-size",), "cfg": ("--cfg-parallel-size",)}
SEQUENCE_FLAGS = {"ulysses": ("--ulysses-degree",), "ring": ("--ring-degree",)}
# A perf dump is written after the forward pass, before the HTTP answer; it may lag a little.
PERF_DUMP_WAIT_S = 5.0


class SGLangEngine(Engine):
    """SGLang-Diffusion, one process per GPU behind one HTTP server."""

    name = "sglang"
    package = "sglang"
    side_port_offsets: ClassVar[tuple[int, ...]] = (5, 55)
    uses_perf_dump = True

    def command(self, spec: ServerSpec) -> list[str]:
        pair, args = spec.pair, spec.pair.options.serve_args
        argv = ["sglang", "serve", "--model-path", spec.model_path, "--host", spec.host, "--port", str(spec.port)]
        if pair.num_gpus > 1:
            argv += ["--num-gpus", str(pair.num_gpus)]
        # Explicit side ports: implicit ones collided between servers on one host.
        argv += ["--strict-ports", "--master-port", str(spec.port + 5), "--scheduler-port", str(spec.port + 55)]
        argv += args
        if flag_value(args, "--warmup-mode") == "server":
            if pair.case.size and flag_value(args, "--warmup-resolutions") is None:
                argv += ["--warmup-resolutions", pair.case.size]
            if pair.case.is_video and pair.case.num_frames and flag_value(args, "--warmup-num-frames") is None:
                argv += ["--warmup-num-frames", str(pair.case.num_frames)]
        return argv

    def gpu_problem(self, pair: Pair) -> str | None:
        if problem := super().gpu_problem(pair):
            return problem
        args, gpus = pair.options.serve_args, pair.num_gpus
        degree, factors = parallel_degree(args, PARALLEL_FLAGS)
        if flag_enabled(args, "--enable-cfg-parallel"):
            degree, factors = degree * 2, [*factors, "--enable-cfg-parallel (2)"]
        sequence, sequence_factors = parallel_degree(args, SEQUENCE_FLAGS)
        if sequence_factors:
            # With an explicit sequence-parallel split, sglang wants every GPU accounted for.
            total = degree * sequence
            if total != gpus:
                return f"{' × '.join(factors + sequence_factors)} needs {total} GPUs, but it gets {gpus}"
        elif gpus % degree:
            return f"{' × '.join(factors)} needs a multiple of {degree} GPUs, but it gets {gpus}"
        if degree > 1 and gpus == 1:
            return f"{' × '.join(factors)} needs more than one GPU"
        return None

    def endpoint(self, pair: Pair) -> str:
        if pair.case.is_video:
            return "/v1/videos"
        return "/v1/images/edits" if pair.case.task == "image-edit" else "/v1/images/generations"

    def request(self, spec: ServerSpec, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        pair = spec.pair
        fields = generation_fields(spec, perf_dump_path=str(perf_dump_path) if perf_dump_path else None)
        path = self.endpoint(pair)
        output = "video" if pair.case.is_video else "image"
        mode = "poll" if pair.case.is_video else None
        if not pair.case.needs_image:
            return client.Request(path, output, mode, json=fields)
        file_field = "input_reference" if pair.case.is_video else "image"
        return client.Request(
            path, output, mode, data=form_fields(fields), files={file_field: image_part(image)}
        )

    def read_perf_dump(self, path: Path) -> perf_dump.PerfDump | None:
        return perf_dump.read(path, PERF_DUMP_WAIT_S)

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        body = output.body
        peak = body.get("peak_memory_mb")
        if body.get("inference_time_s") is not None:
            return client.ServerTiming(float(body["inference_time_s"]), "response", peak_memory_mb=peak)
        return client.ServerTiming(peak_memory_mb=peak)
