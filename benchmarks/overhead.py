"""Harness overhead against sglang's own bench client, and how fast a ready server is noticed.

One reference server (tiny FLUX, CPU). Per round, in turn: diffbench's request path as the flow takes it
(`Server.generate`, perf dump asked for), its HTTP client alone (`client.measure`) with and without
the perf dump, sglang's bench client
(`async_request_image_sglang` from `sglang.multimodal_gen.benchmarks.bench_serving`, run in the sglang
environment the real-engine tests use, with its own aiohttp session), and a bare POST + JSON parse
through httpx and through urllib3 (candidates diffbench did not pick: it sends through http.client).
Each request starts 10 ms after the one before. Each client's overhead is its latency minus the
server's own inference time for that request (`inference_time_s` in the response). Prints per client
the server's median time and the median and p90 overhead at 64² (4 steps) and at 1024² (1 step), the
ratios to sglang's client with their bootstrap intervals (with and without the perf dump: what asking
for it costs in server time and in overhead), and the machine's load.
Then the delay from the server's first healthy answer to `wait_ready` returning.

Run: .venv/bin/python benchmarks/overhead.py [--requests 100] [--peer-python PYTHON_WITH_SGLANG] [--server-cpus N]
(with OMP_WAIT_POLICY=ACTIVE in the environment, the server's OpenMP threads spin between parallel regions, as
they do by default elsewhere.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import urllib3

from diffbench.cases import Matrix, Pair, resolve
from diffbench.client import Sample, measure
from diffbench.engines import ServerSpec
from diffbench.engines.environments import build_venv
from diffbench.engines.reference import ReferenceEngine
from diffbench.launcher import Server, free_port
from diffbench.reference.tiny_models import build
from diffbench.stats import ratio_interval

ROOT = Path(__file__).resolve().parents[1]
SGLANG_LOCK = ROOT / "tests" / "engines" / "real" / "sglang-cpu.txt"
ENVS_DIR = Path(os.environ.get("DIFFBENCH_TEST_ENVS_DIR", Path.home() / ".cache" / "diffbench" / "test-envs"))
LAUNCHES = 5
TARGET_P90_MS = 5.0
TARGET_NOTICE_MS = 250.0
# Each request starts on an idle server, so that none meets the work the one before left behind (the
# reference server writes its perf dump after answering), whichever client sent it.
SETTLE_S = 0.01
SHAPES = ((64, 4), (1024, 1))  # (side, steps): the small case, and a large output from a cheap request

# sglang's request function, fed one request per stdin line; prints its latency and the server's time.
PEER = """
import asyncio, importlib.util, json, sys, types
import aiohttp
# bench_serving imports sglang's utilities, which import OpenCV and IPython.display: unused by its request function,
# and absent from the CPU lock (OpenCV) or from a bare GPU host (IPython).
def unused(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return object
for module in ["cv2"] + ([] if importlib.util.find_spec("IPython") else ["IPython", "IPython.display"]):
    stub = types.ModuleType(module)
    stub.__getattr__ = unused
    sys.modules.setdefault(module, stub)
from sglang.multimodal_gen.benchmarks.bench_serving import async_request_image_sglang
from sglang.multimodal_gen.benchmarks.datasets import RequestFuncInput

async def main():
    async with aiohttp.ClientSession() as session:
        print("ready", flush=True)
        for line in sys.stdin:
            out = await async_request_image_sglang(RequestFuncInput(**json.loads(line)), session)
            print(json.dumps({"latency": out.latency, "error": out.error,
                              "server": out.response_body.get("inference_time_s")}), flush=True)

asyncio.run(main())
"""


def pair_for(model: Path, side: int, steps: int) -> Pair:
    matrix = Matrix.model_validate({"cases": [{
        "id": f"tiny_flux_{side}", "model": str(model), "task": "text-to-image", "prompt": "a lighthouse",
        "width": side, "height": side, "num_inference_steps": steps, "seed": 1,
        "frameworks": {"diffusers": {"serve_args": "--device cpu"}}}]})
    case = matrix.cases[0]
    return resolve(matrix, case, "diffusers", ReferenceEngine.options.model_validate(case.frameworks["diffusers"]))


class Peer:
    """sglang's bench client in its own interpreter, one request per call."""

    def __init__(self, python: Path) -> None:
        self.process = subprocess.Popen([str(python), "-c", PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=tempfile.gettempdir())
        assert self.process.stdout.readline().strip() == "ready"

    def request(self, url: str, model: str, side: int, steps: int) -> tuple[float, float]:
        spec = {"prompt": "a lighthouse", "api_url": f"{url}/v1/images/generations", "model": model,
                "width": side, "height": side, "num_inference_steps": steps, "extra_body": {"seed": 1}}
        for _ in range(2):  # a keep-alive connection the server closed while idle: aiohttp's first try fails
            self.process.stdin.write(json.dumps(spec) + "\n")
            self.process.stdin.flush()
            answer = json.loads(self.process.stdout.readline())
            if answer["error"] != "Server disconnected":
                break
        if answer["error"]:
            raise RuntimeError(f"sglang's client failed: {answer['error']}")
        return answer["latency"], answer["server"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(10)


def payload(model: str, side: int, steps: int) -> dict[str, Any]:
    return {"model": model, "prompt": "a lighthouse", "size": f"{side}x{side}", "num_inference_steps": steps,
            "seed": 1, "response_format": "b64_json"}


def bare_httpx(http: httpx.Client, model: str, side: int, steps: int) -> tuple[float, float]:
    started = time.perf_counter()
    body = http.post("/v1/images/generations", json=payload(model, side, steps)).raise_for_status().json()
    return time.perf_counter() - started, body["inference_time_s"]


def bare_urllib3(http: urllib3.HTTPConnectionPool, model: str, side: int, steps: int) -> tuple[float, float]:
    started = time.perf_counter()
    response = http.request("POST", "/v1/images/generations", json=payload(model, side, steps))
    latency = time.perf_counter() - started
    assert response.status == 200, response.data[:200]
    return latency, response.json()["inference_time_s"]


class NoPerfDump(ReferenceEngine):
    uses_perf_dump = False


def timed(sample: Sample) -> tuple[float, float]:
    return sample.client_latency_s, sample.server_latency_s


def measure_turns(clients: dict[str, Callable[[], tuple[float, float]]],
                  requests: int) -> dict[str, list[tuple[float, float]]]:
    """Each client's (client, server) seconds per request, the clients taking turns, the order rotating."""
    names = list(clients)
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for turn in range(requests):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            time.sleep(SETTLE_S)
            timings[name].append(clients[name]())
    return timings


def p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


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


def overhead_table(root: Path, model: Path, requests: int, peer_python: Path | None, server_cpus: int) -> None:
    """With `server_cpus`, the server runs on the first that many CPUs and every client on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    engine = ReferenceEngine()
    spec = ServerSpec(pair_for(model, 64, 4), "127.0.0.1", free_port(), str(model))
    loads = [os.getloadavg()[0]]
    rows: list[tuple[Any, ...]] = []
    if server_cpus:
        os.sched_setaffinity(0, cpus[:server_cpus])  # the server inherits it
    server = Server.start(engine, spec, root / "overhead")
    try:
        if server_cpus:
            os.sched_setaffinity(0, cpus[server_cpus:])  # this process and the peer's
        peer = Peer(peer_python or build_venv(["--no-deps", "-r", str(SGLANG_LOCK)], ENVS_DIR).python)
    except BaseException:
        server.stop()
        os.sched_setaffinity(0, cpus)
        raise
    with (server, httpx.Client(base_url=spec.base_url) as http, urllib3.connection_from_url(spec.base_url) as pool,
          closing(peer)):
        server.wait_ready(120)
        workdir = server.case_dir(spec.pair)
        workdir.mkdir(parents=True, exist_ok=True)
        for side, steps in SHAPES:
            pair = pair_for(model, side, steps)
            count = requests if side == 64 else max(requests // 5, 10)
            clients = {
                "diffbench flow path": lambda pair=pair: timed(server.generate(pair, None)),
                "diffbench client, perf dump": lambda pair=pair: timed(
                    measure(server.http, engine, pair, str(model), None, workdir)),
                "diffbench client, no perf dump": lambda pair=pair: timed(
                    measure(server.http, NoPerfDump(), pair, str(model), None, workdir)),
                "sglang bench client": lambda s=side, n=steps: peer.request(spec.base_url, str(model), s, n),
                "bare httpx + JSON": lambda s=side, n=steps: bare_httpx(http, str(model), s, n),
                "bare urllib3 + JSON": lambda s=side, n=steps: bare_urllib3(pool, str(model), s, n),
            }
            for client in clients.values():
                client()  # warm-up: connections, the shape's first run
            timings = measure_turns(clients, count)
            loads.append(os.getloadavg()[0])
            overheads = {name: [(c - s) * 1000 for c, s in pairs] for name, pairs in timings.items()}
            theirs = overheads["sglang bench client"]
            for name, values in overheads.items():
                server_ms = statistics.median(s * 1000 for _, s in timings[name])
                ratio = statistics.median(values) / statistics.median(theirs)
                rows.append((f"{side}²", name, count, server_ms, statistics.median(values), p90(values), ratio,
                             ratio_interval(values, theirs)))
    os.sched_setaffinity(0, cpus)  # the readiness benchmark after this one runs unpinned
    pinning = f", server on {server_cpus} of them, clients on the rest" if server_cpus else ""
    print(f"overhead = client latency − the server's inference_time_s; tiny FLUX on CPU, clients in turn; "
          f"load average {min(loads):.2f}–{max(loads):.2f} on {len(cpus)} cores{pinning}")
    print("| output | client | requests | server median ms | overhead median ms | p90 ms | "
          "median / sglang's client [95 %] |")
    print("|---|---|---|---|---|---|---|")
    for shape, name, count, server_ms, median, tail, ratio, (low, high) in rows:
        print(f"| {shape} | {name} | {count} | {server_ms:.2f} | {median:.2f} | {tail:.2f} | "
              f"{ratio:.2f} [{low:.2f}, {high:.2f}] |")
    ours = {shape: (median, tail) for shape, name, _, _, median, tail, *_ in rows if name == "diffbench flow path"}
    print(f"diffbench p90 at 64² {ours['64²'][1]:.2f} ms (target ≤ {TARGET_P90_MS:g} ms: "
          f"{'met' if ours['64²'][1] <= TARGET_P90_MS else 'MISSED'}); median 1024² / 64²: "
          f"{ours['1024²'][0] / ours['64²'][0]:.2f}")


def notice_delay(root: Path, model: Path) -> None:
    engine, notice_ms = ReferenceEngine(), []
    for launch in range(LAUNCHES):
        spec = ServerSpec(pair_for(model, 64, 4), "127.0.0.1", free_port(), str(model))
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
    notice = statistics.median(notice_ms)
    print(f"readiness noticed after the first healthy answer, {LAUNCHES} launches: median {notice:.1f} ms, "
          f"max {max(notice_ms):.1f} ms (target ≤ {TARGET_NOTICE_MS:g} ms: "
          f"{'met' if max(notice_ms) <= TARGET_NOTICE_MS else 'MISSED'}); ratio to sglang's 2 s poll interval "
          f"{notice / 2000:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100, help="requests per client at 64² (1024²: a fifth)")
    parser.add_argument("--peer-python", type=Path, help="a Python that imports sglang (default: a venv built from "
                                                          "the CPU lock, which needs a package registry)")
    parser.add_argument("--server-cpus", type=int, default=0,
                        help="pin the server to this many CPUs and the clients to the rest (default: no pinning)")
    args = parser.parse_args()
    if not 0 <= args.server_cpus < len(os.sched_getaffinity(0)):
        parser.error(f"--server-cpus must leave the clients at least one of this process's "
                     f"{len(os.sched_getaffinity(0))} CPUs")
    root = Path(tempfile.mkdtemp(prefix="diffbench-bench-"))
    model = build("flux", root / "tiny-flux")
    overhead_table(root, model, args.requests, args.peer_python, args.server_cpus)
    notice_delay(root, model)


if __name__ == "__main__":
    main()
