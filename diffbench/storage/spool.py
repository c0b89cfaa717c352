"""A local spool for writes the database could not take; replayed in order once it is back."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import Engine

from diffbench.results import CaseResult, RunInfo
from diffbench.storage import store

Operation = Literal["run", "result", "results", "finish", "stop", "canaries"]
_RUN = TypeAdapter(RunInfo)
_RESULT = TypeAdapter(CaseResult)


def apply(engine: Engine, operation: Operation, payload: dict[str, Any]) -> None:
    """Carry out one write on the database."""
    if operation == "run":
        store.save_run(engine, _RUN.validate_python(payload))
    elif operation == "result":
        store.save_result(engine, payload["run_id"], _RESULT.validate_python(payload["result"]))
    elif operation == "results":
        store.save_results(engine, payload["run_id"], [_RESULT.validate_python(r) for r in payload["results"]])
    elif operation == "canaries":
        store.save_canaries(engine, payload["run_id"], payload["readings"])
    elif operation == "stop":
        store.stop_run(engine, payload["run_id"], payload["status"], payload["reason"],
                       datetime.fromisoformat(payload["finished_at"]))
    else:
        store.finish_run(engine, payload["run_id"], payload["status"],
                         datetime.fromisoformat(payload["finished_at"]), payload["engine_versions"])


class Spool:
    """Pending writes as one JSON file each, named so that they sort in the order written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def add(self, operation: Operation, payload: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{operation}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"operation": operation, "payload": payload}))
        os.replace(tmp, path)
        return path

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.json")) if self.directory.exists() else []

    def replay(self, engine: Engine) -> int:
        """Apply every pending write in order; stop at the first the database refuses."""
        done = 0
        for path in self.pending():
            entry = json.loads(path.read_text())
            apply(engine, entry["operation"], entry["payload"])
            path.unlink()
            done += 1
        return done


def dumped_run(run: RunInfo) -> dict[str, Any]:
    return _RUN.dump_python(run, mode="json")


def dumped_result(result: CaseResult) -> dict[str, Any]:
    return _RESULT.dump_python(result, mode="json")
