"""Importing sglang's nightly result files (three generations) as runs and results.

Their numbers keep their own methodology, so they never join a diffbench series:
- v0 (2026-03): `latency_s` only, one request per case.
- v1 (2026-09): client samples and server samples (perf dump), `measurement_repeats`.
- v2 (`methodology: client-e2e-v1`): also warm-up and first-request latency.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from diffbench.client import Sample
from diffbench.errors import ConfigError
from diffbench.results import CaseResult, RunInfo
from diffbench.storage import store

SOURCE = "sglang-import"
# Their job ran on one 4-GPU H100 runner.
HARDWARE = "NVIDIA H100 80GB HBM3"


def methodology_of(document: dict[str, Any]) -> str:
    if "methodology" in document:
        return f"sglang-{document['methodology']}"
    if "measurement_repeats" in document:
        return "sglang-v1-client-median"
    return "sglang-v0-single-request"


def error_class_of(message: str) -> str:
    """A class for their free-text errors, so failures group with ours."""
    lowered = message.lower()
    for needle, error_class in (("out of memory", "oom"), ("performance data", "perf_dump_missing"),
                                ("timed out", "timeout"), ("timeout", "timeout"),
                                ("generation failed", "http_error"), ("exited", "server_exit")):
        if needle in lowered:
            return error_class
    return "unknown"


def _config_hash(row: dict[str, Any], methodology: str) -> str:
    # Their files carry no case config, so the hash covers what they do say.
    controls = [row["case_id"], row.get("model"), row.get("task"), row["framework"], methodology]
    return hashlib.sha256(json.dumps(controls).encode()).hexdigest()[:16]


def _samples(row: dict[str, Any]) -> list[Sample]:
    client = row.get("latency_samples_s") or ([row["latency_s"]] if row.get("latency_s") is not None else [])
    server = row.get("server_latency_samples_s") or []
    stages = row.get("server_stage_medians_ms") or {}
    return [
        Sample(client_latency_s=latency, server_latency_s=server[i] if i < len(server) else None,
               server_latency_source="perf_dump" if i < len(server) else "none", stage_ms=stages,
               denoise_step_ms=(), peak_reserved_mb=None, output_sha256="", width=0, height=0, num_frames=0,
               poll_bound_s=None)
        for i, latency in enumerate(client)
    ]


def _checked_latencies(path: Path, row: dict[str, Any]) -> None:
    """Every latency a number of seconds >= 0, or one line naming the file, case and field."""
    for field in ("latency_s", "latency_samples_s", "server_latency_s", "server_latency_samples_s"):
        value = row.get(field)
        values = value if isinstance(value, list) else [] if value is None else [value]
        for item in values:
            if isinstance(item, bool) or not isinstance(item, int | float) or item < 0:
                raise ConfigError([f"{path.name}: case {row.get('case_id')!r}: {field}: "
                                   f"must be seconds >= 0 (got {item!r})"])


def parse(path: Path) -> tuple[RunInfo, list[CaseResult]]:
    """One sglang result file as a run (trigger `schedule`, their nightly) and its results.

    Everything is checked before anything is stored.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        document = json.loads(raw)
        started = datetime.fromisoformat(document["timestamp"])
        rows = document["results"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"{path.name}: not an sglang result file: {exc!r}"]) from exc
    key = hashlib.sha256(raw).hexdigest()
    methodology = methodology_of(document)
    run = RunInfo(
        id=f"sglang-{document.get('run_id') or key[:16]}", trigger="schedule", started_at=started,
        host="sglang CI (4-gpu-h100)", gpu_model=HARDWARE, driver="unknown", diffbench_version="imported",
        label=f"sglang {str(document.get('commit_sha', ''))[:8]}", config_path=str(path), config_sha256=key,
        source=SOURCE, import_key=key,
    )
    try:
        results = [_result(path, row, started, methodology, document) for row in rows]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError([f"{path.name}: not an sglang result file: {exc!r}"]) from exc
    return run, results


def _result(path: Path, row: dict[str, Any], started: datetime, methodology: str,
            document: dict[str, Any]) -> CaseResult:
    _checked_latencies(path, row)
    error = row.get("error")
    return CaseResult(
        case_id=row["case_id"], framework=row["framework"], engine=row["framework"],
        status="failed" if error else "ok", config_hash=_config_hash(row, methodology), methodology=methodology,
        hardware=HARDWARE, model=row.get("model", ""), num_gpus=0, task=row.get("task", ""),
        started_at=started, finished_at=started, engine_version=document.get("commit_sha"),
        first_request_latency_s=row.get("first_request_latency_s"),
        samples=[] if error else _samples(row),
        error_class=error_class_of(error) if error else None, error_message=error or None,
    )


def import_file(engine: Engine, path: Path) -> bool:
    """Store one file's run and results; False if that exact file was imported before."""
    run, results = parse(path)
    if store.import_exists(engine, run.import_key or ""):
        return False
    store.save_run(engine, run)
    store.save_results(engine, run.id, results)
    status = "ok" if all(r.status == "ok" for r in results) else "failed"
    versions = {"sglang": results[0].engine_version[:8]} if results and results[0].engine_version else {}
    store.finish_run(engine, run.id, status, run.started_at, versions)
    return True
