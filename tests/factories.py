"""Small factories for results and runs, shared by the storage and dashboard tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from diffbench.client import Sample
from diffbench.results import METHODOLOGY, CaseResult, RunInfo

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_sample(latency: float = 1.0, server: float | None = 0.9) -> Sample:
    return Sample(client_latency_s=latency, server_latency_s=server, server_latency_source="perf_dump",
                  stage_ms={"TextEncodingStage": 10.0, "DenoisingStage": 800.0}, denoise_step_ms=(400.0, 400.0),
                  peak_reserved_mb=1000.0, output_sha256="ab" * 32, width=64, height=64, num_frames=1,
                  poll_bound_s=None)


def make_run(run_id: str = "r1", day: int = 0, trigger: str = "schedule", **fields: object) -> RunInfo:
    base = {"id": run_id, "trigger": trigger, "started_at": T0 + timedelta(days=day), "host": "gpu-host-1",
            "gpu_model": "NVIDIA H100", "driver": "570.1", "diffbench_version": "0.1.0", "flow_run_id": run_id}
    return RunInfo(**(base | fields))


def make_result(case_id: str = "flux", framework: str = "sglang", latencies: tuple[float, ...] = (1.0, 1.1, 0.9),
                config_hash: str = "h" * 16, error_class: str | None = None, **fields: object) -> CaseResult:
    base = {
        "case_id": case_id, "framework": framework, "engine": framework,
        "status": "failed" if error_class else "ok", "config_hash": config_hash,
        "methodology": METHODOLOGY, "hardware": "NVIDIA H100", "model": "org/model", "num_gpus": 1,
        "task": "text-to-image", "started_at": T0, "finished_at": T0,
        "samples": [] if error_class else [make_sample(x) for x in latencies],
        "error_class": error_class, "error_message": f"{error_class}: it broke" if error_class else None,
    }
    return CaseResult(**(base | fields))
