"""The interface every engine adapter implements."""

from __future__ import annotations

import importlib.metadata
import json
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import httpx

from diffbench import client, perf_dump
from diffbench.cases import FrameworkOptions, Pair
from diffbench.media import check_shape

MAX_GPUS_PER_HOST = 8


@dataclass(frozen=True)
class ServerSpec:
    """One server to start: which pair it serves, where, and on which GPUs."""

    pair: Pair
    host: str
    port: int
    model_path: str
    gpus: tuple[int, ...] = ()

    @property
    def base_url(self) -> str:
        # A server bound to every interface (in a container with a published port) is reached on loopback.
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"http://{host}:{self.port}"


def form_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Multipart form values: None dropped, structured values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}


def generation_fields(spec: ServerSpec, **engine_fields: Any) -> dict[str, Any]:
    """The OpenAI-style fields both engine APIs share, then the request extras.

    Unset fields are left out, so the server uses the model's default.
    """
    case = spec.pair.case
    fields = {
        "model": spec.model_path,
        "prompt": case.prompt,
        "negative_prompt": case.negative_prompt,
        "size": case.size,
        "num_inference_steps": case.num_inference_steps,
        "guidance_scale": case.guidance_scale,
        "seed": case.seed,
    } | engine_fields
    if case.is_video:
        fields |= {"num_frames": case.num_frames, "fps": case.fps}
    else:
        fields |= {"n": 1, "response_format": "b64_json"}
    return {k: v for k, v in (fields | spec.pair.request_extra).items() if v is not None}


def image_part(image: bytes | None) -> tuple[str, bytes, str]:
    """The multipart file of an image-conditioned request."""
    if image is None:
        raise ValueError("an image-conditioned task was sent without its input image")
    return ("input.png", image, "image/png")


def flag_value(args: list[str], *names: str) -> str | None:
    """The value of the last `--flag VALUE` or `--flag=VALUE` among `names` in `args`."""
    value = None
    for i, arg in enumerate(args):
        name, _, inline = arg.partition("=")
        if name in names:
            value = inline if inline else (args[i + 1] if i + 1 < len(args) else "")
    return value


def flag_enabled(args: list[str], name: str) -> bool:
    """Whether a boolean flag is on: bare `--flag`, or followed by a true value."""
    if name not in (a.partition("=")[0] for a in args):
        return False
    value = flag_value(args, name)
    return value is None or value.lower() not in ("false", "0", "no")


def parallel_degree(args: list[str], flags: dict[str, tuple[str, ...]]) -> tuple[int, list[str]]:
    """Product of the integer parallel sizes in `args`, and the factors that made it."""
    degree, factors = 1, []
    for names in flags.values():
        raw = flag_value(args, *names)
        if raw is not None and raw.isdigit() and int(raw) > 1:
            degree *= int(raw)
            factors.append(f"{names[0]} {raw}")
    return degree, factors


class Engine:
    """An inference server diffbench can launch and measure.

    An adapter module defines one subclass with a unique `name` (the framework name used in
    case configs) and implements `command`, `endpoint`, `request` and `server_timing`.
    """

    name: ClassVar[str]
    options: ClassVar[type[FrameworkOptions]] = FrameworkOptions
    # Ports the server opens at fixed offsets from its HTTP port; the launcher keeps them free.
    side_port_offsets: ClassVar[tuple[int, ...]] = ()
    uses_perf_dump: ClassVar[bool] = False
    # The distribution whose version identifies the engine's build.
    package: ClassVar[str | None] = None

    def command(self, spec: ServerSpec) -> list[str]:
        """The exact argv that starts the server."""
        raise NotImplementedError(f"{type(self).__name__}.command")

    def environment(self, spec: ServerSpec) -> dict[str, str]:
        """Environment added to the launcher's own for this server."""
        env = dict(spec.pair.options.extra_env)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
        return env

    def installed_version(self) -> str | None:
        """The engine's version as installed beside diffbench, if it is."""
        if self.package is None:
            return None
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def gpu_problem(self, pair: Pair) -> str | None:
        """Why this engine cannot run `pair` on `pair.num_gpus` GPUs, or None if it can."""
        if pair.num_gpus > MAX_GPUS_PER_HOST:
            return f"{pair.num_gpus} GPUs is more than one host has ({MAX_GPUS_PER_HOST})"
        return None

    def endpoint(self, pair: Pair) -> str:
        """The path a request for this pair's task goes to."""
        raise NotImplementedError(f"{type(self).__name__}.endpoint")

    def request(self, spec: ServerSpec, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        """The request for one sample of `spec.pair`."""
        raise NotImplementedError(f"{type(self).__name__}.request")

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        """The server's own timings for a request, as its response reports them."""
        raise NotImplementedError(f"{type(self).__name__}.server_timing")

    def read_perf_dump(self, path: Path) -> perf_dump.PerfDump | None:
        """The perf dump written for one request, or None if it never appeared."""
        raise NotImplementedError(f"{type(self).__name__}.read_perf_dump")

    def with_perf_dump(self, sample: client.Sample) -> client.Sample:
        """`sample` with the server timings of its perf dump, or marked as missing one."""
        if sample.perf_dump_path is None:
            return sample
        dump = self.read_perf_dump(Path(sample.perf_dump_path))
        if dump is None:
            return replace(sample, perf_dump_missing=True)
        return replace(
            sample, server_latency_s=dump.total_ms / 1000, server_latency_source="perf_dump",
            stage_ms=dump.stage_ms, denoise_step_ms=dump.denoise_step_ms,
            peak_memory_mb=dump.peak_memory_mb or sample.peak_memory_mb, perf_dump_missing=False,
        )

    def generate(
        self, http: httpx.Client, spec: ServerSpec, image: bytes | None, workdir: Path, timeout_s: float | None = None
    ) -> client.Sample:
        """Send one request for `spec.pair` and return its sample, timed as the response reports it.

        Engines with a perf dump leave its path in the sample; `with_perf_dump` reads it later.
        """
        pair = spec.pair
        dump = workdir / f"perf-{uuid.uuid4().hex}.json" if self.uses_perf_dump else None
        timeout_s = min(timeout_s, pair.deadlines.request_s) if timeout_s else pair.deadlines.request_s
        output = client.send(http, self.request(spec, image, dump), timeout_s)
        case = pair.case
        frames = case.num_frames if case.is_video else None
        check_shape(output.decoded, case.width, case.height, frames)
        timing = self.server_timing(output)
        return client.Sample(
            client_latency_s=output.client_latency_s,
            server_latency_s=timing.latency_s,
            server_latency_source=timing.source,
            stage_ms=timing.stage_ms,
            denoise_step_ms=timing.denoise_step_ms,
            peak_memory_mb=timing.peak_memory_mb,
            output_sha256=output.decoded.sha256,
            width=output.decoded.width,
            height=output.decoded.height,
            num_frames=output.decoded.num_frames,
            poll_bound_s=output.poll_bound_s,
            perf_dump_path=str(dump) if dump else None,
        )
