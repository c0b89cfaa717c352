"""Engines in containers, against a real Docker Engine: GPUs, mounts, logs, failures, leftovers."""

from __future__ import annotations

import os
import socket
import time
from contextlib import closing
from pathlib import Path

import pytest

from diffbench.cases import DockerLauncher
from diffbench.client import with_perf_dump
from diffbench.containers import OWNER_LABEL, container_kwargs, reap_containers
from diffbench.engines import ServerSpec
from diffbench.engines.reference import ReferenceEngine
from diffbench.errors import DockerUnavailable, ImageMissing, ServerExited
from diffbench.launcher import Server, free_port

from conftest import make_pair, reference_in_docker

LABELS = {"diffbench.run": "test-run", "diffbench.case": "c", "diffbench.framework": "diffusers"}


def ours(client) -> list:
    return client.containers.list(all=True, filters={"label": OWNER_LABEL})


def docker_pair(model: Path, image: str, serve_args: str = "--device cpu", **launcher: object):
    options = reference_in_docker(image, **launcher) | {"serve_args": serve_args}
    return make_pair("diffusers", model=str(model), width=64, height=64, num_inference_steps=2,
                     frameworks={"diffusers": options})


def start(pair, tmp_path: Path) -> Server:
    return Server.start(ReferenceEngine(), ServerSpec(pair, pair.bind_host, free_port(), pair.model), tmp_path,
                        {"diffbench.run": "test-run"})


def test_a_two_gpu_case_on_gpus_2_and_3_asks_for_exactly_those(docker_engine, reference_image) -> None:
    options = DockerLauncher(type="docker", image=reference_image, network="publish")
    kwargs = container_kwargs(options, ["true"], {"A": "1"}, LABELS, (2, 3), ["/models/flux:/models/flux:ro"], 31000,
                              Path("/runs/case"))
    container = docker_engine.containers.create(reference_image, **kwargs)
    try:
        host = container.attrs["HostConfig"]
        assert host["DeviceRequests"] == [{"Driver": "nvidia", "Count": 0, "DeviceIDs": ["2", "3"],
                                           "Capabilities": [["gpu"]], "Options": {}}]
        assert host["PortBindings"] == {"31000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "31000"}]}
        assert "/models/flux:/models/flux:ro" in host["Binds"] and host["ShmSize"] == 16 * 1024**3
        assert container.labels == LABELS
    finally:
        container.remove(force=True)


def test_reference_engine_serves_from_its_container(docker_engine, reference_image, tiny_models,
                                                    tmp_path: Path) -> None:
    pair = docker_pair(tiny_models["flux"], reference_image, network="publish")
    with start(pair, tmp_path) as server:
        assert server.wait_ready(120) > 0
        sample = with_perf_dump(server.engine, server.generate(server.spec.pair, None))
        [container] = [c for c in ours(docker_engine) if c.labels["diffbench.run"] == "test-run"]
        assert container.labels["diffbench.case"] == "c" and container.labels["diffbench.framework"] == "diffusers"
        mounts = {m["Destination"]: m["RW"] for m in container.attrs["Mounts"]}
        assert mounts[str(tiny_models["flux"])] is False  # the model is mounted read-only
    assert (sample.width, sample.server_latency_source) == (64, "perf_dump")
    assert server.handle.image_digest.startswith("sha256:")
    assert "Uvicorn running" in (tmp_path / "server.log").read_text()  # the container's log, copied
    assert not ours(docker_engine)


def test_engine_refusing_its_arguments_is_reported_and_removed(docker_engine, reference_image, tiny_models,
                                                          tmp_path: Path) -> None:
    pair = docker_pair(tiny_models["flux"], reference_image, serve_args="--device cpu --no-such-flag")
    started = time.monotonic()
    with start(pair, tmp_path) as server, pytest.raises(ServerExited) as caught:
        server.wait_ready(120)
    assert time.monotonic() - started < 60
    assert caught.value.error_class == "bad_serve_args" and not caught.value.retryable
    assert "refused its arguments (exit 2): error: unrecognized arguments: --no-such-flag" in str(caught.value)
    assert not ours(docker_engine)


def test_missing_image_and_unreachable_engine(docker_engine, tiny_models, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageMissing, match="diffbench-nonexistent:1 is not on this host") as caught:
        start(docker_pair(tiny_models["flux"], "diffbench-nonexistent:1"), tmp_path)
    assert caught.value.error_class == "image_missing"
    stale = tmp_path / "stale-docker.sock"  # what a stopped dockerd leaves behind
    with closing(socket.socket(socket.AF_UNIX)) as left_behind:
        left_behind.bind(str(stale))
    for path in (tmp_path / "no-docker.sock", stale):
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        with pytest.raises(DockerUnavailable, match="the Docker Engine cannot be reached") as caught:
            start(docker_pair(tiny_models["flux"], "anything:1"), tmp_path)
        assert caught.value.error_class == "docker_unavailable"
        assert reap_containers() == []


def test_containers_of_a_dead_owner_are_found_by_label_and_removed(docker_engine, reference_image) -> None:
    python = str(Path(os.sys.executable).resolve())
    kwargs = {"command": [python, "-c", "import time; time.sleep(300)"], "detach": True,
              "volumes": {"/usr": {"bind": "/usr", "mode": "ro"},
                          str(Path(os.sys.base_prefix).resolve()): {"bind": str(Path(os.sys.base_prefix).resolve()),
                                                                     "mode": "ro"}}}
    dead = docker_engine.containers.run(reference_image, labels=LABELS | {OWNER_LABEL: "999999999",
                                                                          "diffbench.owner_started": "1.0"}, **kwargs)
    unlabelled = docker_engine.containers.run(reference_image, **kwargs)
    try:
        assert reap_containers() == [f"diffusers container for case 'c' ({dead.short_id})"]
        assert not ours(docker_engine)
        unlabelled.reload()
        assert unlabelled.status == "running", "a container without our labels is never touched"
    finally:
        unlabelled.remove(force=True)
