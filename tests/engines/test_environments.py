"""Where an engine lives: a given Python, a venv built once from pip specs, or the worker's PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffbench.config import load_matrix
from diffbench.engines import environments
from diffbench.engines.environments import EngineEnvironment, build_venv, environment_key, interpreter_of
from diffbench.errors import ConfigError, EnvironmentFailed
from diffbench.groups import server_groups

from conftest import make_pair


def test_a_program_is_taken_from_the_environment_bin(tmp_path: Path) -> None:
    environment = EngineEnvironment(tmp_path / "venv" / "bin" / "python")
    assert environment.argv(["sglang", "serve", "--port", "1"]) == [str(tmp_path / "venv/bin/sglang"), "serve",
                                                                   "--port", "1"]
    assert environment.argv(["/usr/bin/python3", "-m", "x"]) == ["/usr/bin/python3", "-m", "x"]
    assert environment.variables()["PATH"].startswith(f"{tmp_path / 'venv/bin'}{os.pathsep}")
    assert environment.variables()["VIRTUAL_ENV"] == str(tmp_path / "venv")
    assert EngineEnvironment().argv(["sglang"]) == ["sglang"] and EngineEnvironment().variables() == {}


def test_the_version_is_read_from_the_engines_own_python(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    own = EngineEnvironment(tmp_path / "venv" / "bin" / "python")
    assert own.version("pytest", "pytest") is None  # installed beside diffbench, not in that venv
    assert EngineEnvironment(Path(sys.executable)).version("pytest", "pytest") == pytest.__version__


def test_a_build_from_a_git_checkout_carries_its_commit_and_the_environment_its_hash(tmp_path: Path) -> None:
    """pip and uv write PEP 610's direct_url.json for a VCS install; its commit is what a PR build is."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    [site] = (tmp_path / "venv" / "lib").glob("python*/site-packages")
    bare = EngineEnvironment(tmp_path / "venv" / "bin" / "python").packages_sha256("sglang")
    info = site / "sglang-0.5.24.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sglang\nVersion: 0.5.24\n")
    (info / "direct_url.json").write_text(json.dumps(
        {"url": "https://github.com/sgl-project/sglang", "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef"}}))
    environment = EngineEnvironment(tmp_path / "venv" / "bin" / "python")
    assert environment.version("sglang", "sglang") == "0.5.24 (commit 0123456789ab)"
    # Any package added, removed or moved changes the environment's hash: results say when a worker's stack moved.
    assert bare and len(bare) == 16 and environment.packages_sha256("sglang") not in (None, bare)


def test_a_console_scripts_interpreter_comes_from_its_first_line(tmp_path: Path) -> None:
    script = tmp_path / "sglang"
    script.write_text(f"#!{sys.executable}\nprint('hi')\n")
    script.chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{tmp_path}{os.pathsep}{path}"
    try:
        assert interpreter_of("sglang") == Path(sys.executable)
        assert EngineEnvironment().version("pytest", "sglang") == pytest.__version__
    finally:
        os.environ["PATH"] = path
    assert interpreter_of("no-such-program-here") is None


def test_the_key_follows_the_specs_and_the_files_they_name(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("six==1.16.0\n")
    first = environment_key(["--no-deps", "-r", str(lock)])
    assert environment_key(["--no-deps", "-r", str(lock)]) == first
    copy = tmp_path / "clone" / "lock.txt"
    copy.parent.mkdir()
    copy.write_text(lock.read_text())
    assert environment_key(["--no-deps", "-r", str(copy)]) == first  # the same lock in another clone
    assert environment_key(["--no-deps", f"--requirement={copy}"]) == environment_key(
        ["--no-deps", "--requirement", str(lock)])
    lock.write_text("six==1.17.0\n")
    assert environment_key(["--no-deps", "-r", str(lock)]) != first
    assert environment_key(["six==1.16.0"]) != environment_key(["six==1.17.0"])
    with pytest.raises(EnvironmentFailed, match="cannot read"):
        environment_key(["-r", str(tmp_path / "missing.txt")])


def test_a_pip_venv_is_built_once_then_reused(tmp_path: Path) -> None:
    built = build_venv(["six==1.16.0"], tmp_path)
    assert built.built_s > 0 and built.version("six", "six") == "1.16.0"
    again = build_venv(["six==1.16.0"], tmp_path)
    assert (again.python, again.built_s) == (built.python, 0.0)
    assert environments.existing_environment(make_pair(frameworks={"sglang": {"pip": "six==1.16.0"}}).options,
                                             tmp_path) == EngineEnvironment(built.python)


def test_a_bad_spec_fails_with_the_installers_words(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentFailed, match="no-such-package-diffbench") as caught:
        build_venv(["no-such-package-diffbench==1.0"], tmp_path)
    assert caught.value.error_class == "environment" and not caught.value.retryable
    # A half-built venv is not taken for a good one next time.
    key = environment_key(["no-such-package-diffbench==1.0"])
    assert not (tmp_path / key / environments.COMPLETE_MARKER).exists()


def test_a_failed_build_never_shows_its_index_credentials(tmp_path: Path) -> None:
    """The failure's message is stored with the result and shown on the dashboard; the log stays on disk."""
    spec = ["--index-url", "http://ci:s3cr3t@127.0.0.1:9/simple", "no-such-package-diffbench==1.0"]
    with pytest.raises(EnvironmentFailed) as caught:
        build_venv(spec, tmp_path)
    log = (tmp_path / f"{environment_key(spec)}.log").read_text()
    assert "http://***@127.0.0.1:9/simple" in str(caught.value)
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in log.splitlines()[0]


def test_a_missing_interpreter_is_refused(tmp_path: Path) -> None:
    options = make_pair(frameworks={"sglang": {"python": str(tmp_path / "nope" / "python")}}).options
    with pytest.raises(EnvironmentFailed, match="not an executable interpreter"):
        environments.prepare(options, tmp_path)


def test_config_takes_one_environment_per_engine(write_config) -> None:
    both = write_config("""
        cases:
          - {id: c, model: /m, task: text-to-image,
             frameworks: {sglang: {python: /opt/sgl/bin/python, pip: sglang==0.5.23}}}
    """)
    with pytest.raises(ConfigError, match="case 'c': frameworks.sglang: an engine lives in one environment, "
                                          "but python and pip are both given"):
        load_matrix(both)
    relative = write_config("""
        cases:
          - {id: a, model: /m, task: text-to-image, frameworks: {sglang: {pip: "--no-deps -r sglang.lock"}}}
          - {id: b, model: /m, task: text-to-image, frameworks: {sglang: {pip: "sglang==0.5.23"}}}
          - {id: c, model: /m, task: text-to-image, frameworks: {sglang: {pip: "sglang==0.5.23"}}}
    """)
    matrix = load_matrix(relative)
    assert matrix.pairs[0].options.pip == ["--no-deps", "-r", str(relative.parent / "sglang.lock")]
    # Different environments never share a server; the same one does.
    assert [[p.case.id for p in g.pairs] for g in server_groups(list(matrix.pairs))] == [["a"], ["b", "c"]]
