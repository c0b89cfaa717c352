"""The real flow on full-size architectures, with everything a result now carries, on this host's GPUs.

One `diffbench run` of three servers packed over the GPUs: FLUX.1-dev 1024², 28 steps, and
Wan2.1-T2V-1.3B 832×480×33 frames on one GPU each, and FLUX.1-dev 768² spread over two GPUs;
random weights built on the GPU. Repeats are `auto` (median's interval within 2 %), each case then
runs sglang's throughput block (2 requests at concurrency 1 and 2), and the canary runs first.
It prints the makespan against the lower bound (the busiest GPU's work), and per case client
minus server time, the poll bound, energy per output, telemetry, determinism and memory back to
idle after its server's stop; then the throughput levels and the canary readings.

Run: python benchmarks/measurements_gpu.py --out DIR [--models DIR] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from packing import build_models, diffbench_run, holds_of
from sqlalchemy import text

from diffbench.packing import busiest_gpu_s, lower_bound, makespan
from diffbench.storage import store

PROMPT = "A futuristic cyberpunk city at night, neon lights reflecting on wet streets"


def matrix(models: dict[str, Path], tiny: bool) -> dict[str, Any]:
    device = "--device cpu" if tiny else "--device cuda --dtype bfloat16"

    def case(case_id: str, arch: str, gpus: int, **shape: Any) -> dict[str, Any]:
        return {"id": case_id, "model": str(models[arch]), "num_gpus": gpus, "seed": 42, "prompt": PROMPT,
                "frameworks": {"diffusers": {"serve_args": device}}, **shape}

    flux = {"task": "text-to-image", "num_inference_steps": 4 if tiny else 28, "guidance_scale": 3.5}
    wan = {"task": "text-to-video", "fps": 16, "num_inference_steps": 4 if tiny else 20}
    return {
        "warmup_requests": 1, "measurement_repeats": "auto",
        "auto_repeats": {"target": 0.02, "min_requests": 5, "max_requests": 8, "max_seconds": 60},
        "benchmark_defaults": {"throughput": {"num_requests": 2, "max_concurrency": 2}},
        "cases": [
            case("flux_1024", "flux", 1, width=64 if tiny else 1024, height=64 if tiny else 1024, **flux),
            case("wan_480p_33f", "wan", 1, width=64 if tiny else 832, height=32 if tiny else 480,
                 num_frames=9 if tiny else 33, **wan),
            case("flux_768_2gpu", "flux", 2, width=48 if tiny else 768, height=48 if tiny else 768, **flux),
        ]}


def fmt(value: Any, pattern: str = "{:.3f}") -> str:
    return "—" if value is None or pd.isna(value) else pattern.format(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/diffbench-measurements"))
    parser.add_argument("--models", type=Path, help="where the models are built (default: OUT/models)")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU models instead")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    state, config, url = out / "state", out / "matrix.yaml", f"sqlite:///{out / 'results.db'}"
    cases = matrix(build_models(args.models or out / "models", args.tiny), args.tiny)
    config.write_text(yaml.safe_dump(cases))
    env = os.environ | {"DIFFBENCH_STATE_DIR": str(state), "DIFFBENCH_DATABASE_URL": url,
                        "DIFFBENCH_DASHBOARD_DIR": str(out / "dashboard"), "DIFFBENCH_HOST_LOCK": str(out / "lock")}
    started = time.perf_counter()
    diffbench_run(config, env)
    print(f"whole run (Prefect, canary, servers): {time.perf_counter() - started:.0f} s")

    engine = store.open_database(url)
    frame = store.results_frame(engine)
    run_id = frame["run_id"].iloc[-1]
    frame = frame[frame["run_id"] == run_id]
    packed = holds_of(state, run_id)
    gpu_count = len({g for p in packed for g in p.gpus})
    busy = [(len(p.gpus), p.end_s - p.start_s) for p in packed]
    span, busiest, bound = makespan(packed), busiest_gpu_s(packed), lower_bound(busy, gpu_count)
    print(f"\nmakespan {span:.1f} s on {gpu_count} GPU(s); busiest GPU's work {busiest:.1f} s (ratio "
          f"{span / busiest:.3f}); lower bound of any order {bound:.1f} s (ratio {span / bound:.3f})")
    with engine.connect() as connection:
        bounds = dict(connection.execute(text(
            "SELECT r.case_id, MAX(s.poll_bound_s) FROM samples s JOIN results r ON r.id = s.result_id "
            "WHERE r.run_id = :run GROUP BY r.case_id"), {"run": run_id}).all())
        canaries = connection.execute(text("SELECT gpu, device_name, matmul_tflops, bandwidth_gbs, seconds, suspect "
                                           "FROM canaries WHERE run_id = :run ORDER BY gpu"), {"run": run_id}).all()

    print("\n| case | GPUs | n | client median s [95 % interval] | server s | client − server ms | poll bound max ms "
          "| J / output | peak MiB | util % | power W | SM MHz | throttled | memory back to idle s | outputs | "
          "ms / MP·step | s / video s |")
    print("|---" * 17 + "|")
    for _, row in frame[frame["status"] == "ok"].iterrows():
        t = row["telemetry"] or {}
        gap = (row["median_s"] - row["server_median_s"]) * 1000 if row["server_median_s"] else None
        outputs = "identical" if row["identical_outputs"] else f"differ ≤ {fmt(row['output_spread'], '{:.2%}')}"
        print(f"| {row['case_id']} | {row['num_gpus']} | {row['n']} | {row['median_s']:.3f} "
              f"[{fmt(row['ci_low_s'])}–{fmt(row['ci_high_s'])}] | {fmt(row['server_median_s'])} | "
              f"{fmt(gap, '{:.1f}')} | {fmt(bounds.get(row['case_id']) and bounds[row['case_id']] * 1000, '{:.1f}')} "
              f"| {fmt(row['joules_per_output'], '{:.0f}')} | {fmt(t.get('peak_memory_mb'), '{:.0f}')} | "
              f"{fmt(t.get('mean_utilization_pct'), '{:.0f}')} | {fmt(t.get('mean_power_w'), '{:.0f}')} | "
              f"{fmt(t.get('sm_clock_mhz'), '{:.0f}')} | {t.get('throttled_requests') or 'none'}"
              f"{''.join(' ' + r for r in t.get('throttle_reasons') or [])} | "
              f"{fmt(row['memory_release_s'], '{:.2f}')} | {outputs} | "
              f"{fmt(row['ms_per_megapixel_step'], '{:.1f}')} | {fmt(row['seconds_per_video_second'], '{:.2f}')} |")
    failed = frame[frame["status"] != "ok"]
    for _, row in failed.iterrows():
        print(f"FAILED {row['case_id']}: {row['error_class']}")

    print("\n| case | concurrency | requests | failed | req/s | p50 s | p90 s | p99 s | req/s vs concurrency 1 |")
    print("|---" * 9 + "|")
    for _, row in frame[frame["status"] == "ok"].iterrows():
        levels = row["throughput"] or []
        for level in levels:
            scale = level["requests_per_s"] / levels[0]["requests_per_s"] if levels[0]["requests_per_s"] else None
            print(f"| {row['case_id']} | {level['concurrency']} | {level['requests']} | {level['failed']} | "
                  f"{level['requests_per_s']:.3f} | {fmt(level['p50_s'])} | {fmt(level['p90_s'])} | "
                  f"{fmt(level['p99_s'])} | {fmt(scale, '{:.2f}')} |")

    print("\n| canary device | name | bf16 matmul TFLOP/s | bandwidth GB/s | seconds | suspect |")
    print("|---|---|---|---|---|---|")
    for gpu, name, tflops, gbs, seconds, suspect in canaries:
        print(f"| {gpu} | {name} | {tflops:.1f} | {gbs:.0f} | {seconds:.2f} | {suspect or 'no'} |")


if __name__ == "__main__":
    main()
