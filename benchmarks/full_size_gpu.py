"""The reference engine on a full-size FLUX.1-dev architecture (random weights) on one GPU.

Builds the pipeline with FLUX.1-dev's real shapes (12B transformer, T5-XXL, CLIP-L, the
16-channel VAE), saves it, serves it with `diffbench serve --device cuda` through the same
launcher and adapter as the flow, and measures 1024x1024 at 28 steps in bfloat16. Compares with
the plain-diffusers figure of the reference notes (5.34-5.40 s per image on one H100, 33.8 GiB
peak), so the ratio shows the serving overhead of the reference engine.

Run on a GPU host: python benchmarks/full_size_gpu.py [--out DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from diffbench.cases import Matrix, resolve
from diffbench.client import with_perf_dump
from diffbench.engines import ServerSpec
from diffbench.engines.reference import ReferenceEngine
from diffbench.launcher import Server, free_port
from diffbench.reference import full_size

DIFFUSERS_REFERENCE_S = 5.37  # median of the 5.34-5.40 s in the reference notes
DIFFUSERS_REFERENCE_PEAK_GIB = 33.8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/flux1-dev-random"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    model = full_size.build("flux1-dev", args.out)
    print(f"built and saved FLUX.1-dev architecture in {time.perf_counter() - started:.0f} s")

    matrix = Matrix.model_validate({"cases": [{
        "id": "flux1_dev_arch_1024", "model": str(model), "task": "text-to-image",
        "prompt": "A futuristic cyberpunk city at night, neon lights reflecting on wet streets",
        "width": 1024, "height": 1024, "num_inference_steps": 28, "guidance_scale": 3.5, "seed": 42,
        "frameworks": {"diffusers": {"serve_args": "--device cuda --dtype bfloat16"}}}]})
    case = matrix.cases[0]
    pair = resolve(matrix, case, "diffusers", ReferenceEngine.options.model_validate(case.frameworks["diffusers"]))
    engine = ReferenceEngine()
    with Server.start(engine, ServerSpec(pair, "127.0.0.1", free_port(), str(model)), args.out / "run") as server:
        ready_s = server.wait_ready(1800)
        first = with_perf_dump(engine, server.generate(pair, None, 600))
        samples = [with_perf_dump(engine, server.generate(pair, None, 600)) for _ in range(args.repeats)]

    client = statistics.median(s.client_latency_s for s in samples)
    server_s = statistics.median(s.server_latency_s for s in samples)
    step_ms = statistics.median(ms for s in samples for ms in s.denoise_step_ms)
    peak_gib = max(s.peak_reserved_mb for s in samples) / 1024
    print(f"GPU: {torch.cuda.get_device_name(0)}; server ready in {ready_s:.1f} s")
    print(f"first image (warm-up): client {first.client_latency_s:.2f} s")
    print(f"1024x1024, 28 steps, bf16, {args.repeats} images: client median {client:.2f} s, "
          f"server median {server_s:.2f} s ({server_s / client:.1%} of client)")
    print(f"  per denoise step {step_ms:.1f} ms; stages: " + ", ".join(
        f"{name} {ms:.0f} ms" for name, ms in samples[-1].stage_ms.items()))
    print(f"  peak allocated {peak_gib:.1f} GiB (plain diffusers: {DIFFUSERS_REFERENCE_PEAK_GIB} GiB)")
    print(f"  client latency / plain diffusers {DIFFUSERS_REFERENCE_S} s: {client / DIFFUSERS_REFERENCE_S:.3f}")


if __name__ == "__main__":
    main()
