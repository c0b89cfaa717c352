"""Servers as local processes: each in its own session, with a pid file the reaper can trust."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

STOP_GRACE_S = 10.0


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def started_at(pid: int) -> float | None:
    """The process's start time, which tells it apart from a later process with its number."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int, started: float | None) -> bool:
    return started is not None and started_at(pid) == started


@dataclass(frozen=True)
class Owner:
    """A diffbench process, told apart from a later one with its number by its start time."""

    pid: int
    started: float | None


def owner_process() -> Owner:
    return Owner(os.getpid(), started_at(os.getpid()))


def owner() -> dict[str, object]:
    """This diffbench process, as recorded with what it starts."""
    this = owner_process()
    return {"diffbench.owner_pid": this.pid, "diffbench.owner_started": this.started}


class ProcessHandle:
    """A server process group started in its own session.

    Its pid file says which diffbench process owns it, so that a later run can stop it if
    that owner died without doing so.
    """

    def __init__(self, process: subprocess.Popen[bytes], pid_path: Path) -> None:
        self.process, self.pid_path = process, pid_path
        self.image_digest: str | None = None

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log_path: Path, labels: dict[str, str]) -> ProcessHandle:
        """Start `argv` in the log's folder: engines write outputs relative to their cwd (sglang: outputs/).

        `labels["diffbench.what"]` says what it is, for the message of the run that reaps it.
        """
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, cwd=log_path.parent)
        pid_path = log_path.with_name("server.pid")
        pid_path.write_text(json.dumps({"pid": process.pid, "started": started_at(process.pid), "argv": argv}
                                       | owner() | labels))
        return cls(process, pid_path)

    @property
    def description(self) -> str:
        return f"pid {self.process.pid}"

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to the whole group, SIGKILL after `grace_s`; children that outlived the leader go too."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process.pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)


def reap_processes(root: Path) -> list[str]:
    """Stop servers under `root` whose owning diffbench process is gone; return what was stopped.

    Servers are found only by our own pid files, never by process name.
    """
    reaped = []
    for pid_file in sorted(root.rglob("server.pid")):
        try:
            info = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if same_process(info["diffbench.owner_pid"], info["diffbench.owner_started"]):
            continue  # its run is still going
        if same_process(info["pid"], info["started"]):
            _signal_group(info["pid"], signal.SIGTERM)
            try:
                psutil.Process(info["pid"]).wait(timeout=STOP_GRACE_S)
            except (psutil.TimeoutExpired, psutil.NoSuchProcess):
                pass
            _signal_group(info["pid"], signal.SIGKILL)
            reaped.append(f"{info['diffbench.what']} (pid {info['pid']})")
        pid_file.unlink(missing_ok=True)
    return reaped
