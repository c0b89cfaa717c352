"""One measuring run at a time per host, whatever its state dir, user or database.

Two runs sharing GPUs or CPU cores measure each other: both store numbers several times too
slow, with nothing to tell. The lock is an advisory `flock` on one file the kernel releases
when its holder dies, so a killed run never blocks the next. The holder writes who it is into
the file, so that a waiting run can say for whom it waits.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WAIT_POLL_S = 0.5
# How often a waiting run repeats that it still waits.
WAIT_NOTICE_S = 60.0


def _open(path: Path) -> int:
    """The lock file, created readable and writable by every user of the host."""
    try:
        # Opened without O_CREAT first: with fs.protected_regular, O_CREAT on another user's
        # file in a sticky folder such as /tmp is refused.
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return os.open(path, os.O_RDWR)
        os.fchmod(fd, 0o666)  # the umask would narrow the mode given to open
        return fd


def holder(path: Path) -> dict[str, Any]:
    """Who holds (or last held) the lock, as that run wrote it."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(who: dict[str, Any]) -> str:
    if not who:
        return "a run that has not said who it is yet"
    return (f"run {who.get('run_id')} ({who.get('config')}) of {who.get('user')}, pid {who.get('pid')}, state dir "
            f"{who.get('state_dir')}, since {who.get('since')}")


@contextmanager
def measuring(path: Path, me: dict[str, Any], on_wait: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Hold the host's measuring lock for the block; `on_wait(holder)` is called while another run has it.

    Waiting is interruptible: a signal that raises (Ctrl-C) ends it.
    """
    fd = _open(path)
    try:
        noticed = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if noticed is None or time.monotonic() - noticed >= WAIT_NOTICE_S:
                    on_wait(holder(path))
                    noticed = time.monotonic()
                time.sleep(WAIT_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
