"""The reference engine's HTTP API: the subset of SGLang-Diffusion's that diffbench uses."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from diffbench import perf_dump
from diffbench.reference.runner import BadRequest, Generation, PipelineRunner, Result

logger = logging.getLogger("diffbench.reference")
KEPT_VIDEOS = 16


class GenerationBody(BaseModel):
    """Fields of an image or video request; others (quality, style, ...) are ignored like sglang does."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    model: str | None = None
    size: str | None = None
    n: int = 1
    response_format: str = "b64_json"
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    num_frames: int | None = None
    fps: int | None = None
    max_sequence_length: int | None = None
    perf_dump_path: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def _size(size: str | None) -> tuple[int | None, int | None]:
    if size is None:
        return None, None
    width, sep, height = size.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise ApiError(400, f"size must look like 1024x768, got {size!r}")
    return int(width), int(height)


async def _read(request: Request, file_field: str) -> tuple[GenerationBody, bytes | None]:
    """Parse a JSON or multipart body; multipart may carry the input image."""
    image = None
    if request.headers.get("content-type", "").startswith("multipart/"):
        async with request.form() as form:
            fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
            upload = form.get(file_field) or form.get(f"{file_field}[]")
            if isinstance(upload, UploadFile):
                image = await upload.read()
    else:
        try:
            fields = await request.json()
        except ValueError as exc:
            raise ApiError(400, f"body is not JSON: {exc}") from exc
    try:
        return GenerationBody.model_validate(fields), image
    except ValidationError as exc:
        raise ApiError(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc


def write_perf_dump(request: Generation, result: Result) -> None:
    """Write the perf dump a request asked for; one that cannot be written is logged, not raised."""
    if request.perf_dump_path:
        try:
            perf_dump.write_atomic(Path(request.perf_dump_path), result.perf)
        except OSError as exc:
            logger.error("perf dump not written to %s: %s", request.perf_dump_path, exc)


def create_app(runner: PipelineRunner, served_name: str) -> FastAPI:
    """An app serving `runner`'s model under `served_name`; one generation runs at a time."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="diffbench reference engine", lifespan=lifespan)
    videos: OrderedDict[str, dict[str, Any]] = OrderedDict()
    contents: dict[str, bytes] = {}

    def generation(body: GenerationBody, image: bytes | None, video: bool) -> Generation:
        if body.model is not None and body.model != served_name:
            raise ApiError(404, f"model {body.model!r} is not served here; this server has {served_name!r}")
        if body.n != 1 or body.response_format != "b64_json":
            raise ApiError(400, "only n=1 and response_format=b64_json are supported")
        width, height = _size(body.size)
        request = Generation(
            prompt=body.prompt, width=width, height=height, num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale, seed=body.seed, negative_prompt=body.negative_prompt,
            num_frames=body.num_frames, fps=body.fps, max_sequence_length=body.max_sequence_length,
            image=image, perf_dump_path=body.perf_dump_path,
        )
        try:
            runner.check(request, video)
        except BadRequest as exc:
            raise ApiError(400, str(exc)) from exc
        return request

    def run(request: Generation) -> Result:
        try:
            return runner.run(request)
        except Exception:
            # The log line lets the launcher see OOMs and crashes the way it does for sglang.
            logger.exception("generation failed")
            raise

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message}}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served_name, "object": "model", "owned_by": "diffbench"}]}

    async def image_response(request: Request, needs_image: bool) -> JSONResponse:
        body, image = await _read(request, "image")
        if needs_image and image is None:
            raise ApiError(400, "an edit needs the input image as the multipart file 'image'")
        job = generation(body, image, video=False)
        try:
            result = await asyncio.get_running_loop().run_in_executor(executor, run, job)
        except Exception as exc:  # noqa: BLE001 - any pipeline failure is the client's 500
            raise ApiError(500, f"{type(exc).__name__}: {exc}") from exc
        # The perf dump is written after the answer has gone: it costs the request nothing.
        dump = BackgroundTask(write_perf_dump, job, result) if job.perf_dump_path else None
        return JSONResponse({
            "id": uuid.uuid4().hex,
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(result.content).decode()}],
            "inference_time_s": result.inference_time_s,
            "peak_memory_mb": result.peak_memory_mb,
        }, background=dump)

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> JSONResponse:
        return await image_response(request, needs_image=False)

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> JSONResponse:
        return await image_response(request, needs_image=True)

    @app.post("/v1/videos")
    async def create_video(request: Request) -> dict[str, Any]:
        body, image = await _read(request, "input_reference")
        job_request = generation(body, image, video=True)
        video_id = f"video_{uuid.uuid4().hex}"
        job: dict[str, Any] = {"id": video_id, "object": "video", "model": served_name, "status": "queued",
                               "created_at": time.time()}
        videos[video_id] = job
        while len(videos) > KEPT_VIDEOS:
            old_id, _ = videos.popitem(last=False)
            contents.pop(old_id, None)

        def work() -> None:
            job["status"] = "processing"
            try:
                result = run(job_request)
            except Exception as exc:  # noqa: BLE001 - reported through the job's status
                job.update(status="failed", error={"message": f"{type(exc).__name__}: {exc}"},
                           completed_at=time.time())
                return
            contents[video_id] = result.content
            write_perf_dump(job_request, result)  # before the job shows as done, so a done job's dump is there
            job.update(status="completed", completed_at=time.time(),
                       inference_time_s=result.inference_time_s, peak_memory_mb=result.peak_memory_mb)

        created = dict(job)  # as it was made: the worker may start it before the answer is written
        executor.submit(work)
        return created

    def find(video_id: str) -> dict[str, Any]:
        if video_id not in videos:
            raise ApiError(404, f"no video {video_id!r}")
        return videos[video_id]

    @app.get("/v1/videos/{video_id}")
    async def video_status(video_id: str) -> dict[str, Any]:
        return dict(find(video_id))

    @app.get("/v1/videos/{video_id}/content")
    async def video_content(video_id: str) -> Response:
        if find(video_id)["status"] != "completed":
            raise ApiError(404, f"video {video_id} is not completed")
        return Response(contents[video_id], media_type="video/mp4")
    return app
