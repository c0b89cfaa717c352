"""SGLang-Diffusion's perf dump: the JSON a worker writes after a request's forward pass.

Schema (sglang `server_perf_dump`): `{timestamp, request_id, commit_hash, tag,
total_duration_ms, steps: [{name, duration_ms}], denoise_steps_ms: [{step, duration_ms}],
memory_checkpoints: {name: {allocated_mb, reserved_mb, peak_allocated_mb, peak_reserved_mb}},
meta: {model}}`. Older dumps lack `memory_checkpoints` and `meta`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.errors import BadOutput

TAG = "server_perf_dump"


@dataclass(frozen=True)
class PerfDump:
    """The parts of a perf dump we measure with."""

    total_ms: float
    stage_ms: dict[str, float]
    denoise_step_ms: tuple[float, ...]
    peak_reserved_mb: float | None
    raw: dict[str, Any] = field(repr=False)


def parse(document: dict[str, Any]) -> PerfDump:
    """Read a perf-dump document; stage names keep only their last dotted part."""
    try:
        stages = {step["name"].rsplit(".", 1)[-1]: float(step["duration_ms"]) for step in document["steps"]}
        ordered = sorted(document.get("denoise_steps_ms", []), key=lambda s: s["step"])
        steps = tuple(float(s["duration_ms"]) for s in ordered)
        # Reserved, not allocated: what sglang's response and vLLM-Omni report as peak_memory_mb.
        peaks = [c.get("peak_reserved_mb") for c in document.get("memory_checkpoints", {}).values()]
        total = float(document["total_duration_ms"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadOutput(f"perf dump does not follow sglang's schema: {exc!r}") from exc
    known_peaks = [float(p) for p in peaks if p is not None]
    return PerfDump(total, stages, steps, max(known_peaks) if known_peaks else None, document)


def read(path: Path, wait_s: float) -> PerfDump | None:
    """Wait up to `wait_s` for a complete dump at `path`; None if it never appears."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return parse(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            # A writer that does not rename atomically leaves a partial file for a moment.
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)


def write_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write a dump so that a reader never sees a partial file: temp file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
    os.replace(tmp, path)
