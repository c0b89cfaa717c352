"""Starting, watching and stopping one inference server process.

The server runs in its own session, so stopping it stops every process it started, and a
cancelled caller does not take it down by accident. Deadlines are enforced here, not by Prefect.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from diffbench.client import Sample
from diffbench.engines import Engine, ServerSpec
from diffbench.errors import NotReady, OutOfMemory, RequestFailed, ServerExited

OOM_PATTERNS = ("CUDA out of memory", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError")
READY_POLL_S = 0.05
WATCH_POLL_S = 0.1
LOG_TAIL_LINES = 40
STOP_GRACE_S = 10.0


def _port_free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(side_offsets: tuple[int, ...] = (), attempts: int = 50) -> int:
    """A port that is free together with the side ports the engine opens next to it."""
    for _ in range(attempts):
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + max(side_offsets, default=0) < 65536 and all(_port_free(port + o) for o in side_offsets):
            return port
    raise OSError(f"no free port with side ports {side_offsets} after {attempts} attempts")


class Server:
    """A launched server: its process group, log file and pid file.

    Use as a context manager, so the process group is always stopped:

        with Server.start(engine, spec, workdir) as server:
            server.wait_ready(deadline_s=600)
            sample = server.generate(image=None)
    """

    def __init__(self, engine: Engine, spec: ServerSpec, process: subprocess.Popen[bytes], workdir: Path) -> None:
        self.engine, self.spec, self.process, self.workdir = engine, spec, process, workdir
        self.log_path = workdir / "server.log"
        self.pid_path = workdir / "server.pid"
        self.http = httpx.Client(base_url=spec.base_url, timeout=spec.pair.deadlines.request_s)
        self.argv = engine.command(spec)
        self.ready_s: float | None = None
        self._log_offset = 0

    @classmethod
    def start(cls, engine: Engine, spec: ServerSpec, workdir: Path) -> Server:
        workdir.mkdir(parents=True, exist_ok=True)
        argv = engine.command(spec)
        # Python servers buffer their output otherwise, and the log tail comes too late.
        env = os.environ | {"PYTHONUNBUFFERED": "1"} | engine.environment(spec)
        with open(workdir / "server.log", "ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        # What the reaper needs to stop this server if our process dies without stopping it.
        (workdir / "server.pid").write_text(json.dumps({
            "pid": process.pid, "started": _started(process.pid), "argv": argv,
            "owner_pid": os.getpid(), "owner_started": _started(os.getpid()),
            "case": spec.pair.case.id, "framework": spec.pair.framework,
        }))
        return cls(engine, spec, process, workdir)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _oom_line(self) -> str | None:
        """The first OOM line written since the last look, if any."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                chunk = log.read()
        except FileNotFoundError:
            return None
        # Keep a partial last line for the next look.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            if any(pattern in line for pattern in OOM_PATTERNS):
                return line.strip()
        return None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        """Raise if the server has exited or reported running out of memory."""
        if (line := self._oom_line()) is not None:
            raise OutOfMemory(f"{self._who()} ran out of memory: {line}", log_tail=self.log_tail())
        if (code := self.process.poll()) is not None:
            raise ServerExited(f"{self._who()} exited with code {code}", log_tail=self.log_tail())

    def _who(self) -> str:
        return f"{self.spec.pair.framework} server for case {self.spec.pair.case.id!r} (pid {self.process.pid})"

    def _ready_state(self) -> str | None:
        """None when ready, else what is still missing."""
        try:
            health = self.http.get("/health", timeout=1.0)
            if health.status_code != 200:
                return f"/health answers {health.status_code}"
            listed = [m.get("id") for m in self.http.get("/v1/models", timeout=1.0).json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return f"not answering ({type(exc).__name__})"
        if self.spec.model_path not in listed:
            return f"healthy, but /v1/models lists {listed}, not {self.spec.model_path!r}"
        return None

    def wait_ready(self, deadline_s: float | None = None) -> float:
        """Block until healthy with the model listed; return seconds waited."""
        deadline_s = deadline_s if deadline_s is not None else self.spec.pair.deadlines.ready_s
        started = time.monotonic()
        while True:
            self.check_alive()
            state = self._ready_state()
            if state is None:
                self.ready_s = time.monotonic() - started
                return self.ready_s
            if time.monotonic() - started > deadline_s:
                raise NotReady(f"{self._who()} not ready after {deadline_s:g} s: {state}", log_tail=self.log_tail())
            time.sleep(READY_POLL_S)

    def generate(self, image: bytes | None, timeout_s: float | None = None) -> Sample:
        """One measured request, while watching that the server stays alive."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        try:
            future = pool.submit(self.engine.generate, self.http, self.spec, image, self.workdir, timeout_s)
            while True:
                try:
                    return future.result(timeout=WATCH_POLL_S)
                except FutureTimeout:
                    self._check_alive_during_request()
                except RequestFailed:
                    # A failed request from a dead server is the server's failure.
                    self._check_alive_during_request()
                    raise
        finally:
            # Never wait here for a request stuck on a dead server.
            pool.shutdown(wait=False)

    def _check_alive_during_request(self) -> None:
        try:
            self.check_alive()
        except ServerExited:
            # Unblock the request thread: its connection may never close on its own.
            self.http.close()
            raise

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `grace_s`."""
        self.http.close()
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Children that ignored SIGTERM while their leader exited still go.
        _signal_group(self.process.pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same_process(pid: int, started: float | None) -> bool:
    """Whether `pid` is still the process that was recorded, not a later one with its number."""
    return started is not None and _started(pid) == started


def reap_leftovers(root: Path) -> list[str]:
    """Stop servers under `root` whose owning diffbench process is gone; return what was stopped.

    Servers are found only by our own pid files, never by process name.
    """
    reaped = []
    for pid_file in sorted(root.rglob("server.pid")):
        try:
            info = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if _same_process(info["owner_pid"], info["owner_started"]):
            continue  # its run is still going
        if _same_process(info["pid"], info["started"]):
            _signal_group(info["pid"], signal.SIGTERM)
            try:
                psutil.Process(info["pid"]).wait(timeout=STOP_GRACE_S)
            except (psutil.TimeoutExpired, psutil.NoSuchProcess):
                pass
            _signal_group(info["pid"], signal.SIGKILL)
            reaped.append(f"{info['framework']} server for case {info['case']!r} (pid {info['pid']})")
        pid_file.unlink(missing_ok=True)
    return reaped
