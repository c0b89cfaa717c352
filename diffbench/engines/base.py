"""The interface every engine adapter implements: how it is launched and how its API is spelt."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from diffbench import client, download, perf_dump
from diffbench.cases import FrameworkOptions, Pair
from diffbench.engines.environments import EngineEnvironment

MAX_GPUS_PER_HOST = 8


@dataclass(frozen=True)
class ServerSpec:
    """One server to start: the pairs it serves (the first decides the launch), where, on which GPUs."""

    pair: Pair
    host: str
    port: int
    model_path: str
    gpus: tuple[int, ...] = ()
    # Every pair this server will serve, `pair` first; empty means `pair` alone.
    group: tuple[Pair, ...] = ()

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return self.group or (self.pair,)

    @property
    def base_url(self) -> str:
        # A server bound to every interface (in a container with a published port) is reached on loopback.
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"http://{host}:{self.port}"


def form_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Multipart form values: None dropped, structured values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}


def generation_fields(pair: Pair, model: str, **engine_fields: Any) -> dict[str, Any]:
    """The OpenAI-style fields both engine APIs share for `pair`'s case, then the request extras.

    Unset fields are left out, so the server uses the model's default.
    """
    case = pair.case
    fields = {
        "model": model,
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
        # PNG on every engine, so no engine's server time holds a cheaper encoder than another's.
        fields |= {"n": 1, "response_format": "b64_json", "output_format": "png"}
    return {k: v for k, v in (fields | pair.request_extra).items() if v is not None}


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
    """An inference server diffbench can launch and ask for outputs.

    An adapter module defines one subclass with a unique `name` (the framework name used in
    case configs) and implements `command`, `endpoint`, `request` and `server_timing`; engines
    with a perf dump also implement `read_perf_dump`. Measuring is the client's job.
    """

    name: ClassVar[str]
    options: ClassVar[type[FrameworkOptions]] = FrameworkOptions
    # The distribution whose version identifies the engine's build.
    package: ClassVar[str | None] = None
    uses_perf_dump: ClassVar[bool] = False
    # Whether cases with the same launch may share a server; not where the server's config holds case values.
    shares_server: ClassVar[bool] = True
    def warmup_requests(self, pair: Pair) -> int:
        """How many unmeasured requests `pair` gets before it is measured."""
        return pair.warmup_requests

    def command(self, spec: ServerSpec) -> list[str]:
        """The exact argv that starts the server; argv[0] is looked up in the engine's environment."""
        raise NotImplementedError(f"{type(self).__name__}.command")

    def parsed_args(self, argv: list[str]) -> list[str] | None:
        """The part of `command`'s argv that the engine's own CLI parser reads; None: no parser to check."""
        return None

    def side_ports(self, pair: Pair) -> tuple[int, ...]:
        """Ports the server opens beside its HTTP port, as offsets from it; the launcher keeps them free."""
        return ()

    def check_model(self, pair: Pair, path: Path) -> None:
        """Raise DownloadError if the model folder at `path` is not one this engine can serve `pair` from."""
        download.check_pipeline(path, pair.model)

    def prepare(self, spec: ServerSpec, workdir: Path) -> None:
        """Write what the server reads at start into `workdir`, its cwd (its argv names them relative to it)."""

    def ready_problem(self, http: client.Http, spec: ServerSpec) -> str | None:
        """None once the server can take `spec`'s requests, else what it still lacks.

        The OpenAI-style servers are ready when healthy and listing the model they were started with.
        """
        health = client.call(http, "GET", "/health", 1.0, "GET /health")
        if health.status != 200:
            return f"/health answers {health.status}"
        listed = [m.get("id") for m in client.call(http, "GET", "/v1/models", 1.0, "GET /v1/models").json()
                  .get("data", [])]
        if spec.model_path not in listed:
            return f"healthy, but /v1/models lists {listed}, not {spec.model_path!r}"
        return None

    def environment(self, spec: ServerSpec) -> dict[str, str]:
        """Environment added to the launcher's own for this server."""
        env = dict(spec.pair.options.extra_env)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
        return env

    def version(self, spec: ServerSpec, environment: EngineEnvironment, program: str) -> str | None:
        """The engine build `program` runs, from its package's version in `environment`."""
        return environment.version(self.package, program)

    def option_problems(self, pair: Pair) -> list[tuple[str, str]]:
        """(option name, message) for each of `pair`'s framework options this engine cannot run the case with."""
        return []

    def plan_notes(self, pair: Pair) -> list[str]:
        """What `plan` should say about how this engine runs `pair`, e.g. where it cannot match the others."""
        return []

    def not_run_reason(self, pair: Pair) -> str | None:
        """Why `pair` is kept but not run (a case this engine has no way to serve), or None."""
        return None

    def gpu_problem(self, pair: Pair) -> str | None:
        """Why this engine cannot run `pair` on `pair.num_gpus` GPUs, or None if it can."""
        if pair.num_gpus > MAX_GPUS_PER_HOST:
            return f"{pair.num_gpus} GPUs is more than one host has ({MAX_GPUS_PER_HOST})"
        return None

    def endpoint(self, pair: Pair) -> str:
        """The path a request for this pair's task goes to."""
        raise NotImplementedError(f"{type(self).__name__}.endpoint")

    def request(self, pair: Pair, model: str, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        """The request for one sample of `pair`, on a server that serves `model`."""
        raise NotImplementedError(f"{type(self).__name__}.request")

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        """The server's own timings for a request, as its response reports them."""
        raise NotImplementedError(f"{type(self).__name__}.server_timing")

    def read_perf_dump(self, path: Path) -> perf_dump.PerfDump | None:
        """The perf dump written for one request, or None if it never appeared."""
        raise NotImplementedError(f"{type(self).__name__}.read_perf_dump")
