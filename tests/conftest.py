"""Shared fixtures: the sglang files, tiny models, and matrix factories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from diffbench.cases import Matrix, Pair, resolve
from diffbench.engines import ENGINES, ServerSpec

# Read when tasks/ is first imported (by the flow tests): short waits keep retry tests quick.
os.environ.setdefault("DIFFBENCH_RETRY_DELAYS_S", "[0.1, 0.1]")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# This session's runs wait for each other, never for a run of the user's on the same host.
os.environ.setdefault("DIFFBENCH_HOST_LOCK", str(Path(tempfile.gettempdir()) / f"diffbench-tests-{os.getpid()}.lock"))

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SGLANG_CONFIGS = sorted((FIXTURES / "sglang" / "configs").glob("*.json"))


def make_pair(framework: str = "sglang", matrix: dict | None = None, **case: object) -> Pair:
    """A resolved pair from case fields; `frameworks` defaults to just `framework`."""
    fields = {"id": "c", "model": "org/model", "task": "text-to-image", "prompt": "a cat",
              "frameworks": {framework: {}}} | case
    parsed_matrix = Matrix.model_validate({"cases": [fields]} | (matrix or {}))
    parsed = parsed_matrix.cases[0]
    options = ENGINES[framework].options.model_validate(parsed.frameworks[framework])
    return resolve(parsed_matrix, parsed, framework, options)


def make_spec(pair: Pair, port: int = 30000, gpus: tuple[int, ...] = ()) -> ServerSpec:
    return ServerSpec(pair, "127.0.0.1", port, pair.model, gpus)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a matrix file from dedented text and return its path."""

    def write(text: str, name: str = "nightly.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect server for the flow tests, one per test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both tiny pipelines, built once per test session."""
    from diffbench.reference.tiny_models import build

    root = tmp_path_factory.mktemp("models")
    return {arch: build(arch, root / f"tiny-{arch}") for arch in ("flux", "wan")}


@contextmanager
def serve_in_thread(app: object) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread; yield its base URL."""
    import uvicorn

    from diffbench.launcher import free_port

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def _require_postgres(why: str) -> None:
    """Postgres tests never skip in CI; on a developer's machine they may."""
    if os.environ.get("CI"):
        pytest.fail(f"Postgres is required in CI: {why}")
    pytest.skip(why)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database, per test, on the Postgres named by DIFFBENCH_TEST_POSTGRES_URL (set by .ci/run)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    server = os.environ.get("DIFFBENCH_TEST_POSTGRES_URL")
    if not server:
        _require_postgres("DIFFBENCH_TEST_POSTGRES_URL is not set")
    name = f"diffbench_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


class ThrowawayPostgres:
    """A Postgres server of the test's own, which the test may stop and start again."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(POSTGRES_BIN / "pg_ctl"), "-D",
                        str(self.directory / "data"), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-o", options, "-l", str(self.directory / "log"), "-w", "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    from diffbench.launcher import free_port

    if not (POSTGRES_BIN / "initdb").exists():
        _require_postgres(f"no Postgres binaries in {POSTGRES_BIN}")
    directory = Path(tempfile.mkdtemp(prefix="diffbench-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", str(POSTGRES_BIN / "initdb"), "-D", str(directory / "data"),
                    "--auth=trust", "-U", "postgres"], check=True, capture_output=True)
    server = ThrowawayPostgres(directory, free_port())
    server.start()
    try:
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(POSTGRES_BIN / "pg_ctl"), "-D",
                        str(directory / "data"), "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database(database_url: str) -> Iterator[object]:
    """An engine on the migrated database of `database_url`, disposed afterwards."""
    from diffbench.storage import store

    engine = store.open_database(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


PROJECT = Path(__file__).resolve().parents[1]
REFERENCE_IMAGE = "diffbench-reference-test:latest"


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[object]:
    """A reachable Docker Engine; CI starts one and these tests never skip there."""
    from diffbench.containers import docker_client
    from diffbench.errors import DockerUnavailable

    try:
        client = docker_client()
    except DockerUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"a Docker Engine is required in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def reference_image(docker_engine) -> str:
    """An image built here, no registry: an empty root whose /usr, Python and project come from mounts."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("etc", "tmp", "proc", "sys", "dev", "root", "var", "var/tmp", "work"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        for name in ("bin", "lib", "lib64", "sbin"):  # Debian's merged /usr
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{name}"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    repository, tag = REFERENCE_IMAGE.split(":")
    docker_engine.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    return REFERENCE_IMAGE


def reference_in_docker(image: str, **launcher: object) -> dict:
    """Framework options: the reference engine in `image`, this machine's Python mounted read-only."""
    python_home = str(Path(sys.base_prefix).resolve())
    mounts = ["/usr:/usr:ro", f"{python_home}:{python_home}:ro", f"{PROJECT}:{PROJECT}:ro"]
    return {"serve_args": "--device cpu",
            "launcher": {"type": "docker", "image": image, "volumes": mounts} | launcher}
