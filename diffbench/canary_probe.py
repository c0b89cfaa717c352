"""Hardware canary: a fixed short micro-benchmark of one device, run with an engine's own Python.

Usage: `<python> canary_probe.py --device cuda:0|cpu`. Needs only the stdlib and torch: diffbench is
not importable there. Prints one JSON line: device, name, matmul_tflops, bandwidth_gbs, seconds.

Each figure is the best of ROUNDS timed rounds, after one untimed round: interference (another
process, clocks still ramping up) only ever slows a round down, so the best round is the steadiest
reading of what the hardware can do, and a drop in it night over night means the device got slower.
"""

import argparse
import json
import os
import platform
import sys
import time

ROUNDS = 3
# (dtype name, matmul side, copy size in bytes, iterations per round). On CUDA: ~1.1 TFLOP per product and
# 2 GiB moved per copy, enough work per round that timer overhead vanishes; the whole probe takes a few
# seconds, most of it CUDA's start. On a CPU: sized to finish in about a second on 2 cores.
WORKLOADS = {"cuda": ("bfloat16", 8192, 1 << 30, 20), "cpu": ("float32", 1024, 64 << 20, 10)}


def best_seconds(torch, device, step, iterations: int) -> float:
    """Seconds of the fastest of ROUNDS rounds of `iterations` calls of `step`, after one warm-up round."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for _ in range(ROUNDS + 1):
        sync()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        sync()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True, help="cuda:N or cpu")
    args = parser.parse_args()
    # This file lies inside diffbench's package: its modules must not shadow those of the engine's environment.
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry) != here]
    import torch

    started = time.perf_counter()
    device = torch.device(args.device)
    visible = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= visible:
        sys.exit(f"canary_probe: no {args.device} here: torch {torch.__version__} sees {visible} CUDA devices "
                 f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
    if device.type not in WORKLOADS:
        sys.exit(f"canary_probe: unsupported device {args.device} (cuda:N or cpu)")
    dtype_name, side, copy_bytes, iterations = WORKLOADS[device.type]
    dtype = getattr(torch, dtype_name)

    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    matmul_s = best_seconds(torch, device, lambda: torch.mm(a, b), iterations)

    # Contents don't matter to a copy; uninitialised memory is paged in by the warm-up round.
    source = torch.empty(copy_bytes, device=device, dtype=torch.uint8)
    target = torch.empty_like(source)
    copy_s = best_seconds(torch, device, lambda: target.copy_(source), iterations)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(json.dumps({
        "device": args.device,
        "name": name,
        "torch": torch.__version__,
        "matmul_tflops": 2 * side**3 * iterations / matmul_s / 1e12,
        # Each copy reads and writes every byte once.
        "bandwidth_gbs": 2 * copy_bytes * iterations / copy_s / 1e9,
        "seconds": time.perf_counter() - started,
    }))


if __name__ == "__main__":
    main()
