"""Before measuring: each GPU's canary, judged against its own history and stored."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench import canary
from diffbench.errors import EnvironmentFailed, StorageUnavailable
from diffbench.storage import store
from diffbench.storage.recorder import Recorder


@task(task_run_name="hardware canary", cache_policy=NO_CACHE)
def hardware_canary(devices: tuple[int, ...], python: Path, host: str, run_id: str,
                    recorder: Recorder) -> dict[int, str]:
    """The devices (GPU indices, or gpus.CPU_SLOT) whose canary is well below their history, with why.

    A canary that cannot run costs its reading, never the run.
    """
    logger = get_run_logger()
    try:
        history = store.canary_history(recorder.engine(), host, list(devices))
    except StorageUnavailable:
        logger.warning("no canary history (database unreachable): tonight's canaries are stored, not judged")
        history = []
    readings, suspects = [], {}
    for device in devices:
        try:
            reading = canary.run_probe(python, host, device)
        except EnvironmentFailed as exc:
            logger.warning("%s", exc)
            continue
        verdict = canary.judge(reading, history)
        logger.log(30 if verdict else 20, "%s", verdict or f"{reading.device_name} (device {device}): matmul "
                   f"{reading.matmul_tflops:.3g} TFLOP/s, bandwidth {reading.bandwidth_gbs:.3g} GB/s")
        if verdict:
            suspects[device] = verdict
        readings.append(asdict(reading) | {"suspect": verdict, "measured_at": datetime.now(UTC).isoformat()})
    try:
        recorder.canaries(run_id, readings)
    except Exception:  # noqa: BLE001 - a canary that cannot be stored costs its reading, never the run
        logger.exception("canary readings not stored")
    return suspects
