"""The one way measurements reach the database: written now, or spooled until it is back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from diffbench.errors import StorageUnavailable
from diffbench.results import CaseResult, RunInfo
from diffbench.storage import spool, store


class Recorder:
    """Writes runs and results as they happen; nothing measured is lost while the database is down.

    Usage:

        recorder = Recorder("postgresql+psycopg://...", Path(".diffbench/spool"))
        recorder.open_run(run)
        recorder.record(run.id, result)        # False: spooled, written on a later call
        recorder.finish(run.id, "ok", {"sglang": "0.5.4"})
    """

    def __init__(self, url: str, spool_dir: Path) -> None:
        self.url = url
        self.spool = spool.Spool(spool_dir)
        self._engine: Engine | None = None
        # Cases finish on several threads; the spool must be replayed and appended in order.
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = store.open_database(self.url)
        return self._engine

    def _write(self, operation: spool.Operation, payload: dict[str, Any]) -> bool:
        """True if written to the database now, False if spooled."""
        with self._lock:
            try:
                engine = self.engine()
                self.spool.replay(engine)
                spool.apply(engine, operation, payload)
            except StorageUnavailable:
                self.spool.add(operation, payload)
                return False
            return True

    def open_run(self, run: RunInfo) -> bool:
        return self._write("run", spool.dumped_run(run))

    def record(self, run_id: str, result: CaseResult) -> bool:
        return self._write("result", {"run_id": run_id, "result": spool.dumped_result(result)})

    def record_all(self, run_id: str, results: list[CaseResult]) -> bool:
        """Several results in one write: a run's plan, before anything is measured."""
        return self._write("results", {"run_id": run_id, "results": [spool.dumped_result(r) for r in results]})

    def canaries(self, run_id: str, readings: list[dict[str, Any]]) -> bool:
        """The run's canary readings (see `store.save_canaries`)."""
        return self._write("canaries", {"run_id": run_id, "readings": readings})

    def stop(self, run_id: str, status: str, reason: str) -> bool:
        """The run stopped before its end: `cancelled` or `crashed`, with its unfinished results."""
        payload = {"run_id": run_id, "status": status, "reason": reason, "finished_at": datetime.now(UTC).isoformat()}
        return self._write("stop", payload)

    def finish(self, run_id: str, status: str, engine_versions: dict[str, str]) -> bool:
        payload = {"run_id": run_id, "status": status, "finished_at": datetime.now(UTC).isoformat(),
                   "engine_versions": engine_versions}
        return self._write("finish", payload)

    def flush(self) -> int:
        """Write what the spool holds; raises StorageUnavailable if the database is still away."""
        with self._lock:
            return self.spool.replay(self.engine())

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the database connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
