"""Shared fixtures: the sglang reference files, tiny models, and matrix factories."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from diffbench.cases import Case, Matrix, Pair, resolve
from diffbench.engines import ENGINES, ServerSpec

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
SGLANG_CONFIGS = sorted((REFERENCE / "sglang" / "configs").glob("*.json"))
if not SGLANG_CONFIGS:
    raise RuntimeError(f"the sglang reference files are missing: expected them under {REFERENCE}")


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
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both tiny pipelines, built once per test session."""
    from diffbench.reference.tiny_models import build

    root = tmp_path_factory.mktemp("models")
    return {arch: build(arch, root / f"tiny-{arch}") for arch in ("flux", "wan")}


def case_of(**fields: object) -> Case:
    return Case.model_validate({"id": "c", "model": "m", "task": "text-to-image", "frameworks": {"sglang": {}}} | fields)


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
