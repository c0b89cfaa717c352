"""How fast a stopped run ends, and how fast a killed one is found, with real `diffbench run` processes.

Prints:
- Ctrl-C (SIGINT to the run's process group, as a terminal sends it) until the process has exited;
  target <= 5 s. Before this work it took about 150 s;
- SIGKILL of a run until the next run on the host has marked it `crashed` (and stopped what it left
  running), measured from the kill; the next run's own start (its Prefect API, its flow) is most of it.

Both runs measure the tiny FLUX model on the reference engine (CPU), with no Prefect API configured:
each starts its own, as a user's first run does.

Run: .venv/bin/python benchmarks/stopping.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml
from sqlalchemy import create_engine, text

from diffbench.reference.tiny_models import build

TARGET_CTRL_C_S = 5.0
SAMPLES_BEFORE_STOP = 5


def endless_config(folder: Path) -> Path:
    build("flux", folder / "flux")
    path = folder / "endless.yaml"
    path.write_text(yaml.safe_dump({
        "measurement_repeats": 100000, "warmup_requests": 1,
        "deadlines": {"ready_s": 120, "request_s": 60, "case_minutes": 60},
        "cases": [{"id": f"flux_{side}", "model": str(folder / "flux"), "task": "text-to-image", "width": side,
                   "height": side, "num_inference_steps": 2,
                   "frameworks": {"diffusers": {"serve_args": "--device cpu"}}} for side in (64, 32)]}))
    return path


class Runs:
    """`diffbench run` processes sharing one state folder and results database."""

    def __init__(self, folder: Path, config: Path) -> None:
        self.folder, self.config = folder, config
        self.url = f"sqlite:///{folder / 'results.db'}"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")} | {
            "DIFFBENCH_STATE_DIR": str(folder / "state"), "DIFFBENCH_DATABASE_URL": self.url,
            "DIFFBENCH_DASHBOARD_DIR": str(folder / "dashboard"),
            "DIFFBENCH_HOST_LOCK": str(folder / "measuring.lock")}

    def start(self, label: str) -> subprocess.Popen[bytes]:
        with open(self.folder / f"{label}.log", "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "diffbench", "run", "--config", str(self.config),
                                     "--label", label], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def query(self, sql: str, **params: str) -> list[tuple]:
        if not (self.folder / "results.db").exists():
            return []
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(text(sql), params)]
        except Exception:  # noqa: BLE001 - not created yet by the first run
            return []
        finally:
            engine.dispose()

    def samples(self, label: str) -> int:
        rows = self.query("SELECT count(*) FROM samples s JOIN results r ON r.id = s.result_id "
                          "JOIN runs u ON u.id = r.run_id WHERE u.label = :label", label=label)
        return rows[0][0] if rows else 0

    def status(self, label: str) -> str | None:
        rows = self.query("SELECT status FROM runs WHERE label = :label", label=label)
        return rows[0][0] if rows else None

    def wait_for_samples(self, label: str, count: int, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while self.samples(label) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: fewer than {count} samples after {timeout_s:g} s; see its log")
            time.sleep(0.2)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = Runs(folder, endless_config(folder))

        first = runs.start("ctrl-c")
        runs.wait_for_samples("ctrl-c", SAMPLES_BEFORE_STOP)
        seen = runs.samples("ctrl-c")
        pressed = time.monotonic()
        os.killpg(first.pid, signal.SIGINT)
        code = first.wait()
        ctrl_c_s = time.monotonic() - pressed
        last_line = (folder / "ctrl-c.log").read_text().strip().splitlines()[-1]

        killed = runs.start("killed")
        runs.wait_for_samples("killed", SAMPLES_BEFORE_STOP)
        kept = runs.samples("killed")
        killed_at = time.monotonic()
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        orphans = [p.pid for p in psutil.process_iter() if _orphan_of(p, folder)]
        following = runs.start("next")
        while runs.status("killed") == "running":
            time.sleep(0.1)
        marked_s = time.monotonic() - killed_at
        still_alive = [pid for pid in orphans if psutil.pid_exists(pid)]
        os.killpg(following.pid, signal.SIGINT)
        following.wait()

        print(f"Ctrl-C → exit: {ctrl_c_s:.2f} s (target ≤ {TARGET_CTRL_C_S:g} s, ratio "
              f"{ctrl_c_s / TARGET_CTRL_C_S:.2f}); exit code {code}; last line: {last_line!r}")
        print(f"  run 'ctrl-c': {runs.status('ctrl-c')}, {runs.samples('ctrl-c')} samples stored "
              f"({seen} seen before Ctrl-C)")
        print(f"SIGKILL → marked by the next run: {marked_s:.2f} s; run 'killed': {runs.status('killed')}, "
              f"{runs.samples('killed')} samples kept ({kept} seen before the kill)")
        print(f"  processes the killed run left: {len(orphans)}; still alive once the next run started: "
              f"{len(still_alive)}")


def _orphan_of(process: psutil.Process, folder: Path) -> bool:
    """A server or Prefect API started with its cwd in `folder`'s state dir, now without its parent."""
    try:
        return process.ppid() == 1 and str(folder) in process.cwd()
    except psutil.Error:
        return False


if __name__ == "__main__":
    main()
