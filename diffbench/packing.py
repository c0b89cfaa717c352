"""Which server gets a host's GPUs next, and how long a night then takes.

The rule is greedy list scheduling: servers wait in order of their expected busy time, longest
first, and whenever GPUs come free every waiting server that fits starts, in that order. A server
never measured on this hardware comes first, since it may be the longest. `GpuPool` hands out real
GPUs by this rule; `simulate` replays it on given durations, so the order can be checked against
the lower bound without a GPU.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """One server's work: GPUs it needs, what it is expected to take, and (for a replay) what it takes."""

    name: str
    num_gpus: int
    estimate_s: float | None
    duration_s: float = 0.0


@dataclass(frozen=True)
class Placement:
    """Where and when one job ran."""

    job: Job
    gpus: tuple[int, ...]
    start_s: float
    end_s: float


def priority(num_gpus: int, estimate_s: float | None) -> tuple[bool, float, int]:
    """Sort key, smallest first: unmeasured servers, then the longest, wider before narrower."""
    return (estimate_s is not None, -(estimate_s or 0.0), -num_gpus)


def ordered(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda job: priority(job.num_gpus, job.estimate_s))


def startable(waiting: list[int], free: int) -> list[int]:
    """Indexes of the waiting GPU counts (in priority order) that start now with `free` GPUs."""
    started = []
    for index, count in enumerate(waiting):
        if count <= free:
            started.append(index)
            free -= count
    return started


def simulate(jobs: list[Job], gpu_count: int) -> list[Placement]:
    """Replay the rule on `jobs`' real durations over `gpu_count` GPUs, all jobs waiting at time 0."""
    waiting = ordered(jobs)
    free = list(range(gpu_count))
    running: list[tuple[float, int, tuple[int, ...]]] = []
    placements: list[Placement] = []
    now = 0.0
    while waiting or running:
        started = startable([job.num_gpus for job in waiting], len(free))
        for index in started:
            job = waiting[index]
            gpus, free = tuple(free[:job.num_gpus]), free[job.num_gpus:]
            placements.append(Placement(job, gpus, now, now + job.duration_s))
            heapq.heappush(running, (now + job.duration_s, len(placements), gpus))
        waiting = [job for index, job in enumerate(waiting) if index not in started]
        if not running:
            if waiting:
                raise ValueError(f"{waiting[0].name} needs {waiting[0].num_gpus} GPUs, the host has {gpu_count}")
            break
        now, _, gpus = heapq.heappop(running)
        free = sorted(free + list(gpus))
    return placements


def makespan(placements: list[Placement]) -> float:
    return max((p.end_s for p in placements), default=0.0) - min((p.start_s for p in placements), default=0.0)


def lower_bound(jobs: list[tuple[int, float]], gpu_count: int) -> float:
    """No schedule of these (GPUs, seconds) jobs on `gpu_count` GPUs ends sooner.

    The largest of: the longest job; all work spread evenly; and for each k, the jobs wider than
    gpu_count / (k + 1), of which at most k fit at once.
    """
    if not jobs:
        return 0.0
    bounds = [max(seconds for _, seconds in jobs), sum(gpus * seconds for gpus, seconds in jobs) / gpu_count]
    for k in range(1, gpu_count):
        bounds.append(sum(seconds for gpus, seconds in jobs if gpus * (k + 1) > gpu_count) / k)
    return max(bounds)


def busiest_gpu_s(placements: list[Placement]) -> float:
    """The most seconds any one GPU was held."""
    per_gpu: dict[int, float] = {}
    for placement in placements:
        for gpu in placement.gpus:
            per_gpu[gpu] = per_gpu.get(gpu, 0.0) + placement.end_s - placement.start_s
    return max(per_gpu.values(), default=0.0)
