"""`diffbench plan`: every shared config plans; mismatches and unknown frameworks show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffbench.cli import main
from diffbench.config import load_matrix
from diffbench.plan import build_plan, render

from conftest import SGLANG_CONFIGS

CROSS = next(p for p in SGLANG_CONFIGS if "cross-framework" in p.name)


@pytest.mark.parametrize("path", SGLANG_CONFIGS, ids=lambda p: p.name[:40])
def test_every_shared_config_plans(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    raw = json.loads(path.read_text())
    assert len(rows) == sum(len(c["frameworks"]) for c in raw["cases"])
    for row in filter(lambda r: r["runnable"], rows):
        assert row["argv"][:2] in (["sglang", "serve"], ["vllm", "serve"])
        assert len(row["config_hash"]) == 16 and row["endpoint"].startswith("/v1/")


def test_gpu_mismatch_within_a_case_is_shown() -> None:
    rows = build_plan(load_matrix(CROSS), cases=["wan22_t2v_a14b_720p"])
    by_framework = {row.framework: row for row in rows}
    assert (by_framework["sglang"].num_gpus, by_framework["vllm-omni"].num_gpus) == (4, 1)
    for framework in ("sglang", "vllm-omni"):
        assert by_framework[framework].notes == [
            "GPU counts differ within this case (sglang 4, vllm-omni 1): not like for like"]
    assert not by_framework["lightx2v"].runnable
    assert "lightx2v_config's parallel block spans 1" in by_framework["lightx2v"].notes[0]
    assert build_plan(load_matrix(CROSS), cases=["flux1_dev_t2i_1024"])[0].notes == []


def test_text_plan_shows_every_part() -> None:
    text = render(build_plan(load_matrix(CROSS), cases=["wan22_i2v_a14b_720p"], frameworks=["sglang", "lightx2v"]))
    assert "wan22_i2v_a14b_720p / sglang" in text and "wan22_i2v_a14b_720p / lightx2v  [NOT RUN]" in text
    for label in ("config hash", "gpus         4", "argv         sglang serve", "endpoint     /v1/videos",
                  "request      task=image-to-video, size=1280x720, num_frames=81"):
        assert label in text
    assert "input_image=https://huggingface.co/" in text
    assert text.endswith("1 runnable pair(s), 1 not run; argv shows port 30000, the launcher picks a free one")


def test_filters_select_cases_and_frameworks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", str(CROSS), "--cases", "qwen_image_edit_2511", "--frameworks", "vllm-omni",
                 "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["case"], row["framework"], row["endpoint"]) == ("qwen_image_edit_2511", "vllm-omni",
                                                                "/v1/images/edits")


def test_invalid_config_exits_non_zero_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "nightly.yaml"
    config.write_text("cases:\n  - {id: flux, model: m, task: text-to-image, num_inference_steps: -2,"
                      " width: 0, frameworks: {sglang: {}}}\n")
    result = subprocess.run([sys.executable, "-m", "diffbench", "plan", "--config", str(config)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "invalid configuration:",
        "  nightly.yaml: case 'flux': width: must be > 0 (got 0)",
        "  nightly.yaml: case 'flux': num_inference_steps: must be > 0 (got -2)",
    ]


def test_unknown_case_selection_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", str(CROSS), "--cases", "nope"]) == 2
    assert "no case 'nope'" in capsys.readouterr().err


def test_docker_cases_show_their_container(write_config) -> None:
    path = write_config("""
        cases:
          - id: flux
            model: black-forest-labs/FLUX.1-dev
            task: text-to-image
            num_gpus: 2
            frameworks:
              sglang:
                serve_args: --tp-size 2
                launcher: {type: docker, image: "lmsysorg/sglang:v0.5.4", digest: "sha256:%s"}
              vllm-omni:
                serve_args: --tensor-parallel-size 2
                launcher: {type: docker, image: "vllm/vllm-omni:v0.11.0", network: publish,
                           volumes: ["/data/loras:/loras:ro"]}
        """ % ("a" * 64))
    rows = {row.framework: row for row in build_plan(load_matrix(path))}
    sglang, vllm = rows["sglang"].container, rows["vllm-omni"].container
    assert sglang["image"] == "lmsysorg/sglang:v0.5.4@sha256:" + "a" * 64 and sglang["network"] == "host"
    assert sglang["gpus"].startswith("2, by device_requests")
    assert vllm["network"] == "127.0.0.1:30000 -> 30000/tcp" and "/data/loras:/loras:ro" in vllm["mounts"]
    assert "--host 0.0.0.0" in " ".join(rows["vllm-omni"].argv)  # published ports need every interface
    assert "container    image=vllm/vllm-omni:v0.11.0" in render(list(rows.values()))
    # The image is the engine's build, not the case's config: a new one continues the series.
    assert rows["sglang"].config_hash == build_plan(load_matrix(write_config(
        path.read_text().replace("v0.5.4", "v0.5.5"), name="other.yaml")))[0].config_hash


def test_a_case_without_a_shape_is_flagged_when_engines_would_differ(write_config) -> None:
    """sglang's default is 1024x1024 (96 frames for video), vllm-omni's the model's own (mismatch 10)."""
    path = write_config("""
        cases:
          - {id: unsized, model: org/m, task: text-to-video, frameworks: {sglang: {}, vllm-omni: {}}}
          - {id: sized, model: org/m, task: text-to-video, width: 64, height: 64, num_frames: 9,
             frameworks: {sglang: {}, vllm-omni: {}}}
          - {id: alone, model: org/m, task: text-to-image, frameworks: {sglang: {}}}
    """)
    notes = {(row.case, row.framework): row.notes for row in build_plan(load_matrix(path))}
    assert notes[("unsized", "sglang")] == notes[("unsized", "vllm-omni")] == [
        "no size or num_frames: each engine uses its own default, not like for like"]
    assert notes[("sized", "sglang")] == [] and notes[("alone", "sglang")] == []


def test_the_plan_shows_the_argv_of_the_server_a_case_shares(write_config) -> None:
    path = write_config("""
        cases:
          - {id: a, model: org/m, task: text-to-image, width: 64, height: 64, frameworks: {sglang: {}}}
          - {id: b, model: org/m, task: text-to-image, width: 96, height: 64, frameworks: {sglang: {}}}
    """)
    rows = build_plan(load_matrix(path))
    assert [row.argv[-3:] for row in rows] == [["--warmup-resolutions", "64x64", "96x64"],
                                               ["--warmup-resolutions", "96x64", "64x64"]]


def test_without_an_engine_environment_the_argv_is_not_checked(write_config, tmp_path: Path) -> None:
    path = write_config("""
        cases:
          - {id: c, model: org/m, task: text-to-image, width: 64, height: 64,
             frameworks: {sglang: {pip: "sglang==0.5.23"}, diffusers: {}}}
    """)
    rows = {row.framework: row for row in build_plan(load_matrix(path), check_with=tmp_path / "envs")}
    assert rows["sglang"].runnable and rows["sglang"].notes == [
        "serve args not checked: its pip: environment is not built yet (the first run builds it)"]
    assert rows["diffusers"].notes == []  # our own server: no foreign parser to ask
