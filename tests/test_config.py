"""Loading case matrices: sglang's files as they are, and one clear message per problem."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from diffbench.config import load_matrix
from diffbench.errors import ConfigError

from conftest import SGLANG_CONFIGS


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_matrix(path)
    return caught.value.problems


@pytest.mark.parametrize("path", SGLANG_CONFIGS, ids=lambda p: p.name[:40])
def test_every_sglang_config_loads_unchanged(path: Path) -> None:
    raw = json.loads(path.read_text())
    matrix = load_matrix(path)
    assert [c.id for c in matrix.matrix.cases] == [c["id"] for c in raw["cases"]]
    declared = {(c["id"], fw) for c in raw["cases"] for fw in c["frameworks"]}
    planned = {(p.case.id, p.framework) for p in matrix.pairs} | set(matrix.unsupported)
    assert planned == declared


def test_a_case_its_engine_cannot_launch_as_given_is_kept_and_reported_with_why() -> None:
    """sglang's LightX2V cases get 4 GPUs with no parallel block: LightX2V would refuse to start."""
    cross = next(p for p in SGLANG_CONFIGS if "cross-framework" in p.name)
    matrix = load_matrix(cross)
    why = matrix.unsupported[("wan22_t2v_a14b_720p", "lightx2v")]
    assert why.error_class == "unsupported" and "it gets 4 GPU(s), but lightx2v_config's parallel block spans 1" \
        in why.message
    assert {p.framework for p in matrix.pairs} == {"sglang", "vllm-omni"}


def test_sglang_format_details_are_understood() -> None:
    latest = load_matrix(next(p for p in SGLANG_CONFIGS if "latest" in p.name))
    assert latest.matrix.measurement_repeats == 3
    minimax = next(p for p in latest.pairs if p.case.id == "minimax_h3_t2va_5s")
    assert minimax.request_extra["task"] == "t2va"  # case-level sglang_request_extra
    cosmos = next(p for p in latest.pairs if p.case.id == "cosmos3_super_t2v_2gpu")
    assert cosmos.options.extra_env == {"SGLANG_DISABLE_COSMOS3_GUARDRAILS": "1"}
    assert cosmos.options.serve_args == ["--warmup-mode", "server", "--tp-size", "2"]
    throughput = load_matrix(next(p for p in SGLANG_CONFIGS if "throughput" in p.name))
    assert throughput.pairs[0].warmup_requests == 2  # benchmark_defaults.warmup.num_requests
    vllm = next(p for p in throughput.pairs if p.case.id == "wan22_t2v_a14b_720p" and p.framework == "vllm-omni")
    assert (vllm.num_gpus, vllm.case.num_gpus) == (1, 4)


def test_yaml_with_our_own_keys(write_config) -> None:
    path = write_config("""
        baseline: diffusers
        warmup_requests: 2
        deadlines: {ready_s: 30}
        cases:
          - id: tiny
            model: ./models/tiny-flux
            task: text-to-image
            width: 64
            height: 64
            measurement_repeats: 5
            deadlines: {request_s: 9}
            frameworks:
              diffusers:
                serve_args: [--device, cpu]
                request_extra: {max_sequence_length: 64}
        """)
    pair = load_matrix(path).pairs[0]
    assert pair.model == str((path.parent / "models" / "tiny-flux").resolve())
    assert (pair.warmup_requests, pair.measurement_repeats) == (2, 5)
    assert (pair.deadlines.ready_s, pair.deadlines.request_s, pair.deadlines.case_minutes) == (30, 9, 240)
    assert pair.request_extra == {"max_sequence_length": 64}


BASE_CASE = """
    cases:
      - id: flux1_dev_t2i_1024
        model: black-forest-labs/FLUX.1-dev
        task: text-to-image
        {extra}
        frameworks: {frameworks}
"""


@pytest.mark.parametrize(
    ("extra", "frameworks", "expected"),
    [
        ("num_inference_steps: 0", "{sglang: {}}",
         "nightly.yaml: case 'flux1_dev_t2i_1024': num_inference_steps: must be > 0 (got 0)"),
        ("width: -1024", "{sglang: {}}", "nightly.yaml: case 'flux1_dev_t2i_1024': width: must be > 0 (got -1024)"),
        ("seed: -1", "{sglang: {}}", "nightly.yaml: case 'flux1_dev_t2i_1024': seed: must be >= 0 (got -1)"),
        ("num_gpus: 0", "{sglang: {}}", "nightly.yaml: case 'flux1_dev_t2i_1024': num_gpus: must be >= 1 (got 0)"),
        ("num_gpus: 16", "{sglang: {}}",
         "nightly.yaml: case 'flux1_dev_t2i_1024': num_gpus: sglang: 16 GPUs is more than one host has (8)"),
        ("num_gpus: 2", "{sglang: {serve_args: --tp-size 2 --ulysses-degree 2}}",
         "nightly.yaml: case 'flux1_dev_t2i_1024': num_gpus: sglang: --tp-size 2 × --ulysses-degree 2 needs 4 GPUs,"
         " but it gets 2"),
        ("num_gpus: 4", "{vllm-omni: {num_gpus: 2, serve_args: --usp 4}}",
         "nightly.yaml: case 'flux1_dev_t2i_1024': frameworks.vllm-omni.num_gpus: vllm-omni: serve_args use 4 GPU(s)"
         " (--ulysses-degree 4), but it gets 2; vllm-omni derives nothing from a GPU count"
         " unless --num-gpus is given"),
        ("colour: red", "{sglang: {}}", "nightly.yaml: case 'flux1_dev_t2i_1024': colour: unknown key"),
        ("", "{sglang: {serve_arg: --x}}",
         "nightly.yaml: case 'flux1_dev_t2i_1024': frameworks.sglang.serve_arg: unknown key"),
        ("", "{}", "nightly.yaml: case 'flux1_dev_t2i_1024': frameworks: must not be empty"),
        ("", "{sglang: {launcher: {type: k8s}}}",
         "nightly.yaml: case 'flux1_dev_t2i_1024': frameworks.sglang.launcher: Input tag 'k8s' found using 'type' "
         "does not match any of the expected tags: 'process', 'docker' (got {'type': 'k8s'})"),
        ("", "{sglang: {launcher: {type: docker, image: x, digest: abc}}}",
         "nightly.yaml: case 'flux1_dev_t2i_1024': frameworks.sglang.launcher.docker.digest: String should match "
         "pattern '^sha256:[0-9a-f]{64}$' (got 'abc')"),
    ],
    ids=["steps", "negative-size", "seed", "zero-gpus", "too-many-gpus", "sglang-parallel",
         "vllm-parallel", "unknown-key", "unknown-framework-key", "no-frameworks", "unknown-launcher", "bad-digest"],
)
def test_each_problem_names_file_case_and_field(write_config, extra: str, frameworks: str, expected: str) -> None:
    assert problems_of(write_config(BASE_CASE.format(extra=extra, frameworks=frameworks))) == [expected]


def test_unknown_task_lists_the_known_ones(write_config) -> None:
    [problem] = problems_of(write_config(BASE_CASE.format(extra="", frameworks="{sglang: {}}")
                                         .replace("text-to-image", "text-to-audio")))
    assert problem.startswith("nightly.yaml: case 'flux1_dev_t2i_1024': task: must be one of")
    assert "'image-edit'" in problem and "'text-to-audio'" in problem


def test_every_problem_is_reported_at_once(write_config) -> None:
    problems = problems_of(write_config("""
        cases:
          - {id: a, model: m, task: text-to-image, width: -16, height: 0, frameworks: {sglang: {}}}
          - {id: a, model: m, task: text-to-image, frameworks: {sglang: {}}}
          - {model: m, task: text-to-image, frameworks: {sglang: {}}}
        """))
    assert "nightly.yaml: case 'a': id: duplicate case id 'a'" in problems
    assert any(p.startswith("nightly.yaml: case 'a': width: must be > 0") for p in problems)
    assert any(p.startswith("nightly.yaml: case 'a': height: must be > 0") for p in problems)
    assert "nightly.yaml: case #3: id: required" in problems
    assert len(problems) == 4


def test_a_framework_without_adapter_is_refused_unless_kept_as_not_run(write_config) -> None:
    """A typo was silently dropped by `run` (issue: runs that end cleanly)."""
    typo = write_config("""
        cases:
          - {id: c, model: m, task: text-to-image, frameworks: {vllm_omni: {}, xdit: {}, sglang: {}}}
        """)
    assert problems_of(typo) == [
        "nightly.yaml: case 'c': frameworks.vllm_omni: no adapter for 'vllm_omni'; did you mean 'vllm-omni'? have: "
        "comfyui, diffusers, lightx2v, sglang, vllm-omni (list it under not_run to keep it unrun)",
        "nightly.yaml: case 'c': frameworks.xdit: no adapter for 'xdit'; have: comfyui, diffusers, lightx2v, sglang, "
        "vllm-omni (list it under not_run to keep it unrun)"]
    kept = write_config("""
        not_run: [tensorrt-diffusion, xdit]
        cases:
          - {id: c, model: m, task: text-to-image, frameworks: {tensorrt-diffusion: {}, xdit: {}, sglang: {}}}
        """)
    assert tuple(load_matrix(kept).unsupported) == (("c", "tensorrt-diffusion"), ("c", "xdit"))


def test_shapes_are_whole_multiples_of_16_within_bounds(write_config) -> None:
    """Sizes the engines cannot take fail in plan, not as a retried HTTP 400 (issue: runs that end cleanly)."""
    problems = problems_of(write_config("""
        cases:
          - {id: b, model: m, task: text-to-video, width: 65, height: true, num_frames: 9.5, frameworks: {sglang: {}}}
          - {id: c, model: m, task: text-to-image, width: 100000, height: 64, seed: true, frameworks: {sglang: {}}}
        """))
    assert problems == [
        "nightly.yaml: case 'b': width: must be a multiple of 16 (got 65)",
        "nightly.yaml: case 'b': height: must be a whole number (got True)",
        "nightly.yaml: case 'b': num_frames: must be a whole number (got 9.5)",
        "nightly.yaml: case 'c': width: must be <= 8192 (got 100000)",
        "nightly.yaml: case 'c': seed: must be a whole number (got True)",
    ]


def test_baseline_must_be_a_framework_in_use(write_config) -> None:
    problems = problems_of(write_config(
        "baseline: vllm-omni\n" + textwrap.dedent(BASE_CASE).format(extra="", frameworks="{sglang: {}}")
    ))
    assert problems == ["nightly.yaml: baseline: no case runs framework 'vllm-omni'"]


def test_unparsable_and_missing_files(write_config, tmp_path: Path) -> None:
    assert problems_of(write_config("cases: [", name="broken.yaml"))[0].startswith("broken.yaml: not valid YAML")
    assert problems_of(write_config("{", name="broken.json"))[0].startswith("broken.json: not valid JSON")
    assert problems_of(write_config("- 1", name="list.yaml")) == [
        "list.yaml: (top level): must be a mapping with a 'cases' list"]
    assert "cannot read" in problems_of(tmp_path / "absent.yaml")[0]


def test_select_names_unknown_cases_and_frameworks() -> None:
    matrix = load_matrix(SGLANG_CONFIGS[0])
    with pytest.raises(ConfigError) as caught:
        matrix.select(["nope"], ["sglang", "tensorrt"])
    assert caught.value.problems[0].startswith(f"{SGLANG_CONFIGS[0].name}: no case 'nope'; known: flux1_dev_t2i_1024")
    assert caught.value.problems[1].startswith(f"{SGLANG_CONFIGS[0].name}: no framework 'tensorrt'; known: sglang")
    assert [p.case.id for p in matrix.select(["wan22_t2v_a14b_720p"])] == ["wan22_t2v_a14b_720p"]


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("cases: [{id: caf\xe9}]".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_matrix(path)
    assert caught.value.problems == ["latin1.yaml: not UTF-8 text (byte 16): save it as UTF-8"]


def test_auto_repeats_load_and_bad_ones_name_their_field(tmp_path: Path) -> None:
    path = tmp_path / "auto.yaml"
    case = "{id: tiny, model: ./m, task: text-to-image, frameworks: {sglang: {}}"
    path.write_text(f"measurement_repeats: auto\nauto_repeats: {{target: 0.01}}\ncases: [{case}}}]\n")
    pair = load_matrix(path).pairs[0]
    assert pair.measurement_repeats == "auto" and pair.auto_repeats.target == 0.01
    path.write_text(f"measurement_repeats: often\nauto_repeats: {{min_requests: 9, max_requests: 3}}\n"
                    f"cases: [{case}, measurement_repeats: 0}}]\n")
    problems = "\n".join(problems_of(path))
    assert problems.splitlines() == [
        "auto.yaml: case 'tiny': measurement_repeats: must be a whole number of requests (1 or more) or auto (got 0)",
        "auto.yaml: measurement_repeats: must be a whole number of requests (1 or more) or auto (got 'often')",
        "auto.yaml: auto_repeats: max_requests 3 is below min_requests 9"]
