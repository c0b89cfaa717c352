"""A Prefect server and process workers on this machine, without Docker: for trying things out.

Everything runs as child processes in their own sessions, so `stop()` ends all of them. The
same stack serves `diffbench infra up|down|status` and the deployment tests. `up` leaves the
processes running and records them (pid and start time) in `stack.json` under its home, which
`down` and `status` read: a pid reused by another program is never taken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml

from diffbench.errors import DiffbenchError
from diffbench.prefect_api import prefect_cli, unhealthy
from diffbench.processes import same_process, started_at

POOL = "gpu"
HEALTH_TIMEOUT_S = 90.0
PROJECT = Path(__file__).resolve().parent.parent
AUTOMATION = PROJECT / "infra" / "automations" / "crash-silent-runs.yaml"
STATE_FILE = "stack.json"
STOP_WAIT_S = 20.0


class InfraError(DiffbenchError):
    """The local stack could not be brought up: a taken port, a server that exited or never got healthy."""

    error_class = "infra"


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: connections left in TIME_WAIT by a stopped server do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@dataclass
class LocalStack:
    """`prefect server start` plus process workers on the `gpu` pool, logging under `home`.

    Usage:

        stack = LocalStack(Path(".diffbench/infra"), port=4200)
        stack.start_server()
        stack.create_pool()
        stack.start_worker("gpu-host-1")
        ...
        stack.stop()
    """

    home: Path
    port: int = 4200
    auth: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def environment(self) -> dict[str, str]:
        """What a client of this stack needs: API address, credentials, its own Prefect home."""
        env = os.environ | self.env | {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        if self.auth:
            env["PREFECT_API_AUTH_STRING"] = self.auth
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / f"{name}.log", "ab") as log:
            # Own session: a worker started with `&` from a script can ignore SIGTERM for 45 s or more.
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, cwd=PROJECT)
        self.processes[name] = process
        return process

    def start_server(self) -> None:
        """Start `prefect server start` on `port` and wait until it answers; refuse a port already taken."""
        # Checked first: a server answering on a taken port would pass for ours while ours dies.
        if _port_taken(self.port):
            raise InfraError(f"port {self.port} on 127.0.0.1 is already in use (another `diffbench infra up`?); "
                             "stop that or choose another with --port")
        env = self.environment() | {
            "PREFECT_SERVER_API_PORT": str(self.port),
            # In-memory lease storage loses concurrency slots when the server restarts.
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
        }
        env.pop("PREFECT_API_URL")
        if self.auth:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth
        self._spawn("server", prefect_cli("server", "start", "--host", "127.0.0.1", "--port", str(self.port)), env)
        self.wait_healthy()

    def wait_healthy(self) -> None:
        server = self.processes["server"]
        if problem := unhealthy(self.api_url, server.poll, self.home / "server.log", HEALTH_TIMEOUT_S):
            raise InfraError(problem)

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `prefect` command against this stack, from the project root."""
        return subprocess.run(prefect_cli(*args), env=self.environment(), capture_output=True, text=True, check=True,
                              cwd=PROJECT)

    def create_pool(self, name: str = POOL) -> None:
        """The `gpu` process pool, from infra/pools/gpu-process.json (flow-run heartbeats on)."""
        self.run_cli("work-pool", "create", name, "--type", "process", "--overwrite", "--base-job-template",
                     str(PROJECT / "infra" / "pools" / "gpu-process.json"))

    def create_automation(self) -> bool:
        """The automation that marks flow runs Crashed when their heartbeats stop, unless it is there already;
        whether it was created now."""
        name = yaml.safe_load(AUTOMATION.read_text())["name"]
        if name in self.automations():
            return False
        self.run_cli("automation", "create", "--from-file", str(AUTOMATION))
        return True

    def automations(self) -> list[str]:
        """The names of the automations on the server, one per automation."""
        auth = tuple(self.auth.split(":", 1)) if self.auth else None
        response = httpx.post(f"{self.api_url}/automations/filter", json={}, auth=auth, timeout=30)
        response.raise_for_status()
        return [automation["name"] for automation in response.json()]

    def deploy(self) -> None:
        """`prefect deploy --all` from the project root."""
        self.run_cli("deploy", "--all")

    def start_worker(self, name: str, queues: tuple[str, ...] = (), limit: int | None = None,
                     env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A process worker on the `gpu` pool: all its queues unless `queues` are named."""
        argv = prefect_cli("worker", "start", "--pool", POOL, "--name", name, "--type", "process")
        argv += [arg for queue in queues for arg in ("--work-queue", queue)]
        argv += ["--limit", str(limit)] if limit else []
        return self._spawn(f"worker-{name}", argv, self.environment() | (env or {}))

    def record(self) -> None:
        """Write `stack.json`: the port and each running process's pid and start time, for `down` and `status`."""
        processes = {name: [process.pid, started_at(process.pid)] for name, process in self.processes.items()}
        (self.home / STATE_FILE).write_text(json.dumps({"port": self.port, "processes": processes}, indent=1))

    def stop(self, name: str | None = None) -> None:
        """Stop one process (and its children) by name, or all of them, workers first."""
        names = [name] if name else sorted(self.processes, key=lambda n: n == "server")
        for key in names:
            process = self.processes.pop(key)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def kill(self, name: str) -> None:
        """End a process and everything it started, in any session, at once: as a dying host would."""
        process = self.processes.pop(name)
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Recorded:
    """A stack `infra up` left running, as its `stack.json` says."""

    home: Path
    port: int
    processes: dict[str, tuple[int, float | None]]

    @classmethod
    def load(cls, home: Path) -> Recorded | None:
        try:
            state = json.loads((home / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        return cls(home, state["port"], {name: (pid, started) for name, (pid, started) in state["processes"].items()})

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def alive(self) -> dict[str, bool]:
        """Each recorded process: still the one `up` started?"""
        return {name: same_process(pid, started) for name, (pid, started) in self.processes.items()}

    def stop(self, report: Callable[[str], None]) -> None:
        """Stop every recorded process that is still ours, workers first, and forget the stack."""
        for name in sorted(self.processes, key=lambda n: n == "server"):
            pid, started = self.processes[name]
            if not same_process(pid, started):
                report(f"{name} (pid {pid}): already gone")
                continue
            began = time.monotonic()
            os.killpg(pid, signal.SIGTERM)
            try:
                psutil.Process(pid).wait(STOP_WAIT_S)
            except psutil.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
            report(f"{name} (pid {pid}): stopped in {time.monotonic() - began:.1f} s")
        (self.home / STATE_FILE).unlink(missing_ok=True)
