"""Launching and watching servers: exits, OOMs, deadlines, deaths mid-request, clean stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from diffbench.engines import ServerSpec
from diffbench.engines.reference import ReferenceEngine
from diffbench.errors import NotReady, OutOfMemory, ServerExited
from diffbench.launcher import Server, free_port, reap_leftovers

from conftest import make_pair


class ScriptEngine(ReferenceEngine):
    """The reference engine's API, but the server is a Python script of the test's choosing (port in argv[1])."""

    name = "script-under-test"

    def __init__(self, script: str) -> None:
        self.script = script

    def command(self, spec: ServerSpec) -> list[str]:
        return [sys.executable, "-c", self.script, str(spec.port)]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whichever process reaps it here)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.05)
    return True


def start(engine: ReferenceEngine, tmp_path: Path, model: str = "m", **deadlines: float) -> Server:
    pair = make_pair("diffusers", model=model, deadlines=deadlines or None)
    return Server.start(engine, ServerSpec(pair, "127.0.0.1", free_port(), model), tmp_path)


def test_exit_at_start_is_reported_at_once_with_the_log_tail(tmp_path: Path) -> None:
    engine = ScriptEngine("import sys; print('loading weights'); print('ValueError: no such flag'); sys.exit(3)")
    started = time.monotonic()
    with start(engine, tmp_path, ready_s=120) as server, pytest.raises(ServerExited) as caught:
        server.wait_ready()
    assert time.monotonic() - started < 60, "must not wait for the readiness deadline"
    error = caught.value
    assert (error.error_class, error.retryable) == ("server_exit", True)
    assert "exited with code 3" in str(error) and "no such flag" in error.log_tail


def test_oom_line_fails_fast_even_if_the_process_lives(tmp_path: Path) -> None:
    script = ("import time; print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB', "
              "flush=True); time.sleep(120)")
    with start(ScriptEngine(script), tmp_path, ready_s=120) as server, pytest.raises(OutOfMemory) as caught:
        server.wait_ready()
    assert caught.value.error_class == "oom" and not caught.value.retryable
    assert "Tried to allocate 2.00 GiB" in str(caught.value)


def test_never_ready_is_a_timeout_at_the_configured_deadline(tmp_path: Path) -> None:
    with start(ScriptEngine("import time; time.sleep(120)"), tmp_path, ready_s=0.5) as server:
        with pytest.raises(NotReady) as caught:
            server.wait_ready()
    assert caught.value.error_class == "timeout"
    assert "not ready after 0.5 s: not answering" in str(caught.value)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "child = subprocess.Popen(['sleep', '300']); "
              f"open({str(child_pid_file)!r}, 'w').write(str(child.pid)); time.sleep(300)")
    server = start(ScriptEngine(script), tmp_path)
    while not child_pid_file.exists() or not child_pid_file.read_text():
        time.sleep(0.02)
    child = int(child_pid_file.read_text())
    assert (tmp_path / "server.pid").exists()
    server.stop()
    assert server.handle.process.poll() is not None
    assert not running(child)
    assert not (tmp_path / "server.pid").exists()


def test_server_killed_mid_request_is_detected(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    model = str(tiny_models["flux"])
    pair = make_pair("diffusers", model=model, width=256, height=256, num_inference_steps=1000,
                     frameworks={"diffusers": {"serve_args": "--device cpu"}})
    engine = ReferenceEngine()
    with Server.start(engine, ServerSpec(pair, "127.0.0.1", free_port(), model), tmp_path) as server:
        server.wait_ready(deadline_s=120)
        killer = threading.Timer(1.0, os.kill, (server.handle.process.pid, signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        with pytest.raises(ServerExited) as caught:
            server.generate(server.spec.pair, None)
        killer.join()
    assert "exited with code -9" in str(caught.value)
    assert time.monotonic() - started < 30


def test_connection_dropped_just_before_the_exit_is_reported_is_a_server_exit(tmp_path: Path) -> None:
    # What a SIGKILL looks like from outside: the socket closes first, the exit shows up later.
    script = ("import socket, sys, time; listener = socket.create_server(('127.0.0.1', int(sys.argv[1]))); "
              "print('listening', flush=True); connection, _ = listener.accept(); connection.recv(65536); "
              "connection.close(); time.sleep(1.0); sys.exit(7)")
    with start(ScriptEngine(script), tmp_path) as server:
        while "listening" not in server.log_tail():
            server.check_alive()
            time.sleep(0.02)
        with pytest.raises(ServerExited) as caught:
            server.generate(server.spec.pair, None)
    assert "exited with code 7" in str(caught.value)


def test_free_port_keeps_side_ports_free() -> None:
    port = free_port((5, 55))
    for offset in (0, 5, 55):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port + offset))


def test_leftover_of_a_killed_run_is_reaped_by_pid_file_only(tmp_path: Path) -> None:
    server = start(ScriptEngine("import time; time.sleep(300)"), tmp_path / "runs" / "old")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        assert reap_leftovers(tmp_path) == []  # its owner (this test) is alive: not a leftover
        dead_owner = subprocess.Popen(["true"])
        dead_owner.wait()
        info = json.loads(server.handle.pid_path.read_text())
        server.handle.pid_path.write_text(json.dumps(info | {"diffbench.owner_pid": dead_owner.pid}))
        reaped = reap_leftovers(tmp_path)
        assert reaped == [f"diffusers server for case 'c' (pid {server.handle.process.pid})"]
        assert server.handle.process.wait(timeout=10) is not None and not server.handle.pid_path.exists()
        assert bystander.poll() is None, "a process without our pid file is never touched"
    finally:
        bystander.kill()
        bystander.wait()
        server.stop()
