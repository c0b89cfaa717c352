"""An engine build as a run parameter: where each framework's engine comes from, replaced for one run.

A new build is a new point of the same series; a change of the case's config is a new series.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffbench.cases import DockerLauncher
from diffbench.config import load_matrix
from diffbench.errors import ConfigError
from diffbench.results import series_key

MATRIX = """
cases:
  - id: flux
    model: org/flux
    task: text-to-image
    frameworks:
      sglang: {pip: "sglang==0.5.23", serve_args: --tp-size 1}
      vllm-omni:
        launcher: {type: docker, image: "vllm/vllm-omni:v0.30.0", digest: "sha256:%s", network: publish,
                   volumes: ["/data:/data:ro"]}
  - id: wan
    model: org/wan
    task: text-to-video
    frameworks: {sglang: {python: /opt/sglang/bin/python}}
""" % ("a" * 64)


def key(pair: object) -> str:
    return series_key(pair.config_hash, pair.engine, "NVIDIA H200", "m")


def test_each_kind_of_build_replaces_where_the_engine_comes_from_in_every_case(
        write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(MATRIX)
    configured = {(p.case.id, p.framework): p for p in load_matrix(path).pairs}
    monkeypatch.chdir(tmp_path)
    builds = {"sglang": "pip:./wheels/sglang-0.5.24-py3-none-any.whl --no-deps", "vllm-omni": "image:vllm/omni:pr-7"}
    built = {(p.case.id, p.framework): p for p in load_matrix(path, builds).pairs}

    wheel = os.path.join(tmp_path, "wheels/sglang-0.5.24-py3-none-any.whl")
    assert built["flux", "sglang"].options.pip == built["wan", "sglang"].options.pip == [wheel, "--no-deps"]
    assert built["wan", "sglang"].options.python is None, "one environment: the configured python is replaced"
    assert built["flux", "sglang"].options.serve_args == ["--tp-size", "1"], "only the environment changes"
    launcher = built["flux", "vllm-omni"].options.launcher
    assert isinstance(launcher, DockerLauncher) and launcher.reference == "vllm/omni:pr-7"
    assert (launcher.network, launcher.volumes) == ("publish", ["/data:/data:ro"]), "the container settings stay"
    assert built["flux", "vllm-omni"].engine_build == "image: vllm/omni:pr-7"
    assert built["flux", "sglang"].engine_build == f"pip: {wheel} --no-deps"
    # A new build is a new point of the same series, whatever kind it is.
    assert {k: key(p) for k, p in built.items()} == {k: key(p) for k, p in configured.items()}

    python = load_matrix(path, {"sglang": "python:venvs/pr/bin/python"}).pairs[0]
    assert str(python.options.python) == os.path.join(tmp_path, "venvs/pr/bin/python") and python.options.pip is None
    assert load_matrix(path, {"sglang": "sglang==0.5.24"}).pairs[0].options.pip == ["sglang==0.5.24"]


def test_a_config_change_starts_a_new_series_and_a_build_does_not(write_config) -> None:
    path = write_config(MATRIX)
    flux = load_matrix(path).pairs[0]
    compiled = MATRIX.replace("--tp-size 1", "--tp-size 1 --enable-torch-compile")
    other_flags = load_matrix(write_config(compiled, name="other.yaml")).pairs[0]
    other_image = load_matrix(path, {"sglang": "image:lmsysorg/sglang:v0.5.24"}).pairs[0]
    assert key(other_flags) != key(flux) and key(other_image) == key(flux)


@pytest.mark.parametrize("build", ["pip:--index-url https://ci:s3cr3t@pypi.example.com/simple sglang==0.5.24",
                                   "pip:https://example.com/sglang-0.5.24-py3-none-any.whl?token=s3cr3t"])
def test_a_build_parameter_with_a_credential_is_refused(write_config, build: str) -> None:
    """Run parameters are shown in the UI to anyone who can read the run, like database_url's password."""
    with pytest.raises(ConfigError) as caught:
        load_matrix(write_config(MATRIX), {"sglang": build})
    assert "carries a credential" in caught.value.problems[0] and "s3cr3t" not in caught.value.problems[0]


def test_credentials_in_a_configured_pip_spec_are_never_stored(write_config) -> None:
    spec = "--index-url https://ci:s3cr3t@pypi.example.com/simple sglang==0.5.24"
    pair = load_matrix(write_config(MATRIX.replace('pip: "sglang==0.5.23"', f'pip: "{spec}"'))).pairs[0]
    assert pair.engine_build == "pip: --index-url https://***@pypi.example.com/simple sglang==0.5.24"
    assert pair.options.pip[1] == "https://ci:s3cr3t@pypi.example.com/simple", "the install itself still gets them"


@pytest.mark.parametrize(("builds", "message"), [
    ({"lightx2v": "pip:lightx2v"}, "engines: lightx2v: no case of nightly.yaml runs it; its frameworks: sglang, "
                                   "vllm-omni"),
    ({"sglang": "main"}, "engines: sglang: 'main' is not a build; give pip:SPEC"),
    ({"sglang": "pip:"}, "engines: sglang: 'pip:' is not a build"),
    ({"sglang": "image:"}, "engines: sglang: 'image:' is not a build"),
], ids=["unknown-framework", "no-kind", "empty-pip", "empty-image"])
def test_a_bad_build_names_the_parameter_and_the_framework(write_config, builds: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_matrix(write_config(MATRIX), builds)
    assert message in "\n".join(caught.value.problems)
