"""Contracts with the engines' own code, no server: their CLI parsers, request models and perf-dump writer.

The next engine release that renames a flag or a field fails here, loudly.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest

from diffbench import perf_dump
from diffbench.config import load_matrix
from diffbench.engines import ENGINES
from diffbench.engines.environments import EngineEnvironment
from diffbench.engines.parsing import parser_problems
from diffbench.plan import build_plan

from .conftest import ENVS_DIR, HERE
from conftest import SGLANG_CONFIGS, make_pair

pytestmark = pytest.mark.contract
PROBE = HERE / "contract_probe.py"
AMBIGUOUS_WARMUP = ("sglang serve: error: ambiguous option: --warmup could match --warmup-mode, "
                    "--warmup-resolutions, --warmup-num-frames, --warmup-steps, --warmup-sampling-params")


def probe(environment: EngineEnvironment, *args: str, stdin: object = None) -> str:
    done = subprocess.run([str(environment.python), str(PROBE), *args], capture_output=True, text=True, check=True,
                          input=None if stdin is None else json.dumps(stdin), timeout=600)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@functools.cache
def planned(framework: str, environment: EngineEnvironment) -> dict[str, list]:
    """Every shared config planned with each pair pointed at the real engine's environment."""
    rows = {}
    for path in SGLANG_CONFIGS:
        matrix = load_matrix(path)
        pairs = [p.model_copy(update={"options": p.options.model_copy(update={"python": environment.python})})
                 for p in matrix.pairs if p.framework == framework]
        matrix = type(matrix)(matrix.path, matrix.matrix, tuple(pairs), {})
        rows[path.name] = build_plan(matrix, check_with=ENVS_DIR)
    return rows


def test_sglang_parser_takes_every_argv_we_build_but_refuses_bare_warmup(sglang_env) -> None:
    """sglang's own configs pass `--warmup`, ambiguous to 0.5.23's parser; `plan` says so (mismatch 2)."""
    for name, rows in planned("sglang", sglang_env).items():
        for row in rows:
            if "--warmup" in row.argv:
                assert not row.runnable and row.notes[-1] == f"sglang's own parser refuses the server arguments: " \
                                                             f"{AMBIGUOUS_WARMUP}", (name, row.case)
            else:
                assert row.runnable and not any("parser" in n for n in row.notes), (name, row.case, row.notes)
    assert sum(row.runnable for row in planned("sglang", sglang_env)["comparison_configs_sglang_03635624_latest-"
                                                                      "stored.json"]) == 13


def test_sglang_parser_agrees_with_our_gpu_checks(sglang_env) -> None:
    """What our plan refuses for sglang's booleans, sglang's parser refuses too (mismatch 9)."""
    argvs = [["--model-path", "/m", "--enable-cfg-parallel", "0"],
             ["--model-path", "/m", "--enable-cfg-parallel", "false"],
             ["--model-path", "/m", "--tp-sise", "2"],
             ["--model-path", "/m", "--dp", "2", "--sp-degree", "2"]]
    problems = parser_problems("sglang", sglang_env, "sglang", argvs)
    assert problems[0] == "ValueError: Invalid boolean value: 0. Expected 'true' or 'false'."
    assert problems[1] is None and problems[3] is None
    assert problems[2] == "ValueError: unrecognized arguments: --tp-sise 2"
    refused = make_pair(num_gpus=2, frameworks={"sglang": {"serve_args": "--enable-cfg-parallel 0"}})
    assert "takes true or false" in ENGINES["sglang"]().gpu_problem(refused)


def test_vllm_omni_parser_takes_every_argv_we_build(vllm_omni_env) -> None:
    rows = [row for rows in planned("vllm-omni", vllm_omni_env).values() for row in rows]
    assert rows and all(row.runnable for row in rows), [(r.case, r.notes) for r in rows if not r.runnable]
    argvs = [["serve", "/m", "--omni", "--num-gpus", "4", "--usp", "2"],
             ["serve", "/m", "--omni", "--ulysses-sise", "2"]]
    assert parser_problems("vllm-omni", vllm_omni_env, "vllm", argvs) == [
        None, "vllm: error: unrecognized arguments: --ulysses-sise 2"]


def form_value(text: str) -> object:
    """A form field as the server's form parser types it: numbers and booleans as JSON, the rest as text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


TASKS = [("text-to-image", {}), ("text-to-video", {"num_frames": 9, "fps": 8})]


@pytest.mark.parametrize("framework", ["sglang", "vllm-omni"])
def test_request_bodies_validate_against_the_engines_own_models(framework: str, request) -> None:
    environment = request.getfixturevalue("sglang_env" if framework == "sglang" else "vllm_omni_env")
    engine = ENGINES[framework]()
    bodies = []
    for task, shape in TASKS:
        pair = make_pair(framework, task=task, width=64, height=48, num_inference_steps=4, guidance_scale=3.5,
                         seed=7, negative_prompt="blurry", **shape)
        sent = engine.request(pair, "/models/m", None, Path("/tmp/perf.json") if engine.uses_perf_dump else None)
        body = sent.json if sent.json is not None else {k: form_value(v) for k, v in sent.data.items()}
        bodies.append(["video" if "video" in task else "image", body])
    assert json.loads(probe(environment, "requests", framework, stdin=bodies)) == [[], []]


def test_a_perf_dump_written_by_sglangs_own_logger_parses(sglang_env, tmp_path: Path) -> None:
    path = tmp_path / "dump.json"
    probe(sglang_env, "perf-dump", str(path))
    dump = perf_dump.read(path, 0)
    assert dump.total_ms == 530.0 and dump.stage_ms == {"TextEncodingStage": 12.0, "DenoisingStage": 500.0}
    assert dump.denoise_step_ms == (260.0, 240.0)
    # Peak reserved, as sglang's response reports it, not peak allocated (mismatch 5).
    assert dump.peak_reserved_mb == 300.0
