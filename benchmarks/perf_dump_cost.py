"""What asking for the perf dump costs, per engine: server time and client latency, with and without it.

Per engine, one server (tiny FLUX, 64², 4 steps, CPU) and diffbench's client taking turns: one
request asking for the perf dump, one not, the order alternating, each 10 ms after the one before
(so that none meets a dump the reference engine writes after answering the one before). Prints per
engine the medians of the server's own inference time (from its response, the same source in both)
and of the client latency, the difference with and without the dump and its 95 % bootstrap
interval, and the machine's load. Engines:
- the reference engine (`diffusers`), which writes sglang's perf-dump file after answering;
- the real SGLang-Diffusion, from the CPU lock the real-engine tests use (and their CPU shims);
- vLLM-Omni has no perf dump to ask for: its stage timings come in every response's headers.

Run: .venv/bin/python benchmarks/perf_dump_cost.py [--requests 60] [--engines diffusers,sglang]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from diffbench.cases import Matrix, Pair, resolve
from diffbench.client import Sample, measure
from diffbench.download import Download
from diffbench.engines import ENGINES
from diffbench.engines.environments import EngineEnvironment, build_venv
from diffbench.launcher import Server
from diffbench.measure import Deadline, launch
from diffbench.reference.tiny_models import build
from diffbench.stats import median_interval

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the real-engine tests' CPU shims, which make sglang's CUDA wheels import on CPU
from tests.engines.real.conftest import ENVS_DIR, pip_spec  # noqa: E402
from tests.engines.real.shims import apply_cpu_shims  # noqa: E402

SIDE, STEPS = 64, 4
SETTLE_S = 0.01


def pair_for(framework: str, model: Path) -> Pair:
    options: dict[str, object] = {"serve_args": "--device cpu"} if framework == "diffusers" else {
        "pip": pip_spec(framework)}
    matrix = Matrix.model_validate({
        "deadlines": {"ready_s": 600, "request_s": 120, "case_minutes": 30},
        "cases": [{"id": f"tiny_flux_{framework}", "model": str(model), "task": "text-to-image",
                   "prompt": "a lighthouse", "width": SIDE, "height": SIDE, "num_inference_steps": STEPS, "seed": 1,
                   "frameworks": {framework: options}}]})
    case = matrix.cases[0]
    return resolve(matrix, case, framework, ENGINES[framework].options.model_validate(case.frameworks[framework]))


def environment(framework: str) -> EngineEnvironment:
    if framework == "diffusers":
        return EngineEnvironment()
    built = build_venv(pip_spec(framework), ENVS_DIR)
    apply_cpu_shims(built.python, framework)
    return built


def measure_turns(server: Server, pair: Pair, requests: int) -> dict[bool, list[Sample]]:
    """`requests` samples asking for the dump and as many not, through diffbench's client, in ABBA order."""
    engines = {True: server.engine, False: type("NoDump", (type(server.engine),), {"uses_perf_dump": False})()}
    workdir = server.case_dir(pair)
    workdir.mkdir(parents=True, exist_ok=True)
    samples: dict[bool, list[Sample]] = {True: [], False: []}
    for turn in range(requests * 2):
        asked = turn % 4 in (0, 3)
        time.sleep(SETTLE_S)
        samples[asked].append(measure(server.http, engines[asked], pair, server.spec.model_path, None, workdir))
    return samples


def difference(with_dump: list[float], without: list[float]) -> tuple[float, float, float]:
    """Median of with − median of without, in ms, and its bootstrap interval (the two resampled alike)."""
    rng = np.random.default_rng(0)
    a, b = np.asarray(with_dump), np.asarray(without)
    diffs = [np.median(rng.choice(a, len(a))) - np.median(rng.choice(b, len(b))) for _ in range(2000)]
    low, high = np.percentile(diffs, [2.5, 97.5])
    return (statistics.median(with_dump) - statistics.median(without)) * 1000, low * 1000, high * 1000


def engine_rows(framework: str, model: Path, root: Path, requests: int) -> list[str]:
    pair = pair_for(framework, model)
    server = launch((pair,), Download(str(model), "local", 0.0), environment(framework), (), root / framework,
                    Deadline.for_case(pair), "perf-dump-cost")
    try:
        for _ in range(3):
            server.generate(pair, None)  # warm-up: the shape's first runs, and the perf-dump folder
        samples = measure_turns(server, pair, requests)
    finally:
        server.stop()
    rows = []
    for metric, value in (("server inference time", lambda s: s.server_latency_s),
                          ("client latency", lambda s: s.client_latency_s)):
        asked, plain = ([value(s) for s in samples[flag]] for flag in (True, False))
        delta, low, high = difference(asked, plain)
        spread = median_interval(plain)
        rows.append(f"| {framework} | {metric} | {len(asked)} | {statistics.median(asked) * 1000:.2f} | "
                    f"{statistics.median(plain) * 1000:.2f} | {delta:+.2f} [{low:+.2f}, {high:+.2f}] | "
                    f"{(spread[1] - spread[0]) * 500 if spread else float('nan'):.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60, help="requests per side (with / without), per engine")
    parser.add_argument("--engines", default="diffusers,sglang", help="comma-separated: diffusers, sglang")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="diffbench-perf-dump-"))
    # sglang picks its native FLUX pipeline by a model name containing FLUX.1.
    model = build("flux", root / "tiny-FLUX.1-dev")
    loads = [os.getloadavg()[0]]
    rows = []
    for framework in args.engines.split(","):
        rows += engine_rows(framework, model, root, args.requests)
        loads.append(os.getloadavg()[0])
    print(f"tiny FLUX {SIDE}², {STEPS} steps, CPU; with and without the perf dump in turn (ABBA); "
          f"load average {min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} cores")
    print("| engine | metric | requests per side | median with dump ms | median without ms | "
          "with − without ms [95 % interval] | ± half-width without ms |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("| vllm-omni | — | — | — | — | no perf dump to ask for: stage timings come in every response's headers | — |")


if __name__ == "__main__":
    main()
