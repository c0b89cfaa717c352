"""Case models: resolved pairs and the config hash."""

from __future__ import annotations

from conftest import make_pair


def test_config_hash_is_stable_and_ignores_the_case_id() -> None:
    base = make_pair(width=1024, height=1024, seed=1)
    assert base.config_hash == make_pair(width=1024, height=1024, seed=1).config_hash
    assert base.config_hash == make_pair(id="renamed", width=1024, height=1024, seed=1).config_hash
    assert len(base.config_hash) == 16


def test_config_hash_covers_everything_that_changes_the_measurement() -> None:
    base = dict(width=1024, height=1024, seed=1, num_inference_steps=28, num_gpus=2,
                frameworks={"sglang": {"serve_args": "--tp-size 2", "extra_env": {"A": "1"}}})
    variants = [
        {"model": "org/other"}, {"revision": "abc123"}, {"width": 512}, {"height": 512},
        {"num_inference_steps": 30}, {"num_frames": 5}, {"guidance_scale": 4.0}, {"seed": 2},
        {"num_gpus": 1, "frameworks": {"sglang": {"serve_args": "", "extra_env": {"A": "1"}}}},
        {"frameworks": {"sglang": {"serve_args": "--tp-size 2 --enable-torch-compile", "extra_env": {"A": "1"}}}},
        {"frameworks": {"sglang": {"serve_args": "--tp-size 2", "extra_env": {"A": "2"}}}},
        {"frameworks": {"sglang": {"serve_args": "--tp-size 2", "extra_env": {"A": "1"}, "model": "org/fp8"}}},
        {"prompt": "a dog"}, {"sglang_request_extra": {"flow_shift": 3.0}},
    ]
    hashes = {make_pair(**(base | variant)).config_hash for variant in variants}
    assert len(hashes) == len(variants)
    assert make_pair(**base).config_hash not in hashes


def test_serve_args_as_string_or_list_are_the_same_config() -> None:
    as_string = make_pair(frameworks={"sglang": {"serve_args": "--tp-size 2 --warmup"}}, num_gpus=2)
    as_list = make_pair(frameworks={"sglang": {"serve_args": ["--tp-size", "2", "--warmup"]}}, num_gpus=2)
    assert as_string.config_hash == as_list.config_hash


def test_framework_overrides_and_defaults() -> None:
    pair = make_pair("vllm-omni", num_gpus=4, frameworks={"vllm-omni": {"num_gpus": 1, "model": "org/m-diffusers"}},
                     matrix={"measurement_repeats": 5})
    assert (pair.num_gpus, pair.model, pair.measurement_repeats, pair.warmup_requests) == (1, "org/m-diffusers", 5, 1)
    assert pair.deadlines.case_minutes == 240
    # sglang's case-level request extras go to sglang only.
    assert make_pair("vllm-omni", sglang_request_extra={"x": 1}).request_extra == {}
    assert make_pair("sglang", sglang_request_extra={"x": 1}).request_extra == {"x": 1}
