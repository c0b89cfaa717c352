"""A year of nightly history: how long the dashboard takes, and how long one night takes to store.

Fills a database with 365 nights x 13 cases x 3 frameworks x 3 samples (4 stages each), then
- times `diffbench dashboard --out DIR` as a user runs it; target < 15 s on 2 cores;
- times writing one more night (39 results) to Postgres; target < 1 s.

Uses the Postgres in DIFFBENCH_BENCH_POSTGRES_URL (a server URL; a scratch database is made
and dropped), else a SQLite file, in which case the write target is reported as not measured.

Run: .venv/bin/python benchmarks/dashboard.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from diffbench.client import Sample
from diffbench.results import METHODOLOGY, CaseResult, RunInfo
from diffbench.storage import store

NIGHTS, CASES, FRAMEWORKS, SAMPLES = 365, 13, ("sglang", "vllm-omni", "diffusers"), 3
TARGET_DASHBOARD_S, TARGET_WRITE_S = 15.0, 1.0
START = datetime(2025, 11, 24, tzinfo=UTC)


def night(day: int, rng: random.Random) -> tuple[RunInfo, list[CaseResult]]:
    started = START + timedelta(days=day)
    run = RunInfo(id=f"night-{day}", trigger="schedule" if day % 30 else "manual", started_at=started,
                  host="gpu-host-1", gpu_model="NVIDIA H100 80GB HBM3", driver="570.86", diffbench_version="0.1.0")
    results = []
    for case in range(CASES):
        for framework in FRAMEWORKS:
            base = (case + 1) * (1.0 if framework == "sglang" else 1.3) * (0.9 if day > 200 else 1.0)
            failed = rng.random() < 0.02
            samples = [] if failed else [
                Sample(client_latency_s=base * rng.uniform(0.98, 1.02), server_latency_s=base * 0.97,
                       server_latency_source="perf_dump",
                       stage_ms={"TextEncodingStage": 20.0, "DenoisingStage": base * 900, "DecodingStage": 50.0,
                                 "LatentPreparationStage": 0.2},
                       denoise_step_ms=tuple([base * 18] * 50), peak_reserved_mb=30000.0, output_sha256="0" * 64,
                       width=1024, height=1024, num_frames=1, poll_bound_s=None)
                for _ in range(SAMPLES)]
            results.append(CaseResult(
                case_id=f"case_{case:02d}", framework=framework, engine=framework,
                status="failed" if failed else "ok", config_hash=f"{case:02d}-{'b' if day > 300 else 'a'}".ljust(16),
                methodology=METHODOLOGY, hardware="NVIDIA H100 80GB HBM3", model=f"org/model-{case}",
                num_gpus=1, task="text-to-image", started_at=started, finished_at=started,
                samples=samples, error_class="oom" if failed else None))
    return run, results


def scratch_database() -> tuple[str, Callable[[], None]]:
    server = os.environ.get("DIFFBENCH_BENCH_POSTGRES_URL") or os.environ.get("DIFFBENCH_TEST_POSTGRES_URL")
    if not server:
        path = Path(tempfile.mkdtemp()) / "year.db"
        return f"sqlite:///{path}", lambda: None
    name = f"diffbench_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

    return make_url(server).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    url, drop = scratch_database()
    backend = make_url(url).get_backend_name()
    try:
        engine = store.open_database(url)
        rng = random.Random(0)
        started = time.perf_counter()
        for day in range(NIGHTS):
            run, results = night(day, rng)
            store.save_run(engine, run)
            store.save_results(engine, run.id, results)
        fill_s = time.perf_counter() - started
        counts = store.counts(engine)
        print(f"{backend}: {NIGHTS} nights x {CASES} cases x {len(FRAMEWORKS)} frameworks x {SAMPLES} samples "
              f"= {counts} in {fill_s:.1f} s")

        run, results = night(NIGHTS, rng)
        started = time.perf_counter()
        store.save_run(engine, run)
        store.save_results(engine, run.id, results)
        write_s = time.perf_counter() - started
        engine.dispose()

        out = Path(tempfile.mkdtemp()) / "dashboard"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "diffbench", "dashboard", "--out", str(out), "--database-url", url],
                       check=True, capture_output=True)
        dashboard_s = time.perf_counter() - started
    finally:
        drop()

    print(f"diffbench dashboard (whole command, {CASES} charts): {dashboard_s:6.2f} s  "
          f"target < {TARGET_DASHBOARD_S:g} s: {'met' if dashboard_s < TARGET_DASHBOARD_S else 'MISSED'} "
          f"({dashboard_s / TARGET_DASHBOARD_S:.2f} of the budget)")
    verdict = ("met" if write_s < TARGET_WRITE_S else "MISSED") if backend == "postgresql" else "not measured (SQLite)"
    print(f"write one night ({len(results)} results) to {backend}: {write_s:6.3f} s  target < {TARGET_WRITE_S:g} s "
          f"on Postgres: {verdict} ({write_s / TARGET_WRITE_S:.2f} of the budget)")


if __name__ == "__main__":
    main()
