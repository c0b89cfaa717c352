"""Harness overhead on the tiny FLUX model, and how fast a ready server is noticed.

Prints:
- client latency minus server latency (perf dump), median over 50 requests; target <= 5 ms;
- delay from the server's first healthy answer to `wait_ready` returning, over 5 launches;
  target <= 250 ms (sglang's job polled every 2 s).

Run: .venv/bin/python benchmarks/overhead.py
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from diffbench.cases import Matrix, resolve
from diffbench.client import with_perf_dump
from diffbench.engines import ServerSpec
from diffbench.engines.reference import ReferenceEngine
from diffbench.launcher import Server, free_port
from diffbench.reference.tiny_models import build

REQUESTS = 50
LAUNCHES = 5
TARGET_OVERHEAD_MS = 5.0
TARGET_NOTICE_MS = 250.0


def pair_for(model: Path):  # noqa: ANN201 - a Pair
    matrix = Matrix.model_validate({"cases": [{
        "id": "tiny_flux_64", "model": str(model), "task": "text-to-image", "prompt": "a lighthouse",
        "width": 64, "height": 64, "num_inference_steps": 4, "seed": 1,
        "frameworks": {"diffusers": {"serve_args": "--device cpu"}}}]})
    case = matrix.cases[0]
    return resolve(matrix, case, "diffusers", ReferenceEngine.options.model_validate(case.frameworks["diffusers"]))


def first_healthy(url: str, stop: threading.Event, seen: list[float]) -> None:
    """Ask /health every millisecond and note when it first answers."""
    with httpx.Client(timeout=0.5) as http:
        while not stop.is_set():
            try:
                if http.get(f"{url}/health").status_code == 200:
                    seen.append(time.monotonic())
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.001)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="diffbench-bench-"))
    model = build("flux", root / "tiny-flux")
    pair, engine = pair_for(model), ReferenceEngine()

    notice_ms = []
    for launch in range(LAUNCHES):
        spec = ServerSpec(pair, "127.0.0.1", free_port(), str(model))
        seen: list[float] = []
        stop = threading.Event()
        with Server.start(engine, spec, root / f"launch-{launch}") as server:
            probe = threading.Thread(target=first_healthy, args=(spec.base_url, stop, seen))
            probe.start()
            server.wait_ready(120)
            ready_at = time.monotonic()
            stop.set()
            probe.join()
            notice_ms.append((ready_at - seen[0]) * 1000)
            if launch == 0:
                server.generate(pair, None)  # warm-up
                samples = [with_perf_dump(engine, server.generate(pair, None)) for _ in range(REQUESTS)]

    overhead_ms = [(s.client_latency_s - s.server_latency_s) * 1000 for s in samples]
    client_ms = statistics.median(s.client_latency_s * 1000 for s in samples)
    server_ms = statistics.median(s.server_latency_s * 1000 for s in samples)
    overhead = statistics.median(overhead_ms)
    notice = statistics.median(notice_ms)
    print(f"tiny FLUX 64x64, 4 steps, CPU, {REQUESTS} requests after one warm-up")
    print(f"  client latency median   {client_ms:8.2f} ms")
    print(f"  server latency median   {server_ms:8.2f} ms (perf dump)")
    print(f"  overhead median         {overhead:8.2f} ms  (p90 {sorted(overhead_ms)[int(REQUESTS * 0.9)]:.2f} ms)"
          f"  target <= {TARGET_OVERHEAD_MS:g} ms: {'met' if overhead <= TARGET_OVERHEAD_MS else 'MISSED'}")
    print(f"  overhead / client       {overhead / client_ms:8.1%}")
    print(f"readiness noticed after the first healthy answer, {LAUNCHES} launches")
    print(f"  median {notice:.1f} ms, max {max(notice_ms):.1f} ms"
          f"  target <= {TARGET_NOTICE_MS:g} ms: {'met' if max(notice_ms) <= TARGET_NOTICE_MS else 'MISSED'}")
    print(f"  ratio to sglang's 2 s poll interval: {notice / 2000:.3f}")


if __name__ == "__main__":
    main()
