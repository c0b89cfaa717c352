"""The case matrix: what to measure, on which frameworks, and the config hash of each pair.

The format is a superset of sglang's `comparison_configs.json`: every sglang file loads
unchanged, and our own keys (`warmup_requests`, `request_extra`, `deadlines`, `baseline`,
`revision`) add what that format lacks.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, PositiveFloat, field_validator, model_validator

from diffbench.redaction import masked

Task = Literal["text-to-image", "image-edit", "text-to-video", "image-to-video", "text-image-to-video"]
VIDEO_TASKS = frozenset({"text-to-video", "image-to-video", "text-image-to-video"})
IMAGE_INPUT_TASKS = frozenset({"image-edit", "image-to-video", "text-image-to-video"})
DEFAULT_PROMPT = "a lighthouse on a rocky coast at sunset, waves breaking below"
# Strict: YAML's `true` is not a count. Sides are what the engines' latent grids accept (VAE 8 × patch 2).
Count = Annotated[int, Field(gt=0, strict=True)]
Side = Annotated[int, Field(gt=0, multiple_of=16, le=8192, strict=True)]


def _repeats(value: object) -> int | Literal["auto"]:
    if value == "auto" or (type(value) is int and value >= 1):
        return value  # type: ignore[return-value]
    raise ValueError(f"must be a whole number of requests (1 or more) or auto (got {value!r})")


# A fixed number of measured requests, or `auto`: until the median's interval is narrow enough.
Repeats = Annotated[int | Literal["auto"], PlainValidator(_repeats)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Deadlines(_Strict):
    """How long each phase of a case may take before it is abandoned."""

    ready_s: float = Field(2400, gt=0, description="Launch until the server answers health and lists the model.")
    request_s: float = Field(1800, gt=0, description="One request, submit until its output is downloaded.")
    case_minutes: float = Field(240, gt=0, description="The whole case, download to stop.")


class ProcessLauncher(_Strict):
    """The server runs as a local process in the worker's environment."""

    type: Literal["process"] = "process"


class DockerLauncher(_Strict):
    """The server runs in its own container, through the Docker Engine API."""

    type: Literal["docker"]
    image: str = Field(min_length=1, description="Image reference, e.g. lmsysorg/sglang:v0.5.4-cu129.")
    digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", description="Pins the image by content.")
    volumes: list[str] = Field(default_factory=list, description="Extra mounts, `host:container[:ro|rw]`.")
    shm_size: str = Field("16g", description="/dev/shm size; NCCL needs more than Docker's 64 MB.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of the container.")
    network: Literal["host", "publish"] = Field("host", description="Host networking, or a port published on loopback.")

    @property
    def reference(self) -> str:
        return f"{self.image}@{self.digest}" if self.digest else self.image


class FrameworkOptions(_Strict):
    """How one framework serves one case. Engines may subclass it to accept more keys.

    A subclass's keys change the measurement (they are in the config hash), except `build_fields`:
    like `python` and `pip`, those say where the engine comes from.
    """

    build_fields: ClassVar[frozenset[str]] = frozenset()

    engine: str | None = Field(
        None, description="Engine adapter; default: the framework name. Lets one engine run under several names."
    )
    serve_args: list[str] = Field(default_factory=list, description="Extra server flags (string or list).")
    extra_env: dict[str, str] = Field(default_factory=dict, description="Environment added to the server's.")
    model: str | None = Field(None, description="Overrides the case's model for this framework.")
    num_gpus: int | None = Field(None, ge=1, description="Overrides the case's GPU count for this framework.")
    request_extra: dict[str, Any] = Field(default_factory=dict, description="Extra fields merged into each request.")
    launcher: Annotated[ProcessLauncher | DockerLauncher, Field(discriminator="type")] = Field(
        default_factory=ProcessLauncher, description="Where the server runs: a process (default) or a container."
    )
    python: Path | None = Field(
        None, description="The engine's own Python environment, e.g. /opt/sglang/bin/python; its bin/ has the CLI."
    )
    pip: list[str] | None = Field(
        None, min_length=1,
        description="Arguments of `uv pip install` for a venv of the engine's own, built once and reused: specs "
                    "(sglang==0.5.23), wheel paths or URLs, `-r lock.txt`, `--no-deps`.",
    )

    @field_validator("serve_args", "pip", mode="before")
    @classmethod
    def _split_string(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_environment(self) -> FrameworkOptions:
        given = [name for name, value in (("python", self.python), ("pip", self.pip)) if value is not None]
        if isinstance(self.launcher, DockerLauncher):
            given.append("launcher.image")
        if len(given) > 1:
            raise ValueError(f"an engine lives in one environment, but {' and '.join(given)} are both given")
        return self


class Case(_Strict):
    """One workload: a model, a task and its shape. Absent shape keys mean the model's default."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="Stable name of the case.")
    model: str = Field(min_length=1, description="Hugging Face repo id, or a local path starting with / ./ ../ ~.")
    revision: str | None = Field(None, description="Model revision (branch, tag or commit) to pin.")
    task: Task
    # Engines refuse an empty prompt (vLLM-Omni's video form answers 400), so a case without one gets this.
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, description="The text prompt; a fixed default when absent.")
    negative_prompt: str | None = None
    width: Side | None = None
    height: Side | None = None
    num_inference_steps: Count | None = None
    num_frames: Count | None = None
    fps: Count | None = None
    guidance_scale: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, strict=True)
    num_gpus: int = Field(1, ge=1, strict=True, description="GPUs each framework gets unless it overrides it.")
    reference_image: bool = Field(False, description="The request carries the shared input image.")
    warmup_requests: int | None = Field(None, ge=0, description="Unmeasured requests first; default from the matrix.")
    measurement_repeats: Repeats | None = Field(None, description="Measured requests; default from the matrix.")
    deadlines: Deadlines | None = None
    sglang_request_extra: dict[str, Any] = Field(default_factory=dict, description="sglang's key for request extras.")
    frameworks: dict[str, dict[str, Any]] = Field(
        min_length=1, description="Framework name to its options; each engine validates its own."
    )
    comfyui_workflow: str | None = Field(
        None, description="sglang's own ComfyUI graph file; comfyui keeps such a case as not run.")

    @property
    def is_video(self) -> bool:
        return self.task in VIDEO_TASKS

    @property
    def needs_image(self) -> bool:
        return self.reference_image or self.task in IMAGE_INPUT_TASKS

    @property
    def size(self) -> str | None:
        return f"{self.width}x{self.height}" if self.width and self.height else None

    @model_validator(mode="after")
    def _image_reaches_the_engine(self) -> Case:
        if self.reference_image and self.task == "text-to-image":
            # sglang's /v1/images/generations takes JSON only (a form gets 422); vllm-omni drops the file.
            raise ValueError("reference_image: a text-to-image request cannot carry an image on sglang or "
                             "vllm-omni; use task image-edit")
        return self


class WarmupDefaults(_Strict):
    num_requests: int = Field(1, ge=0)
    num_inference_steps: int | None = Field(None, gt=0)


class ThroughputDefaults(_Strict):
    """sglang's throughput block: after its latency requests, each case is measured under load."""

    num_requests: int = Field(4, ge=1, description="Requests per concurrency level (at least the level).")
    max_concurrency: int = Field(1, ge=1, description="Levels 1, 2, 4 … up to and including this one.")
    request_rate: PositiveFloat | Literal["inf"] = Field(
        "inf", description="Poisson arrivals per second, or `inf`: every request sent as soon as a slot frees.")


class BenchmarkDefaults(_Strict):
    warmup: WarmupDefaults = WarmupDefaults()
    throughput: ThroughputDefaults | None = None


class AutoRepeats(_Strict):
    """When `measurement_repeats: auto` stops measuring a case."""

    target: float = Field(0.02, gt=0, description="Half-width of the median's 95 % interval, as a fraction of it.")
    min_requests: int = Field(5, ge=2)
    max_requests: int = Field(100, ge=2)
    max_seconds: float = Field(600, gt=0, description="Time budget of the measured requests of one case.")

    @model_validator(mode="after")
    def _ordered(self) -> AutoRepeats:
        if self.max_requests < self.min_requests:
            raise ValueError(f"max_requests {self.max_requests} is below min_requests {self.min_requests}")
        return self


class Matrix(_Strict):
    """A case matrix file."""

    cases: list[Case] = Field(min_length=1)
    test_image_url: str | None = Field(None, description="Input image for image tasks: URL or local path.")
    measurement_repeats: Repeats = Field(3, description="Measured requests per case, or `auto` (see auto_repeats).")
    auto_repeats: AutoRepeats = AutoRepeats()
    warmup_requests: int | None = Field(None, ge=0, description="Default: benchmark_defaults.warmup.num_requests.")
    benchmark_defaults: BenchmarkDefaults = BenchmarkDefaults()
    deadlines: Deadlines = Deadlines()
    baseline: str | None = Field(None, description="Framework the others are compared to.")
    not_run: list[str] = Field(
        default_factory=list, description="Frameworks with no adapter, kept as not run."
    )
    comment: str | None = Field(None, alias="_comment")


class Pair(_Strict):
    """One (case, framework) with every default resolved: what a server run needs."""

    case: Case
    framework: str
    options: FrameworkOptions
    model: str
    num_gpus: int
    warmup_requests: int
    measurement_repeats: Repeats
    auto_repeats: AutoRepeats = AutoRepeats()
    throughput: ThroughputDefaults | None = None
    deadlines: Deadlines

    @property
    def engine(self) -> str:
        return self.options.engine or self.framework

    @property
    def bind_host(self) -> str:
        """Where the server listens: in a container with a published port, beyond its own loopback."""
        launcher = self.options.launcher
        return "0.0.0.0" if isinstance(launcher, DockerLauncher) and launcher.network == "publish" else "127.0.0.1"

    @property
    def engine_build(self) -> str | None:
        """Where the engine comes from, as configured: `pip: …`, `python: …`, `image: …`; None for the worker's PATH.

        Credentials in a URL (a private index, a wheel behind a token) are masked.
        """
        options = self.options
        if isinstance(options.launcher, DockerLauncher):
            build = f"image: {options.launcher.reference}"
        elif options.pip:
            build = f"pip: {shlex.join(options.pip)}"
        else:
            return f"python: {options.python}" if options.python else None
        return masked(build)

    @property
    def request_extra(self) -> dict[str, Any]:
        extra = dict(self.case.sglang_request_extra) if self.engine == "sglang" else {}
        return extra | self.options.request_extra

    @property
    def config_hash(self) -> str:
        """Hash of everything that changes the measurement; the case id is not part of it.

        The engine's build (pip spec, Python environment, image) is not: a new build is a new point of
        the same series, which is what the nightly watches change.
        """
        controls = self.case.model_dump(
            exclude={"id", "model", "num_gpus", "frameworks", "deadlines", "warmup_requests",
                     "measurement_repeats", "sglang_request_extra", "comfyui_workflow"}
        ) | {
            "engine": self.engine,
            "model": self.model,
            "num_gpus": self.num_gpus,
            "serve_args": self.options.serve_args,
            "env": self.options.extra_env,
            "request_extra": self.request_extra,
        }
        engine_options = self.options.model_dump(
            mode="json", exclude=set(FrameworkOptions.model_fields) | self.options.build_fields)
        if engine_options:  # only engines with keys of their own: the others' hashes stay as they were
            controls["engine_options"] = engine_options
        canonical = json.dumps(controls, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def resolve(matrix: Matrix, case: Case, framework: str, options: FrameworkOptions) -> Pair:
    """Fill a (case, framework) pair's defaults from the case and the matrix."""
    deadlines = matrix.deadlines
    if case.deadlines is not None:
        deadlines = deadlines.model_copy(update=case.deadlines.model_dump(exclude_unset=True))
    warmup = case.warmup_requests
    if warmup is None:
        warmup = matrix.warmup_requests
    if warmup is None:
        warmup = matrix.benchmark_defaults.warmup.num_requests
    return Pair(
        case=case,
        framework=framework,
        options=options,
        model=options.model or case.model,
        num_gpus=options.num_gpus or case.num_gpus,
        warmup_requests=warmup,
        measurement_repeats=case.measurement_repeats or matrix.measurement_repeats,
        auto_repeats=matrix.auto_repeats,
        throughput=matrix.benchmark_defaults.throughput,
        deadlines=deadlines,
    )
