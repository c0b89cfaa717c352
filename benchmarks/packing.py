"""Packing servers over a host's GPUs: makespan against the lower bound, simulated and real.

`python benchmarks/packing.py` replays sglang's own case mixes (its configs and latencies, copied
in tests/fixtures) on simulated 4- and 8-GPU hosts, first night (nothing measured yet) and with
history, and prints makespan, bound and ratio.

`python benchmarks/packing.py --real --out DIR` runs the real `diffbench run` flow on this host:
full-size FLUX.1-dev and Wan2.1-T2V-1.3B architectures (random weights built on the GPU; `--tiny`
builds the CPU test models instead), servers of 1 and 2 GPUs in a mix that cannot pack perfectly.
Each server is first measured alone (one run per server), then all are measured packed in one
run, with the alone runs as history. NVML samples every GPU's memory and utilisation throughout.
It prints the makespan against the bound, per-case latency alone and packed, whether a GPU was
ever held twice, and each GPU's memory when it was handed to its next server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pynvml
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from diffbench.packing import Job, Placement, busiest_gpu_s, lower_bound, makespan, simulate  # noqa: E402
from diffbench.storage import store  # noqa: E402

MIXES = ["comparison_configs_sglang_03635624_latest-stored.json",
         "comparison_configs_fork-trillion-labs_5ff6d5af_9cases_vllm-omni-disabled.json",
         "comparison_configs_sglang_8ef18e0a_cross-framework_vllm-omni_lightx2v_throughput.json"]
SAMPLE_S = 0.1


def simulated() -> None:
    from test_packing import night  # sglang's mixes as servers, durations from its own latencies

    print("| sglang mix | GPUs | servers | first night: makespan / bound | with history: makespan / bound | ratio |")
    print("|---|---|---|---|---|---|")
    for mix in MIXES:
        for gpu_count in (4, 8):
            first, known = simulate(night(mix, False), gpu_count), simulate(night(mix, True), gpu_count)
            bound = lower_bound([(p.job.num_gpus, p.job.duration_s) for p in known], gpu_count)
            print(f"| {mix.split('_')[3]} | {gpu_count} | {len(known)} | {makespan(first):.0f} / {bound:.0f} s "
                  f"({makespan(first) / bound:.2f}) | {makespan(known):.0f} / {bound:.0f} s | "
                  f"{makespan(known) / bound:.3f} |")


class GpuSampler(threading.Thread):
    """Every GPU's used memory (MiB) and utilisation (%) every SAMPLE_S seconds, wall clock."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        try:
            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError:  # a CPU host: one slot, nothing to sample
            self.handles = []
        self.samples: list[tuple[float, int, float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_S):
            now = time.time()
            for index, handle in enumerate(self.handles):
                used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                self.samples.append((now, index, used, pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def memory_before(self, gpu: int, moment: float) -> float | None:
        readings = [used for at, index, used, _ in self.samples if index == gpu and at <= moment]
        return readings[-1] if readings else None

    def mean_utilisation(self, gpu: int, start: float, end: float) -> float:
        return statistics.fmean([u for at, i, _, u in self.samples if i == gpu and start <= at <= end] or [0])


def build_models(out: Path, tiny: bool) -> dict[str, Path]:
    """The two pipelines, built unless an earlier call of this benchmark left them in `out`."""
    if all((out / arch / "model_index.json").exists() for arch in ("flux", "wan")):
        return {arch: out / arch for arch in ("flux", "wan")}
    started = time.perf_counter()
    if tiny:
        from diffbench.reference import tiny_models
        models = {arch: tiny_models.build(arch, out / arch) for arch in ("flux", "wan")}
    else:
        from diffbench.reference import full_size
        models = {"flux": full_size.build("flux1-dev", out / "flux"),
                  "wan": full_size.build("wan2.1-t2v-1.3b", out / "wan")}
    print(f"models built and saved in {time.perf_counter() - started:.0f} s")
    return models


def matrix(models: dict[str, Path], tiny: bool) -> dict[str, Any]:
    """Four servers: FLUX and Wan on 2 GPUs each, FLUX (two cases) and Wan on 1 GPU each."""
    device = "--device cpu" if tiny else "--device cuda --dtype bfloat16"
    large, small = (64, 32) if tiny else (1024, 768)
    frames, width, height = (5, 64, 64) if tiny else (17, 832, 480)

    def case(case_id: str, arch: str, gpus: int, **shape: Any) -> dict[str, Any]:
        return {"id": case_id, "model": str(models[arch]), "num_gpus": gpus, "seed": 42,
                "prompt": "A futuristic cyberpunk city at night, neon lights reflecting on wet streets",
                "frameworks": {"diffusers": {"serve_args": device}}, **shape}

    flux = {"task": "text-to-image", "num_inference_steps": 4 if tiny else 20, "guidance_scale": 3.5}
    wan = {"task": "text-to-video", "width": width, "height": height, "num_frames": frames, "fps": 16,
           "num_inference_steps": 4 if tiny else 30}
    return {"warmup_requests": 1, "measurement_repeats": 3, "cases": [
        case("flux_1024_2gpu", "flux", 2, width=large, height=large, **flux),
        case("wan_480p_2gpu", "wan", 2, **wan),
        case("flux_1024", "flux", 1, width=large, height=large, **flux),
        case("flux_768", "flux", 1, width=small, height=small, **flux),
        case("wan_480p", "wan", 1, **wan),
    ]}


def diffbench_run(config: Path, env: dict[str, str], cases: list[str] | None = None) -> None:
    argv = [sys.executable, "-m", "diffbench", "run", "--config", str(config)]
    argv += ["--cases", ",".join(cases)] if cases else []
    started = time.perf_counter()
    finished = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    print(f"  diffbench run {' '.join(argv[5:])}: exit {finished.returncode} in {time.perf_counter() - started:.0f} s")
    if finished.returncode:
        print(finished.stdout[-3000:], finished.stderr[-3000:])


def holds_of(state: Path, run_id: str) -> list[Placement]:
    """The run's GPU timeline as placements (wall-clock seconds); on a CPU host, its one slot is GPU 0."""
    holds = json.loads((state / "runs" / run_id / "gpu-timeline.json").read_text())
    return [Placement(Job(h["label"], len(h["gpus"]) or 1, None, h["released_at"] - h["taken_at"]),
                      tuple(h["gpus"]) or (0,), h["taken_at"], h["released_at"]) for h in holds]


def real(out: Path, tiny: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state, config = out / "state", out / "matrix.yaml"
    sampler = GpuSampler()
    gpu_count = len(sampler.handles) or 1
    sampler.start()
    time.sleep(1)
    idle = {gpu: sampler.memory_before(gpu, time.time()) or 0.0 for gpu in range(len(sampler.handles))}
    cases = matrix(build_models(out / "models", tiny), tiny)
    config.write_text(yaml.safe_dump(cases))
    url = f"sqlite:///{out / 'results.db'}"
    env = os.environ | {"DIFFBENCH_STATE_DIR": str(state), "DIFFBENCH_DATABASE_URL": url,
                        "DIFFBENCH_DASHBOARD_DIR": str(out / "dashboard"), "DIFFBENCH_HOST_LOCK": str(out / "lock")}
    servers = [["flux_1024_2gpu"], ["wan_480p_2gpu"], ["flux_1024", "flux_768"], ["wan_480p"]]
    print(f"{gpu_count} GPU(s); idle memory (MiB): {idle}")
    print("alone, one server per run:")
    for server in servers:
        diffbench_run(config, env, server)
    print("packed, one run:")
    diffbench_run(config, env, None)
    sampler.stopped.set()
    sampler.join()

    frame = store.results_frame(store.open_database(url))
    run_ids = list(dict.fromkeys(frame.sort_values("started_at")["run_id"]))
    alone_runs, packed_run = run_ids[:-1], run_ids[-1]
    packed = holds_of(state, packed_run)
    span, busy = makespan(packed), [(len(p.gpus), p.end_s - p.start_s) for p in packed]
    issue_bound = max(busiest_gpu_s(packed), sum(g * s for g, s in busy) / gpu_count)
    print(f"\npacked run: makespan {span:.1f} s; busiest GPU's work or work / GPUs {issue_bound:.1f} s "
          f"(ratio {span / issue_bound:.3f}); lower bound of any order {lower_bound(busy, gpu_count):.1f} s "
          f"(ratio {span / lower_bound(busy, gpu_count):.3f}); sum of busy times {sum(s for _, s in busy):.1f} s")
    start = min(p.start_s for p in packed)
    print("| server | GPUs | busy from | to | seconds | mean utilisation | MiB above idle when handed over |")
    print("|---|---|---|---|---|---|---|")
    for p in sorted(packed, key=lambda p: p.start_s):
        before = {g: (sampler.memory_before(g, p.start_s) or 0.0) - idle.get(g, 0.0) for g in p.gpus}
        utilisation = ", ".join(f"{sampler.mean_utilisation(g, p.start_s, p.end_s):.0f} %" for g in p.gpus)
        print(f"| {p.job.name} | {list(p.gpus)} | {p.start_s - start:.1f} | {p.end_s - start:.1f} | "
              f"{p.end_s - p.start_s:.1f} | {utilisation} | {', '.join(f'{mb:.0f}' for mb in before.values())} |")
    overlaps = [(a.job.name, b.job.name) for a in packed for b in packed
                if a is not b and set(a.gpus) & set(b.gpus) and a.start_s < b.start_s < a.end_s]
    print(f"servers that held one GPU at once: {overlaps or 'none'}")

    print("\n| case | alone: client median s | packed | packed / alone | alone server s | packed server s |")
    print("|---|---|---|---|---|---|")
    ok = frame[frame["status"] == "ok"]
    for case_id in [c["id"] for c in cases["cases"]]:
        rows = ok[ok["case_id"] == case_id]
        alone, together = rows[rows["run_id"].isin(alone_runs)], rows[rows["run_id"] == packed_run]
        if alone.empty or together.empty:
            print(f"| {case_id} | missing: {frame[frame['case_id'] == case_id]['error_class'].tolist()} |")
            continue
        a, b = alone["median_s"].iloc[-1], together["median_s"].iloc[-1]
        print(f"| {case_id} | {a:.3f} | {b:.3f} | {b / a:.3f} | {alone['server_median_s'].iloc[-1]:.3f} | "
              f"{together['server_median_s'].iloc[-1]:.3f} |")
    (out / "gpu-samples.json").write_text(json.dumps(sampler.samples))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="run the real flow on this host's GPUs")
    parser.add_argument("--tiny", action="store_true", help="with --real: the tiny CPU models")
    parser.add_argument("--out", type=Path, default=Path("/tmp/diffbench-packing"))
    args = parser.parse_args()
    if args.real:
        real(args.out, args.tiny)
    else:
        simulated()


if __name__ == "__main__":
    main()
