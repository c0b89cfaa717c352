"""The HTTP client against a real local HTTP server with scripted answers: each failure gets its class."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from scripted import Answer, answering, serving

from diffbench import media
from diffbench.client import POLL_FINE_S, POLL_MAX_S, Http, Request, Upload, connect, poll_wait, send
from diffbench.engines.sglang import VIDEO_JOB
from diffbench.errors import BadOutput, RequestFailed, RequestTimeout
from diffbench.launcher import free_port

IMAGE_REQUEST = Request("/v1/images/generations", "image", json={"prompt": "x"})
VIDEO_REQUEST = Request("/v1/videos", "video", json={"prompt": "x"}, job=VIDEO_JOB)


def png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_image_is_decoded_and_timed() -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3))
    with serving(answering(Answer.of({"data": [{"b64_json": png(pixels)}], "inference_time_s": 0.5}))) as http:
        output = send(http, IMAGE_REQUEST, 5)
    assert (output.decoded.width, output.decoded.height, output.decoded.num_frames) == (64, 48, 1)
    assert output.body["inference_time_s"] == 0.5 and output.client_latency_s > 0


@pytest.mark.parametrize(
    ("answer", "error", "error_class", "text"),
    [
        (Answer.of({"error": {"message": "CUDA error"}}, 500), RequestFailed, "http_error", "HTTP 500: {\"error"),
        (Answer(200, b"<html>"), BadOutput, "bad_output", "not JSON"),
        (Answer.of({"data": []}), BadOutput, "bad_output", "no base64 image"),
        (Answer.of({"data": [{"b64_json": "%%%"}]}), BadOutput, "bad_output", "no base64 image"),
        (Answer.of({"data": [{"b64_json": base64.b64encode(b"junk").decode()}]}), BadOutput, "bad_output",
         "does not decode"),
        (Answer.of({"data": [{"b64_json": png(np.full((8, 8, 3), 7))}]}), BadOutput, "bad_output",
         "one constant colour"),
        (Answer.of([1, 2]), BadOutput, "bad_output", "not a JSON object"),
    ],
    ids=["500", "not-json", "no-image", "bad-base64", "not-an-image", "constant", "json-list"],
)
def test_bad_answers(answer: Answer, error: type, error_class: str, text: str) -> None:
    with serving(answering(answer)) as http, pytest.raises(error) as caught:
        send(http, IMAGE_REQUEST, 5)
    assert caught.value.error_class == error_class and text in str(caught.value)


def test_connection_errors_and_timeouts_are_translated() -> None:
    nobody = connect(f"http://127.0.0.1:{free_port()}")
    with nobody, pytest.raises(RequestFailed, match="cannot connect") as refused:
        send(nobody, IMAGE_REQUEST, 5)
    assert refused.value.error_class == "http_error"
    with serving(answering(Answer(delay_s=1.0))) as http, \
            pytest.raises(RequestTimeout, match="no answer before the deadline") as stalled:
        send(http, IMAGE_REQUEST, 0.2)
    assert stalled.value.error_class == "request_timeout"


def test_a_form_request_reaches_the_server_as_multipart_with_its_file() -> None:
    received: list[bytes] = []

    def record(method: str, path: str, body: bytes) -> Answer:
        received.append(body)
        return Answer(200, media.encode_video(np.random.default_rng(4).integers(0, 255, (3, 16, 16, 3),
                                                                                dtype=np.uint8), 8))

    form = Request("/v1/videos/sync", "video", data={"prompt": "a lighthouse"},
                   files={"image": ("input.png", b"\x89PNG-bytes", "image/png")})
    with serving(record) as http:
        send(http, form, 5)
    assert b'name="prompt"' in received[0] and b"a lighthouse" in received[0]
    assert b'filename="input.png"' in received[0] and b"\x89PNG-bytes" in received[0]


@contextmanager
def video_server(statuses: list[str], final: dict | None = None) -> Iterator[tuple[Http, list[str]]]:
    """A server whose job goes through `statuses`; records the paths asked for."""
    asked: list[str] = []
    video = media.encode_video(np.random.default_rng(1).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8), 8)
    remaining = list(statuses)

    def handle(method: str, path: str, body: bytes) -> Answer:
        asked.append(f"{method} {path}")
        if method == "POST":
            return Answer.of({"id": "v1", "status": "queued"})
        if path.endswith("/content"):
            return Answer(200, video)
        status = remaining.pop(0) if remaining else "completed"
        return Answer.of({"id": "v1", "status": status} | (final or {}))

    with serving(handle) as http:
        yield http, asked


def test_video_without_an_expected_time_is_polled_finely_then_downloaded() -> None:
    with video_server(["processing"] * 6 + ["completed"], {"inference_time_s": 1.0}) as (http, asked):
        output = send(http, VIDEO_REQUEST, 10)
    assert asked[0] == "POST /v1/videos" and asked[-1] == "GET /v1/videos/v1/content"
    assert asked.count("GET /v1/videos/v1") == 7
    assert output.decoded.num_frames == 5 and output.body["inference_time_s"] == 1.0
    assert output.poll_bound_s == POLL_FINE_S


def test_poll_waits_back_off_until_near_the_expected_end_then_stay_fine() -> None:
    waits, elapsed, wait = [], 0.0, 0.0
    while elapsed < 12.0:
        wait = poll_wait(elapsed, 10.0, wait)
        waits.append((elapsed, wait))
        elapsed += wait
    early = [w for t, w in waits if t < 4.75]
    assert max(early) == POLL_MAX_S and early[0] == POLL_FINE_S
    assert all(t + w <= 4.75 + 1e-9 for t, w in waits if t < 4.75), "never sleeps past the fine phase's start"
    assert {w for t, w in waits if t >= 4.75} == {POLL_FINE_S}
    assert len([t for t, _ in waits if t < 4.75]) < 4.75 / POLL_MAX_S + 10, "sparse before the fine phase"


def test_a_job_done_earlier_than_expected_has_its_wider_bound_recorded() -> None:
    with video_server(["processing"] * 3 + ["completed"]) as (http, _):
        output = send(http, VIDEO_REQUEST, 10, expected_s=30.0)
    assert POLL_FINE_S < output.poll_bound_s <= POLL_MAX_S


def test_failed_video_job_carries_the_server_message() -> None:
    with video_server(["failed"], {"error": {"message": "OOM in VAE"}}) as (http, _), \
            pytest.raises(RequestFailed, match="OOM in VAE"):
        send(http, VIDEO_REQUEST, 10)


def test_video_job_past_its_deadline_times_out() -> None:
    with video_server(["processing"] * 1000) as (http, _), pytest.raises(RequestTimeout, match="still 'processing'"):
        send(http, VIDEO_REQUEST, 0.3)


def test_sync_video_needs_no_polling() -> None:
    video = media.encode_video(np.random.default_rng(2).integers(0, 255, (9, 16, 16, 3), dtype=np.uint8), 8)
    with serving(answering(Answer(200, video, {"X-Inference-Time-S": "0.7"}))) as http:
        output = send(http, Request("/v1/videos/sync", "video", data={"prompt": "x"}), 5)
    assert (output.decoded.num_frames, output.poll_bound_s, output.headers["x-inference-time-s"]) == (9, 0.0, "0.7")


def test_job_without_id_is_bad_output() -> None:
    with serving(answering(Answer.of({"status": "queued"}))) as http, pytest.raises(BadOutput, match="no job id"):
        send(http, VIDEO_REQUEST, 5)


SLOW_DECODE_S = 0.3


@pytest.mark.parametrize("request_", [IMAGE_REQUEST, VIDEO_REQUEST], ids=["image", "video"])
def test_the_clock_stops_at_the_last_byte_and_a_failing_check_still_fails(
        request_: Request, monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.random.default_rng(3).integers(0, 255, (16, 16, 3))
    decoder = "decode_image" if request_.output == "image" else "decode_video"
    real = getattr(media, decoder)

    def slow(data: bytes) -> media.Decoded:
        time.sleep(SLOW_DECODE_S)  # a large output, or a slow machine: not the engine's time
        return real(data)

    def broken(data: bytes) -> media.Decoded:
        time.sleep(SLOW_DECODE_S)
        raise BadOutput("image is one constant colour (0)")

    with (serving(answering(Answer.of({"data": [{"b64_json": png(pixels)}]}))) if request_.output == "image"
          else video_server([])) as served:
        http = served if request_.output == "image" else served[0]
        monkeypatch.setattr(media, decoder, slow)
        assert send(http, request_, 5).client_latency_s < SLOW_DECODE_S
        monkeypatch.setattr(media, decoder, broken)
        with pytest.raises(BadOutput, match="constant colour"):
            send(http, request_, 5)


def test_an_upload_is_sent_first_and_outside_the_clock() -> None:
    """ComfyUI's input image goes to its own route before the graph that names it."""
    pixels = np.random.default_rng(5).integers(0, 255, (16, 16, 3))
    asked: list[str] = []

    def handle(method: str, path: str, body: bytes) -> Answer:
        asked.append(path)
        if path == "/upload/image":
            return Answer(200, b"{}", delay_s=0.5)
        return Answer.of({"data": [{"b64_json": png(pixels)}]})

    request = Request("/prompt", "image", json={"prompt": "x"},
                      uploads=(Upload("/upload/image", {"image": ("in.png", b"png", "image/png")}),))
    with serving(handle) as http:
        output = send(http, request, 5)
    assert asked == ["/upload/image", "/prompt"] and output.client_latency_s < 0.5
