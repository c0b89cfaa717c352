"""SGLang-Diffusion: `sglang serve`, its OpenAI-style API, and its perf-dump file."""

from __future__ import annotations

from pathlib import Path

from diffbench import client, perf_dump
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

# sglang 0.5.23 server_args.py: num_gpus = dp × tp × cfg × sp, and sp = ulysses × ring.
REPLICA_FLAGS = {"dp": ("--dp-size", "--dp"), "tp": ("--tp-size",)}
SEQUENCE_FLAGS = {"ulysses": ("--ulysses-degree",), "ring": ("--ring-degree",)}
SP_FLAG = "--sp-degree"
BOOLEAN_VALUES = ("true", "false")
# A perf dump is written after the forward pass, before the HTTP answer; it may lag a little.
PERF_DUMP_WAIT_S = 5.0
BROKER_OFFSET, MASTER_OFFSET, SCHEDULER_OFFSET = 1, 5, 55
# POST /v1/videos answers a job; GET /v1/videos/{id} its state, /content the MP4 once it is completed.
VIDEO_JOB = client.Job("/v1/videos/{id}", lambda job_id, _: f"/v1/videos/{job_id}/content")


def cfg_degree(args: list[str]) -> tuple[int, str | None]:
    """CFG parallelism: `--cfg-parallel-size N` wins over `--enable-cfg-parallel` (which means 2)."""
    size = flag_value(args, "--cfg-parallel-size")
    if size is not None and size.isdigit():
        return int(size), f"--cfg-parallel-size {size}" if int(size) > 1 else None
    if "--enable-cfg-parallel" in (a.partition("=")[0] for a in args):
        value = flag_value(args, "--enable-cfg-parallel")
        if value in (None, "") or value.lower() == "true" or value.startswith("--"):
            return 2, "--enable-cfg-parallel (2)"
    return 1, None


class SGLangEngine(Engine):
    """SGLang-Diffusion, one process per GPU behind one HTTP server."""

    name = "sglang"
    package = "sglang"
    uses_perf_dump = True

    def command(self, spec: ServerSpec) -> list[str]:
        pair, args = spec.pair, spec.pair.options.serve_args
        argv = ["sglang", "serve", "--model-path", spec.model_path, "--host", spec.host, "--port", str(spec.port)]
        if pair.num_gpus > 1:
            argv += ["--num-gpus", str(pair.num_gpus)]
        # Explicit side ports: implicit ones collided between servers on one host.
        argv += ["--strict-ports", "--master-port", str(spec.port + MASTER_OFFSET),
                 "--scheduler-port", str(spec.port + SCHEDULER_OFFSET)]
        return argv + args + self.warmup_args(spec)

    def parsed_args(self, argv: list[str]) -> list[str] | None:
        return argv[2:]  # after `sglang serve`

    def warmup_args(self, spec: ServerSpec) -> list[str]:
        """The startup warmup at the shapes this server will be asked for.

        `sglang serve` warms up by default (`--warmup-mode server`); without resolutions it runs
        the model's default shape and a failure there is ignored, so a server that cannot run the
        case shape still turns healthy. With them, a failed warmup stops the server.
        """
        args = spec.pair.options.serve_args
        if flag_value(args, "--warmup-mode") not in (None, "server"):
            return []
        extra = []
        sizes = list(dict.fromkeys(p.case.size for p in spec.pairs if p.case.size))
        if sizes and flag_value(args, "--warmup-resolutions") is None:
            extra += ["--warmup-resolutions", *sizes]
        frames = [p.case.num_frames for p in spec.pairs if p.case.is_video and p.case.num_frames]
        if frames and flag_value(args, "--warmup-num-frames") is None:
            extra += ["--warmup-num-frames", str(max(frames))]
        return extra

    def side_ports(self, pair: Pair) -> tuple[int, ...]:
        # P+1: the offline-request broker every HTTP server binds; P+55…: one scheduler port per dp rank.
        raw = flag_value(pair.options.serve_args, *REPLICA_FLAGS["dp"])
        replicas = int(raw) if raw and raw.isdigit() else 1
        return (BROKER_OFFSET, MASTER_OFFSET, *(SCHEDULER_OFFSET + i for i in range(max(replicas, 1))))

    def gpu_problem(self, pair: Pair) -> str | None:
        if problem := super().gpu_problem(pair):
            return problem
        args, gpus = pair.options.serve_args, pair.num_gpus
        for flag in ("--enable-cfg-parallel", "--strict-ports"):
            value = flag_value(args, flag)
            if value not in (None, "") and not value.startswith("--") and value.lower() not in BOOLEAN_VALUES:
                return f"{flag} takes true or false in sglang, not {value!r}"
        degree, factors = parallel_degree(args, REPLICA_FLAGS)
        cfg, cfg_factor = cfg_degree(args)
        degree, factors = degree * cfg, [*factors, *([cfg_factor] if cfg_factor else [])]
        if gpus % degree:
            return f"{' × '.join(factors)} needs a multiple of {degree} GPUs, but it gets {gpus}"
        sequence, sequence_factors = parallel_degree(args, SEQUENCE_FLAGS)
        if not sequence_factors:
            sequence, sequence_factors = parallel_degree(args, {"sp": (SP_FLAG,)})
        if sequence_factors and sequence != gpus // degree:
            # The GPUs left after dp × tp × cfg form the sequence-parallel group, split ulysses × ring.
            return (f"{' × '.join(factors + sequence_factors)} needs {degree * sequence} GPUs, "
                    f"but it gets {gpus}")
        return None

    def endpoint(self, pair: Pair) -> str:
        if pair.case.is_video:
            return "/v1/videos"
        return "/v1/images/edits" if pair.case.task == "image-edit" else "/v1/images/generations"

    def request(self, pair: Pair, model: str, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        fields = generation_fields(pair, model, perf_dump_path=str(perf_dump_path) if perf_dump_path else None)
        path = self.endpoint(pair)
        output = "video" if pair.case.is_video else "image"
        job = VIDEO_JOB if pair.case.is_video else None
        if not pair.case.needs_image:
            return client.Request(path, output, json=fields, job=job)
        file_field = "input_reference" if pair.case.is_video else "image"
        return client.Request(path, output, data=form_fields(fields), files={file_field: image_part(image)}, job=job)

    def read_perf_dump(self, path: Path) -> perf_dump.PerfDump | None:
        return perf_dump.read(path, PERF_DUMP_WAIT_S)

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        body = output.body
        # sglang's peak_memory_mb is the worker's peak reserved memory.
        peak = body.get("peak_memory_mb")
        peak = float(peak) if peak is not None else None
        if body.get("inference_time_s") is not None:
            return client.ServerTiming(float(body["inference_time_s"]), "response", peak_reserved_mb=peak)
        return client.ServerTiming(peak_reserved_mb=peak)
