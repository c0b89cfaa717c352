"""HTTP side of a measurement: send one generation request, time it, return its output.

Requests go through `connections.Http` (keep-alive, the standard library's client); its transport
errors are translated here and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import urllib3

from diffbench import media
from diffbench.connections import Http, Response
from diffbench.errors import BadOutput, RequestFailed, RequestTimeout

if TYPE_CHECKING:
    from diffbench.cases import Pair
    from diffbench.engines.base import Engine

# A video job is polled every POLL_FINE_S from FINE_FROM of its expected time on (or from the
# start when none is known yet), and sparsely before, with a backoff capped at POLL_MAX_S: the
# client time then overshoots the job's end by at most one fine interval and a GET. Half, since
# the first request after launch can take 1.5x the later ones (FLUX on an H100: 8.4 s, then 5.7 s).
POLL_FINE_S = 0.025
POLL_MAX_S = 0.25
FINE_FROM = 0.5


def _no_explanation(body: bytes) -> str | None:
    return None


def _error_field(status: dict[str, Any]) -> str:
    error = status.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or "no message")


@dataclass(frozen=True)
class Job:
    """An asynchronous job: the submit answers its id, a status route says when it is done, and
    the output is downloaded from a route of its own. Every engine here spells the state `status`.
    """

    # `{id}` stands for the job's id.
    status_path: str
    # The download route, from the job's id and its final status.
    output_path: Callable[[str, dict[str, Any]], str]
    id_field: str = "id"
    done: str = "completed"
    failed: tuple[str, ...] = ("failed", "cancelled")
    # Why a finished job failed, from its final status.
    error: Callable[[dict[str, Any]], str] = _error_field
    # What a refused submit means, from its body; None: the raw body says it.
    refusal: Callable[[bytes], str | None] = _no_explanation


@dataclass(frozen=True)
class Upload:
    """A file the engine must hold before the request that names it; sent before the clock starts."""

    path: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One generation request, as an engine spells it.

    Without a `job`, the answer to the POST is the output: a base64 image in JSON, or the video's
    bytes. With one, the POST submits it and the output is downloaded when it is done.
    """

    path: str
    output: Literal["image", "video"]
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    job: Job | None = None
    uploads: tuple[Upload, ...] = ()


@dataclass(frozen=True)
class Output:
    """A decoded output and how long it took from submit to its last byte."""

    client_latency_s: float
    decoded: media.Decoded
    body: dict[str, Any]
    headers: dict[str, str]
    poll_bound_s: float | None


@dataclass(frozen=True)
class ServerTiming:
    """The server's own account of a request, and where it came from."""

    latency_s: float | None = None
    source: Literal["perf_dump", "response", "none"] = "none"
    stage_ms: dict[str, float] = field(default_factory=dict)
    denoise_step_ms: tuple[float, ...] = ()
    peak_reserved_mb: float | None = None


@dataclass(frozen=True)
class Sample:
    """One measured request; client and server times are never mixed in one field.

    `peak_reserved_mb` is the peak of the accelerator memory the engine's allocator reserved
    (torch's `max_memory_reserved`), the one definition both engines report.
    """

    client_latency_s: float
    server_latency_s: float | None
    server_latency_source: str
    stage_ms: dict[str, float]
    denoise_step_ms: tuple[float, ...]
    peak_reserved_mb: float | None
    output_sha256: str
    width: int
    height: int
    num_frames: int
    poll_bound_s: float | None
    perf_dump_path: str | None = None
    perf_dump_missing: bool = False
    thumbnail: str = ""
    throttled: bool | None = None


def connect(base_url: str) -> Http:
    """Keep-alive connections to one server, shared by its requests and threads; never retried."""
    return Http(base_url)


def call(http: Http, method: str, path: str, timeout_s: float, what: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Response:
    """One request, read to its last byte; transport failures become `RequestFailed` or `RequestTimeout`."""
    try:
        return http.request(method, path, timeout_s, body, headers)
    except ConnectionRefusedError as exc:
        raise RequestFailed(f"{what}: cannot connect: {exc}") from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"{what}: no answer before the deadline ({type(exc).__name__})") from exc
    except (OSError, HTTPException) as exc:
        raise RequestFailed(f"{what}: {type(exc).__name__}: {exc}") from exc


def _checked(response: Response, what: str,
             explain: Callable[[bytes], str | None] = _no_explanation) -> Response:
    if response.status >= 400:
        text = explain(response.data) or response.data[:500].decode(errors="replace")
        raise RequestFailed(f"{what}: HTTP {response.status}: {text}", status_code=response.status)
    return response


def _json(response: Response, what: str) -> dict[str, Any]:
    try:
        body = json.loads(response.data)
    except ValueError as exc:
        raise BadOutput(f"{what}: response is not JSON: {response.data[:200]!r}") from exc
    if not isinstance(body, dict):
        raise BadOutput(f"{what}: response is not a JSON object")
    return body


def _image_bytes(body: dict[str, Any], what: str) -> bytes:
    try:
        return base64.b64decode(body["data"][0]["b64_json"], validate=True)
    except (KeyError, IndexError, TypeError, binascii.Error) as exc:
        raise BadOutput(f"{what}: response carries no base64 image ({exc!r})") from exc


def poll_wait(elapsed_s: float, expected_s: float | None, previous_s: float) -> float:
    """How long to sleep before the next poll of a video job `elapsed_s` after it was submitted.

    Fine near (and past) the expected end, so the poll bound stays within ~50 ms; before it the
    backoff grows from the previous wait but never sleeps past the start of the fine phase.
    """
    # Less one coarse wait: a short job, whose client time is much more than the job itself, is always polled finely.
    fine_from = expected_s * FINE_FROM - POLL_MAX_S if expected_s else 0.0
    if elapsed_s >= fine_from:
        return POLL_FINE_S
    return max(POLL_FINE_S, min(previous_s * 1.5, POLL_MAX_S, fine_from - elapsed_s))


def _poll(http: Http, job: Job, submitted: dict[str, Any], deadline: float, started: float,
          expected_s: float | None) -> tuple[str, dict[str, Any], float]:
    """Poll a job until it is done (see `poll_wait`); return its id, final status and the last wait."""
    job_id = submitted.get(job.id_field)
    if not isinstance(job_id, str) or not job_id:
        raise BadOutput(f"the submit's answer has no job id ({job.id_field!r}): {str(submitted)[:300]}")
    path = job.status_path.format(id=job_id)
    what = f"GET {path}"
    status, wait = submitted, 0.0
    while status.get("status") != job.done and status.get("status") not in job.failed:
        wait = poll_wait(time.perf_counter() - started, expected_s, wait)
        if time.monotonic() + wait > deadline:
            raise RequestTimeout(f"job {job_id} still {status.get('status')!r} at the deadline")
        time.sleep(wait)
        status = _json(_checked(call(http, "GET", path, POLL_MAX_S * 20, what), what), what)
    if status["status"] != job.done:
        raise RequestFailed(f"job {job_id} {status['status']} on the server: {job.error(status)}")
    return job_id, status, wait


def _form(fields: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body, content_type = urllib3.encode_multipart_formdata(fields)
    return body, {"Content-Type": content_type}


def _encoded(request: Request) -> tuple[bytes, dict[str, str]]:
    """The POST's body and its headers, encoded before the clock starts."""
    if request.json is not None:
        return json.dumps(request.json).encode(), {"Content-Type": "application/json"}
    # FastAPI's form parameters take multipart whether or not a file comes with them.
    return _form({**(request.data or {}), **(request.files or {})})


def send(http: Http, request: Request, timeout_s: float, expected_s: float | None = None) -> Output:
    """Send `request` and wait for its output; the clock stops at the output's last byte.

    Parsing, decoding and checking the output come after the clock: they measure this client,
    not the engine, and still fail the request when they fail. `expected_s` is the fastest the
    same request took before: job polling uses it.
    """
    for upload in request.uploads:
        _checked(call(http, "POST", upload.path, timeout_s, f"POST {upload.path}", *_form(upload.fields)),
                 f"POST {upload.path}")
    what = f"POST {request.path}"
    payload, payload_headers = _encoded(request)
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    response = call(http, "POST", request.path, timeout_s, what, body=payload, headers=payload_headers)
    if request.job is None:
        latency_s = time.perf_counter() - started
        _checked(response, what)
        body = _json(response, what) if request.output == "image" else {}
        content = _image_bytes(body, what) if request.output == "image" else response.data
        poll_bound_s = None if request.output == "image" else 0.0
    else:
        job = request.job
        _checked(response, what, job.refusal)
        job_id, body, poll_bound_s = _poll(http, job, _json(response, what), deadline, started, expected_s)
        path = job.output_path(job_id, body)
        output = call(http, "GET", path, max(deadline - time.monotonic(), 1.0), f"GET {path}")
        latency_s = time.perf_counter() - started
        content = _checked(output, f"GET {path}").data
    decoded = media.decode_image(content) if request.output == "image" else media.decode_video(content)
    return Output(latency_s, decoded, body, response.headers, poll_bound_s)


def _described_field(value: Any) -> Any:
    if isinstance(value, tuple):
        filename, content, _ = value
        return {"filename": filename, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    return value


def describe(request: Request) -> dict[str, Any]:
    """What a request sends, as stored with its result: files replaced by their size and hash."""
    files = {name: _described_field(file) for name, file in (request.files or {}).items()}
    uploads = [{"path": upload.path, "fields": {name: _described_field(value) for name, value in upload.fields.items()}}
               for upload in request.uploads]
    described: dict[str, Any] = {"path": request.path, "json": request.json, "form": request.data, "files": files,
                                 "uploads": uploads}
    return {k: v for k, v in described.items() if v}


def measure(http: Http, engine: Engine, pair: Pair, model: str, image: bytes | None, workdir: Path,
            timeout_s: float | None = None, expected_s: float | None = None) -> Sample:
    """Send one request for `pair`'s case and return its sample, timed as the response reports it.

    The request, deadline, perf-dump folder and shape check are all `pair`'s own, whichever case
    the server was launched for. Engines with a perf dump leave its path in the sample;
    `with_perf_dump` reads it later.
    """
    dump = workdir / f"perf-{uuid.uuid4().hex}.json" if engine.uses_perf_dump else None
    timeout_s = min(timeout_s, pair.deadlines.request_s) if timeout_s else pair.deadlines.request_s
    request = engine.request(pair, model, image, dump)
    output = send(http, request, timeout_s, expected_s)
    case = pair.case
    media.check_shape(output.decoded, case.width, case.height, case.num_frames if case.is_video else None)
    timing = engine.server_timing(output)
    return Sample(
        client_latency_s=output.client_latency_s,
        server_latency_s=timing.latency_s,
        server_latency_source=timing.source,
        stage_ms=timing.stage_ms,
        denoise_step_ms=timing.denoise_step_ms,
        peak_reserved_mb=timing.peak_reserved_mb,
        output_sha256=output.decoded.sha256,
        width=output.decoded.width,
        height=output.decoded.height,
        num_frames=output.decoded.num_frames,
        poll_bound_s=output.poll_bound_s,
        perf_dump_path=str(dump) if dump else None,
        thumbnail=output.decoded.thumbnail,
    )


def with_perf_dump(engine: Engine, sample: Sample) -> Sample:
    """`sample` with the server timings of its perf dump, or marked as missing one."""
    if sample.perf_dump_path is None:
        return sample
    dump = engine.read_perf_dump(Path(sample.perf_dump_path))
    if dump is None:
        return replace(sample, perf_dump_missing=True)
    return replace(
        sample, server_latency_s=dump.total_ms / 1000, server_latency_source="perf_dump",
        stage_ms=dump.stage_ms, denoise_step_ms=dump.denoise_step_ms,
        peak_reserved_mb=dump.peak_reserved_mb if dump.peak_reserved_mb is not None else sample.peak_reserved_mb,
        perf_dump_missing=False,
    )
