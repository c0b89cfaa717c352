"""Video timing without poll bias: client time minus the server's own time, old and new polling.

A video job is polled until done, so the client's time overshoots the job's end by up to one poll
interval. Before, the interval backed off from 50 ms to 250 ms and stayed there; now it is 25 ms
from half the fastest time seen so far (`client.poll_wait`). This benchmark measures one video
case both ways on one reference server, alternating request by request so that both see the same
machine, and prints per schedule: the median client minus server time (the server's perf dump),
the median and largest poll bound, and the ratios new / old.

Run: .venv/bin/python benchmarks/video_polling.py              (tiny Wan on the CPU)
     .venv/bin/python benchmarks/video_polling.py --gpu DIR    (Wan2.1-T2V-1.3B architecture, 832x480x33)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from diffbench import client
from diffbench.cases import Matrix, Pair, resolve
from diffbench.client import Sample, with_perf_dump
from diffbench.engines import ServerSpec
from diffbench.engines.reference import ReferenceEngine
from diffbench.launcher import Server, free_port

REQUESTS = 10
TARGET_BOUND_S = 0.05
NEW_SCHEDULE = client.poll_wait


def old_schedule(elapsed_s: float, expected_s: float | None, previous_s: float) -> float:
    """The schedule before: 50 ms, then ×1.5 per poll up to 250 ms, whatever the expected time."""
    return 0.05 if previous_s == 0 else min(previous_s * 1.5, 0.25)


def pair_for(model: Path, gpu: bool) -> Pair:
    shape = ({"width": 832, "height": 480, "num_frames": 33, "num_inference_steps": 20} if gpu else
             {"width": 64, "height": 32, "num_frames": 9, "num_inference_steps": 8})
    serve_args = "--device cuda --dtype bfloat16" if gpu else "--device cpu"
    matrix = Matrix.model_validate({"cases": [{
        "id": "wan_video", "model": str(model), "task": "text-to-video", "prompt": "a lighthouse in a storm",
        "fps": 16, "seed": 1, **shape, "frameworks": {"diffusers": {"serve_args": serve_args}}}]})
    case = matrix.cases[0]
    return resolve(matrix, case, "diffusers", ReferenceEngine.options.model_validate(case.frameworks["diffusers"]))


def report(name: str, samples: list[Sample]) -> tuple[float, float]:
    bias = [s.client_latency_s - s.server_latency_s for s in samples]
    bounds = [s.poll_bound_s for s in samples]
    print(f"| {name} | {statistics.median(s.client_latency_s for s in samples):.3f} | "
          f"{statistics.median(s.server_latency_s for s in samples):.3f} | {statistics.median(bias) * 1000:.1f} | "
          f"{statistics.median(bounds) * 1000:.1f} | {max(bounds) * 1000:.1f} |")
    return statistics.median(bias), max(bounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", type=Path, help="build the full-size Wan architecture here and run it on GPU 0")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="measured requests per schedule")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="diffbench-polling-"))
    if args.gpu and (args.gpu / "wan" / "model_index.json").exists():
        model = args.gpu / "wan"
    elif args.gpu:
        from diffbench.reference.full_size import build
        model = build("wan2.1-t2v-1.3b", args.gpu / "wan")
    else:
        from diffbench.reference.tiny_models import build
        model = build("wan", root / "tiny-wan")
    pair, engine = pair_for(model, bool(args.gpu)), ReferenceEngine()
    spec = ServerSpec(pair, "127.0.0.1", free_port(), str(model), (0,) if args.gpu else ())
    measured: dict[str, list[Sample]] = {"old": [], "new": []}
    with Server.start(engine, spec, root / "server") as server:
        server.wait_ready(900)
        server.generate(pair, None)  # warm-up: also the first expected time of the new schedule
        for _ in range(args.requests):
            for name, schedule in (("old", old_schedule), ("new", NEW_SCHEDULE)):
                client.poll_wait = schedule
                measured[name].append(with_perf_dump(engine, server.generate(pair, None)))
    client.poll_wait = NEW_SCHEDULE
    case = pair.case
    print(f"{case.width}x{case.height}x{case.num_frames} frames, {case.num_inference_steps} steps, "
          f"{args.requests} requests per schedule, alternating")
    print("| polling | client median s | server median s | client − server ms | poll bound median ms | max ms |")
    print("|---|---|---|---|---|---|")
    old_bias, old_bound = report("old: backoff to 250 ms", measured["old"])
    new_bias, new_bound = report("new: 25 ms from half the expected time", measured["new"])
    print(f"client − server, new / old: {new_bias / old_bias:.2f}; largest poll bound, new / old: "
          f"{new_bound / old_bound:.2f}; target bound <= {TARGET_BOUND_S * 1000:.0f} ms: "
          f"{'met' if new_bound <= TARGET_BOUND_S else 'MISSED'}")


if __name__ == "__main__":
    main()
