"""Starting, watching and stopping one inference server, as a process or in a container.

A process server runs in its own session, so stopping it stops every process it started; a
container is stopped and removed. Either way a cancelled caller does not take it down by
accident, so diffbench stops it itself. Deadlines are enforced here, not by Prefect.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from diffbench import client
from diffbench.cases import DockerLauncher, Pair
from diffbench.client import Sample
from diffbench.containers import ContainerHandle, container_kwargs, model_mount, reap_containers
from diffbench.engines import Engine, ServerSpec
from diffbench.engines.environments import EngineEnvironment
from diffbench.errors import Cancelled, NotReady, OutOfMemory, RequestFailed, ServerArgsRejected, ServerExited
from diffbench.processes import STOP_GRACE_S, ProcessHandle, reap_processes

OOM_PATTERNS = ("CUDA out of memory", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError")
# An argparse refusal, whatever the exit code (sglang's diffusion CLI exits 1, vllm's 2): the
# engine's CLI refused what we passed, and the same argv fails again.
ARGS_REFUSED = re.compile(
    r"(^|: )error: (unrecognized arguments|ambiguous option|argument -|the following arguments are required)",
    re.MULTILINE)
READY_POLL_S = 0.05
WATCH_POLL_S = 0.1
# A killed server's sockets close a moment before its exit is reported (sooner still for a
# container, whose state the daemon updates later); this long a dropped connection waits for it.
EXIT_NOTICE_S = 3.0
LOG_TAIL_LINES = 40


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
    """A launched server, as a process group or a container, with its log file.

    Use as a context manager, so the server is always stopped:

        with Server.start(engine, spec, workdir, labels) as server:
            server.wait_ready(deadline_s=600)
            sample = server.generate(spec.pair, image=None)
    """

    def __init__(self, engine: Engine, spec: ServerSpec, handle: ProcessHandle | ContainerHandle,
                 workdir: Path, argv: list[str], log_offset: int = 0) -> None:
        self.engine, self.spec, self.handle, self.workdir, self.argv = engine, spec, handle, workdir, argv
        self.log_path = workdir / "server.log"
        # The engine build this server runs; a container's is its image digest instead.
        self.engine_version: str | None = None
        # `EngineEnvironment.packages_sha256` of a process server; a container's image digest says it instead.
        self.engine_packages: str | None = None
        self.http = client.connect(spec.base_url)
        self.ready_s: float | None = None
        # Each case's fastest client latency so far: when to start polling its next video finely.
        self._fastest_s: dict[str, float] = {}
        # Where this launch's output starts: a relaunch appends to the same log.
        self._launch_offset = self._log_offset = log_offset
        # Requests under load check the log from several threads; each chunk must be read once.
        self._log_lock = threading.Lock()
        _live.add(self)

    @classmethod
    def start(cls, engine: Engine, spec: ServerSpec, workdir: Path, labels: dict[str, str] | None = None,
              environment: EngineEnvironment | None = None) -> Server:
        """Start `spec`'s server as its launcher says, from `environment` (default: the worker's PATH).

        `labels` name the run and case it belongs to; the server's cwd is `workdir`.
        """
        if reason := stop_reason():
            raise Cancelled(f"{spec.pair.framework} server for case {spec.pair.case.id!r} not started: "
                            f"the run was stopped by {reason}")
        environment = environment or EngineEnvironment()
        workdir = workdir.resolve()  # a container mounts it at the same, absolute, path
        workdir.mkdir(parents=True, exist_ok=True)
        labels = {"diffbench.case": spec.pair.case.id, "diffbench.framework": spec.pair.framework,
                  "diffbench.what": f"{spec.pair.framework} server for case {spec.pair.case.id!r}"} | (labels or {})
        engine.prepare(spec, workdir)
        argv, log_path = environment.argv(engine.command(spec)), workdir / "server.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        launcher = spec.pair.options.launcher
        # Python servers buffer their output otherwise, and the log tail comes too late.
        env = {"PYTHONUNBUFFERED": "1"} | environment.variables() | engine.environment(spec)
        if isinstance(launcher, DockerLauncher):
            env.pop("CUDA_VISIBLE_DEVICES", None)  # the container is given exactly its GPUs
            mounts = [f"{model_mount(spec.model_path)}:{model_mount(spec.model_path)}:ro", f"{workdir}:{workdir}"]
            kwargs = container_kwargs(launcher, argv, env, labels, spec.gpus, mounts, spec.port, workdir)
            return cls(engine, spec, ContainerHandle.start(launcher, kwargs, log_path), workdir, argv, offset)
        server = cls(engine, spec, ProcessHandle.start(argv, env, log_path, labels), workdir, argv, offset)
        server.engine_version = engine.version(spec, environment, argv[0])
        server.engine_packages = environment.packages_sha256(argv[0])
        return server

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
        with self._log_lock:
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
        return self.handle.exit_code() is None

    def check_alive(self) -> None:
        """Raise if the server has exited or reported running out of memory, or the run is being stopped."""
        if reason := stop_reason():
            raise Cancelled(f"{self._who()}: the run was stopped by {reason}")
        if (line := self._oom_line()) is not None:
            raise OutOfMemory(f"{self._who()} ran out of memory: {line}", log_tail=self.log_tail())
        if (code := self.handle.exit_code()) is not None:
            tail = self.log_tail()
            if refusal := ARGS_REFUSED.search(self._launch_output()):
                line = refusal.string[refusal.start():].splitlines()[0].lstrip(": ")
                raise ServerArgsRejected(f"{self._who()} refused its arguments (exit {code}): {line}", log_tail=tail)
            raise ServerExited(f"{self._who()} exited with code {code}", log_tail=tail)

    def _launch_output(self) -> str:
        """Everything this launch has written to the log."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._launch_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _who(self) -> str:
        return f"{self.spec.pair.framework} server for case {self.spec.pair.case.id!r} ({self.handle.description})"

    def _ready_state(self) -> str | None:
        """None when ready, else what is still missing."""
        try:
            return self.engine.ready_problem(self.http, self.spec)
        except (RequestFailed, ValueError, AttributeError) as exc:
            return f"not answering ({type(exc).__name__})"

    def wait_ready(self, deadline_s: float | None = None) -> float:
        """Block until the engine says the server is ready for its cases; return seconds waited."""
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

    def case_dir(self, pair: Pair) -> Path:
        """Where `pair`'s perf dumps go: a folder of its own under the server's."""
        return self.workdir / "cases" / pair.case.id

    def generate(self, pair: Pair, image: bytes | None, timeout_s: float | None = None) -> Sample:
        """One measured request for `pair`'s own case, while watching that the server stays alive."""
        self.check_alive()
        workdir = self.case_dir(pair)
        workdir.mkdir(parents=True, exist_ok=True)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        try:
            future = pool.submit(client.measure, self.http, self.engine, pair, self.spec.model_path, image,
                                 workdir, timeout_s, self._fastest_s.get(pair.case.id))
            while True:
                try:
                    sample = future.result(timeout=WATCH_POLL_S)
                    fastest = self._fastest_s.get(pair.case.id, sample.client_latency_s)
                    self._fastest_s[pair.case.id] = min(fastest, sample.client_latency_s)
                    return sample
                except FutureTimeout:
                    self._check_alive_during_request()
                except RequestFailed as failure:
                    # A failed request from a dead server is the server's failure.
                    self._check_alive_after(failure)
                    raise
        finally:
            # Never wait here for a request stuck on a dead server.
            pool.shutdown(wait=False)

    def _check_alive_after(self, failure: RequestFailed) -> None:
        """Raise the server's own failure if it died; a dropped connection waits for its exit."""
        notice_by = time.monotonic() + (EXIT_NOTICE_S if failure.status_code is None else 0.0)
        self._check_alive_during_request()
        while time.monotonic() < notice_by:
            time.sleep(WATCH_POLL_S)
            self._check_alive_during_request()

    def _check_alive_during_request(self) -> None:
        try:
            self.check_alive()
        except ServerExited:
            # No new request; the one in flight ends when the dead server's socket closes, or at its deadline,
            # and its thread is abandoned either way (closing the connections closes only the idle ones).
            self.http.close()
            raise

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the server: its whole process group, or its container (removed)."""
        self.http.close()
        self.handle.stop(grace_s)
        _live.discard(self)


# Servers of this process that are not stopped yet, for the signal handler, and the signal
# that stopped the run, if one did: nothing starts after it.
_live: set[Server] = set()
_stopped_by: list[str] = []
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_reason() -> str | None:
    """The signal that is stopping this process's run ("SIGINT", "SIGTERM"), or None."""
    return _stopped_by[0] if _stopped_by else None


def stop_servers_on_signals() -> None:
    """On Ctrl-C or SIGTERM (a cancelled flow run), stop this process's servers, then let the signal act.

    Servers run in their own session or container, so they would outlive the flow process. They
    are stopped on a thread of their own, in parallel, so that the signal reaches the flow at
    once: it is Prefect's to turn into a cancelled or crashed flow run. Installing it twice in one
    process changes nothing.
    """
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if not getattr(previous, "stops_servers", False):
            signal.signal(signum, _stopping_handler(previous))


def _stop_all() -> None:
    stoppers = [threading.Thread(target=server.stop, kwargs={"grace_s": 2}) for server in list(_live)]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()


def _stopping_handler(previous: Callable[[int, FrameType | None], Any] | int | None) -> Callable[..., None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        first = not _stopped_by
        _stopped_by.append(signal.Signals(signum).name)
        if first:
            threading.Thread(target=_stop_all, name="stop-servers", daemon=True).start()
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt  # also where the shell started us with Ctrl-C ignored (`cmd &`)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    handler.stops_servers = True  # type: ignore[attr-defined]
    return handler


def reap_leftovers(root: Path) -> list[str]:
    """Servers and containers that a dead diffbench process left running, stopped by our own records."""
    return reap_processes(root) + reap_containers()
