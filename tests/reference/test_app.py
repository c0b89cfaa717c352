"""The reference engine over real HTTP, on both tiny models, driven through the adapter code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from diffbench import media
from diffbench.client import POLL_FINE_S, Http, connect, measure, with_perf_dump
from diffbench.engines.reference import ReferenceEngine
from diffbench.errors import RequestFailed
from diffbench.reference.app import create_app
from diffbench.reference.runner import PipelineRunner

from conftest import make_pair, serve_in_thread

ENGINE = ReferenceEngine()


class Served(NamedTuple):
    http: httpx.Client  # requests the adapter never sends: malformed ones, the job API by hand
    pool: Http  # diffbench's own client, as the flow measures
    model: str


def served(model: str) -> Iterator[Served]:
    with serve_in_thread(create_app(PipelineRunner(model, "cpu"), model)) as url, httpx.Client(base_url=url) as http:
        pool = connect(url)
        try:
            yield Served(http, pool, model)
        finally:
            pool.close()


@pytest.fixture(scope="module")
def flux(tiny_models: dict[str, Path]) -> Iterator[Served]:
    yield from served(str(tiny_models["flux"]))


@pytest.fixture(scope="module")
def wan(tiny_models: dict[str, Path]) -> Iterator[Served]:
    yield from served(str(tiny_models["wan"]))


def test_health_and_models(flux: Served) -> None:
    http, _, model = flux
    assert http.get("/health").json() == {"status": "ok"}
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [model]


def test_text_to_image_sample_and_perf_dump(flux: Served, tmp_path: Path) -> None:
    _, pool, model = flux
    pair = make_pair("diffusers", model=model, width=64, height=48, num_inference_steps=4, seed=1)
    sample = with_perf_dump(ENGINE, measure(pool, ENGINE, pair, pair.model, None, tmp_path))
    assert (sample.width, sample.height, sample.num_frames) == (64, 48, 1)
    assert sample.server_latency_source == "perf_dump" and not sample.perf_dump_missing
    assert len(sample.denoise_step_ms) == 4
    assert list(sample.stage_ms) == ["TextEncodingStage", "DenoisingStage", "DecodingStage"]
    assert 0 < sample.server_latency_s < sample.client_latency_s
    assert sample.poll_bound_s is None and sample.peak_reserved_mb > 0
    [dump_file] = tmp_path.glob("perf-*.json")
    dump = json.loads(dump_file.read_text())
    assert dump["tag"] == "server_perf_dump" and dump["meta"]["model"] == model
    assert [s["step"] for s in dump["denoise_steps_ms"]] == [0, 1, 2, 3]
    assert dump["total_duration_ms"] >= sum(s["duration_ms"] for s in dump["steps"])
    for checkpoint in dump["memory_checkpoints"].values():
        assert set(checkpoint) == {"allocated_mb", "reserved_mb", "peak_allocated_mb", "peak_reserved_mb"}


def test_same_seed_same_image(flux: Served, tmp_path: Path) -> None:
    _, pool, model = flux
    pair = make_pair("diffusers", model=model, width=32, height=32, num_inference_steps=2, seed=5)
    other = make_pair("diffusers", model=model, width=32, height=32, num_inference_steps=2, seed=6)
    first, second = (measure(pool, ENGINE, pair, model, None, tmp_path) for _ in range(2))
    assert first.output_sha256 == second.output_sha256
    assert measure(pool, ENGINE, other, model, None, tmp_path).output_sha256 != first.output_sha256


def test_response_carries_time_and_memory(flux: Served) -> None:
    http, _, model = flux
    body = http.post("/v1/images/generations", json={"prompt": "x", "model": model, "size": "32x32",
                                                     "num_inference_steps": 2}).json()
    assert body["inference_time_s"] > 0 and body["peak_memory_mb"] > 0
    assert body["data"][0]["b64_json"]


def test_image_edit(flux: Served, tmp_path: Path) -> None:
    _, pool, model = flux
    pair = make_pair("diffusers", model=model, task="image-edit", width=64, height=64, num_inference_steps=5)
    sample = with_perf_dump(ENGINE, measure(pool, ENGINE, pair, pair.model, media.generated_image(), tmp_path))
    assert (sample.width, sample.height) == (64, 64)
    assert len(sample.denoise_step_ms) == 4  # img2img runs strength (0.8) x 5 steps


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "message"),
    [
        ("/v1/images/generations", {"json": {"prompt": "x", "model": "other/model"}}, 404, "is not served here"),
        ("/v1/images/generations", {"json": {"prompt": "x", "size": "60x64"}}, 400, "width 60 is not a multiple of 16"),
        ("/v1/images/generations", {"json": {"prompt": "x", "size": "big"}}, 400, "size must look like"),
        ("/v1/images/generations", {"json": {"size": "64x64"}}, 400, "prompt: Field required"),
        ("/v1/images/generations", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400,
         "body is not JSON"),
        ("/v1/images/edits", {"data": {"prompt": "x"}, "files": {"other": ("a", b"b")}}, 400,
         "needs the input image"),
        ("/v1/videos", {"json": {"prompt": "x"}}, 400, "generates image; use the image endpoint"),
    ],
    ids=["unknown-model", "bad-multiple", "bad-size", "no-prompt", "bad-json", "edit-without-image", "wrong-endpoint"],
)
def test_bad_requests_get_4xx_with_a_message(flux: Served, path: str, kwargs: dict, status: int,
                                              message: str) -> None:
    http, _, _ = flux
    response = http.post(path, **kwargs)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_a_perf_dump_that_cannot_be_written_loses_only_itself(flux: Served, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    http, _, model = flux
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    dump = blocker / "perf.json"  # under a file: no folder can be made there
    with caplog.at_level("ERROR", logger="diffbench.reference"):
        response = http.post("/v1/images/generations", json={"prompt": "x", "model": model, "size": "32x32",
                                                             "num_inference_steps": 1, "perf_dump_path": str(dump)})
        assert response.status_code == 200 and response.json()["data"][0]["b64_json"]
        deadline = time.monotonic() + 10
        while "perf dump not written" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)  # the dump is written after the answer
    assert f"perf dump not written to {dump}: [Errno 17] File exists" in caplog.text
    assert not dump.exists()


def test_pipeline_exception_is_500_and_the_server_keeps_serving(flux: Served, tmp_path: Path) -> None:
    http, pool, model = flux
    # FLUX refuses more than 512 T5 tokens inside the pipeline call itself.
    response = http.post("/v1/images/generations", json={"prompt": "x", "size": "32x32", "max_sequence_length": 1024})
    assert response.status_code == 500
    assert "ValueError" in response.json()["error"]["message"]
    pair = make_pair("diffusers", model=model, width=32, height=32, num_inference_steps=1)
    assert measure(pool, ENGINE, pair, pair.model, None, tmp_path).width == 32


def test_text_to_video_sample(wan: Served, tmp_path: Path) -> None:
    _, pool, model = wan
    pair = make_pair("diffusers", model=model, task="text-to-video", width=64, height=32, num_frames=9, fps=8,
                     num_inference_steps=3, seed=3)
    measured = measure(pool, ENGINE, pair, pair.model, None, tmp_path)
    assert Path(measured.perf_dump_path).is_file()  # written before the job showed as done
    sample = with_perf_dump(ENGINE, measured)
    assert (sample.width, sample.height, sample.num_frames) == (64, 32, 9)
    assert len(sample.denoise_step_ms) == 3 and sample.server_latency_source == "perf_dump"
    assert 0 < sample.poll_bound_s <= POLL_FINE_S


def test_video_job_lifecycle(wan: Served) -> None:
    http, _, _ = wan
    job = http.post("/v1/videos", json={"prompt": "x", "size": "32x32", "num_frames": 5,
                                        "num_inference_steps": 2}).json()
    assert job["status"] == "queued" and job["id"].startswith("video_")
    while (status := http.get(f"/v1/videos/{job['id']}").json())["status"] not in ("completed", "failed"):
        pass
    assert status["status"] == "completed" and status["inference_time_s"] > 0
    assert media.decode_video(http.get(f"/v1/videos/{job['id']}/content").content).num_frames == 5
    assert http.get("/v1/videos/video_nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [({"prompt": "x", "num_frames": 10}, "num_frames 10 must be 4k+1"),
     ({"prompt": "x", "size": "40x32"}, "width 40 is not a multiple of 16")],
)
def test_video_bad_requests(wan: Served, body: dict, message: str) -> None:
    http, _, _ = wan
    response = http.post("/v1/videos", json=body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_image_to_video_on_a_text_to_video_model_is_refused(wan: Served, tmp_path: Path) -> None:
    _, pool, model = wan
    pair = make_pair("diffusers", model=model, task="image-to-video", num_frames=5)
    with pytest.raises(RequestFailed) as caught:
        measure(pool, ENGINE, pair, pair.model, media.generated_image(64), tmp_path)
    assert caught.value.status_code == 400 and "takes no input image" in str(caught.value)
