"""The Prefect API of a `diffbench run` on a host where none is configured.

Prefect would start a temporary server of its own, in the run's process group: Ctrl-C on the
terminal kills it mid-run (every later call of the run then fails, noisily), and a killed run
leaves it behind. This one runs in its own session with a pid file, like an engine's server, so
the run stops it itself and the next run reaps it if the run was killed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from diffbench.errors import EnvironmentFailed
from diffbench.launcher import free_port
from diffbench.processes import ProcessHandle

START_TIMEOUT_S = 120.0


def prefect_cli(*args: str) -> list[str]:
    """Prefect's CLI as this Python runs it: no `prefect` script needs to be on the PATH or beside it."""
    return [sys.executable, "-m", "prefect", *args]


def ensure_api(state_dir: Path) -> None:
    """Use the configured Prefect API (PREFECT_API_URL), else start one that lives as long as this process.

    It is stopped at exit, after Prefect has sent its last logs and events to it.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    port = free_port()
    folder = state_dir.resolve() / "prefect-api" / str(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    argv = prefect_cli("server", "start", "--host", "127.0.0.1", "--port", str(port))
    env = {"PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    handle = ProcessHandle.start(argv, env, folder / "server.log",
                                 {"diffbench.what": f"Prefect API server of diffbench run pid {os.getpid()}"})
    url = f"http://127.0.0.1:{port}/api"
    try:
        if problem := unhealthy(url, handle.exit_code, folder / "server.log", START_TIMEOUT_S):
            raise EnvironmentFailed(problem)
    except BaseException:
        handle.stop(grace_s=5)
        raise  # its folder is kept: the log says why it failed
    # atexit runs after the interpreter's thread shutdown, where Prefect drains what it still has to send.
    atexit.register(_stop, handle, folder)
    os.environ["PREFECT_API_URL"] = url


def _stop(handle: ProcessHandle, folder: Path) -> None:
    handle.stop(grace_s=5)
    shutil.rmtree(folder, ignore_errors=True)


def healthy(api_url: str) -> bool:
    """Whether the Prefect server at `api_url` answers its health check now."""
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def unhealthy(api_url: str, exit_code: Callable[[], int | None], log: Path, timeout_s: float) -> str | None:
    """Wait until the Prefect server at `api_url` answers; None when it does, else why it never will."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (code := exit_code()) is not None:
            return f"the Prefect server exited with code {code}; see {log}"
        if healthy(api_url):
            return None
        time.sleep(0.1)
    return f"the Prefect server did not answer within {timeout_s:g} s; see {log}"
