"""Servers in containers, through the Docker Engine API; Docker's errors are translated here.

Each container carries labels naming the diffbench run, case and owning process, so that
leftovers of a crashed or cancelled run are found by label, never by image or name.
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest

from diffbench.cases import DockerLauncher
from diffbench.errors import DockerUnavailable, ImageMissing
from diffbench.processes import owner, same_process

OWNER_LABEL = "diffbench.owner_pid"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
STOP_GRACE_S = 10


def _check_listening(path: str) -> None:
    with closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as probe:
        try:
            probe.connect(path)
        except OSError as exc:
            raise DockerUnavailable(f"the Docker Engine cannot be reached at unix://{path}: {exc.strerror}") from exc


def docker_client() -> docker.DockerClient:
    """A client of the Docker Engine that answered a ping; close it after use."""
    host = os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST)
    if host.startswith("unix://"):
        # Checked here: docker-py leaks a socket when nothing listens at the path.
        _check_listening(host.removeprefix("unix://"))
    try:
        client = docker.from_env()
    except DockerException as exc:
        raise DockerUnavailable(f"the Docker Engine cannot be reached: {exc}") from exc
    try:
        client.ping()
    except DockerException as exc:
        client.close()
        raise DockerUnavailable(f"the Docker Engine cannot be reached: {exc}") from exc
    return client


def model_mount(model_path: str) -> str:
    """The folder to mount for a model: a hub snapshot links into its repo's blobs, so the repo folder."""
    path = Path(model_path)
    return str(path.parents[1]) if path.parent.name == "snapshots" else str(path)


def volumes(mounts: list[str]) -> dict[str, dict[str, str]]:
    """`host:container[:mode]` strings as docker-py's volume mapping."""
    mapping = {}
    for mount in mounts:
        host, _, rest = mount.partition(":")
        target, _, mode = rest.partition(":")
        mapping[host] = {"bind": target or host, "mode": mode or "rw"}
    return mapping


def container_kwargs(options: DockerLauncher, argv: list[str], env: dict[str, str], labels: dict[str, str],
                     gpus: tuple[int, ...], mounts: list[str], port: int, workdir: Path) -> dict[str, Any]:
    """Everything `containers.create` gets for one server; the plan shows the same."""
    kwargs: dict[str, Any] = {
        "command": argv,
        # Engines write outputs relative to their cwd (sglang: outputs/, inputs/uploads/): keep them in ours.
        "working_dir": str(workdir),
        "environment": env | options.env,
        "labels": labels,
        "volumes": volumes([*mounts, *options.volumes]),
        "shm_size": options.shm_size,
    }
    if options.network == "host":
        kwargs["network_mode"] = "host"
    else:
        kwargs["ports"] = {f"{port}/tcp": ("127.0.0.1", port)}
    if gpus:
        # Exactly the GPUs the case was given; inside, they are numbered from 0.
        kwargs["device_requests"] = [DeviceRequest(driver="nvidia", device_ids=[str(g) for g in gpus],
                                                   capabilities=[["gpu"]])]
    return kwargs


class ContainerHandle:
    """A running server container whose output is copied into the case's log file."""

    def __init__(self, client: docker.DockerClient, container: Container, log_path: Path, image_digest: str) -> None:
        self.client, self.container, self.log_path, self.image_digest = client, container, log_path, image_digest
        self._stream = container.logs(stream=True, follow=True)
        self._logs = threading.Thread(target=self._copy_logs, name=f"logs-{container.short_id}", daemon=True)
        self._logs.start()

    @classmethod
    def start(cls, options: DockerLauncher, kwargs: dict[str, Any], log_path: Path) -> ContainerHandle:
        client = docker_client()
        try:
            container, digest = _create_and_start(client, options, kwargs)
        except BaseException:
            client.close()
            raise
        return cls(client, container, log_path, digest)

    def _copy_logs(self) -> None:
        with open(self.log_path, "ab") as log:
            try:
                for chunk in self._stream:
                    log.write(chunk)
                    log.flush()
            except (DockerException, OSError, ValueError):
                pass  # the container or the stream is gone; what was written stays

    @property
    def description(self) -> str:
        return f"container {self.container.short_id}"

    def exit_code(self) -> int | None:
        try:
            self.container.reload()
        except NotFound:
            return -1
        if self.container.status in ("exited", "dead"):
            return int(self.container.attrs["State"]["ExitCode"])
        return None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop and remove the container; its log file keeps what it printed."""
        try:
            self.container.stop(timeout=int(grace_s))
        except (NotFound, APIError):
            pass  # already gone, or stopping failed: removing by force still ends it
        self._logs.join(timeout=5)
        self._stream.close()
        try:
            self.container.remove(force=True)
        except NotFound:
            pass
        self.client.close()


def _create_and_start(client: docker.DockerClient, options: DockerLauncher,
                      kwargs: dict[str, Any]) -> tuple[Container, str]:
    try:
        image = client.images.get(options.reference)
    except ImageNotFound as exc:
        raise ImageMissing(f"image {options.reference} is not on this host; build or pull it first") from exc
    labels = kwargs["labels"] | {key: str(value) for key, value in owner().items()}
    try:
        container = client.containers.create(image.id, **kwargs | {"labels": labels})
    except APIError as exc:
        raise DockerUnavailable(f"the Docker Engine refused to create {options.reference}: {exc}") from exc
    try:
        container.start()
    except APIError as exc:
        container.remove(force=True)
        raise DockerUnavailable(f"the Docker Engine refused to start {options.reference}: {exc}") from exc
    return container, (image.attrs.get("RepoDigests") or [image.id])[0]


def reap_containers() -> list[str]:
    """Remove our containers whose owning diffbench process is gone; none without a Docker Engine."""
    try:
        client = docker_client()
    except DockerUnavailable:
        return []
    reaped = []
    with closing(client):
        for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
            labels = container.labels
            if same_process(int(labels[OWNER_LABEL]), float(labels.get("diffbench.owner_started") or 0)):
                continue
            container.remove(force=True)
            reaped.append(f"{labels.get('diffbench.framework')} container for case "
                          f"{labels.get('diffbench.case')!r} ({container.short_id})")
    return reaped
