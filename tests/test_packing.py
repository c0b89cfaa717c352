"""Packing servers onto a host's GPUs: the order, checked against the lower bound, and the real pool."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from diffbench.config import load_matrix
from diffbench.gpus import GpuPool
from diffbench.groups import server_groups
from diffbench.packing import Job, lower_bound, makespan, ordered, simulate

SGLANG = Path(__file__).parent / "fixtures" / "sglang"
LOAD_S = 90.0  # download and load-to-ready of one server
REQUESTS = 4  # one warm-up, three measured


def sglang_latencies() -> dict[str, float]:
    """Each case's latest client latency in sglang's own nightly results."""
    latencies: dict[str, float] = {}
    files = [json.loads(path.read_text()) for path in (SGLANG / "results").glob("*.json")]
    for night in sorted(files, key=lambda document: document["timestamp"]):
        latencies |= {r["case_id"]: r["latency_s"] for r in night["results"] if r.get("latency_s")}
    return latencies


def night(config: str, history: bool, seed: int = 0) -> list[Job]:
    """sglang's case mix as servers; durations from its latencies, estimates from a noisy earlier night."""
    latencies, noise = sglang_latencies(), random.Random(seed)
    jobs = []
    for group in server_groups(list(load_matrix(SGLANG / "configs" / config).pairs)):
        seconds = LOAD_S + sum(REQUESTS * latencies[p.case.id] for p in group.pairs if p.case.id in latencies)
        jobs.append(Job(group.label, group.num_gpus, seconds * noise.uniform(0.9, 1.1) if history else None, seconds))
    return jobs


LATEST = "comparison_configs_sglang_03635624_latest-stored.json"
OTHERS = ["comparison_configs_fork-trillion-labs_5ff6d5af_9cases_vllm-omni-disabled.json",
          "comparison_configs_sglang_8ef18e0a_cross-framework_vllm-omni_lightx2v_throughput.json"]


def best_of_random_orders(jobs: list[Job], gpu_count: int, tries: int = 1500) -> float:
    """The shortest makespan the same rule reaches over random orders: near the best any order can do."""
    shuffle, best = random.Random(7), float("inf")
    for _ in range(tries):
        ranks = list(range(len(jobs)))
        shuffle.shuffle(ranks)
        relabelled = [replace(job, estimate_s=float(rank)) for job, rank in zip(jobs, ranks, strict=True)]
        best = min(best, makespan(simulate(relabelled, gpu_count)))
    return best


@pytest.mark.parametrize("gpu_count", [4, 8])
def test_sglangs_nightly_mix_ends_within_a_tenth_of_the_lower_bound(gpu_count: int) -> None:
    assert {job.num_gpus for job in night(LATEST, history=False)} == {1, 2, 4}
    for seed in range(5):
        jobs = night(LATEST, history=True, seed=seed)
        placements = simulate(jobs, gpu_count)
        assert sorted(p.job.name for p in placements) == sorted(job.name for job in jobs)
        bound = lower_bound([(job.num_gpus, job.duration_s) for job in jobs], gpu_count)
        assert makespan(placements) <= 1.1 * bound
        assert makespan(placements) <= makespan(simulate(night(LATEST, history=False), gpu_count))


@pytest.mark.parametrize("gpu_count", [4, 8])
@pytest.mark.parametrize("config", OTHERS)
def test_other_mixes_end_within_a_tenth_of_the_bound_or_as_soon_as_any_order(config: str, gpu_count: int) -> None:
    jobs = night(config, history=True)
    ours = makespan(simulate(jobs, gpu_count))
    bound = lower_bound([(job.num_gpus, job.duration_s) for job in jobs], gpu_count)
    if ours > 1.1 * bound:
        # Two 900 s 4-GPU servers beside 900 s 1-GPU ones leave GPUs idle whatever the order
        # (8ef18e0a on 8 GPUs: 1.3x the bound at best): then no order found may do better.
        best = best_of_random_orders(jobs, gpu_count)
        assert best > 1.1 * bound
        assert ours <= 1.02 * best


def test_no_gpu_is_ever_held_twice_in_a_packed_night() -> None:
    placements = simulate(night("comparison_configs_sglang_03635624_latest-stored.json", history=True), 8)
    for gpu in range(8):
        spans = sorted((p.start_s, p.end_s) for p in placements if gpu in p.gpus)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))
    assert all(len(p.gpus) == p.job.num_gpus for p in placements)


def test_order_is_unmeasured_first_then_longest_then_widest() -> None:
    jobs = [Job("short", 1, 10.0), Job("long", 1, 500.0), Job("new narrow", 1, None), Job("new wide", 4, None),
            Job("long wide", 2, 500.0)]
    assert [job.name for job in ordered(jobs)] == ["new wide", "new narrow", "long wide", "long", "short"]


def test_lower_bound_counts_wide_jobs_that_cannot_run_together() -> None:
    # Three 4-GPU jobs on 8 GPUs: at most two at once, so 1.5 of them end to end at best.
    assert lower_bound([(4, 100.0)] * 3, 8) == 150.0
    assert lower_bound([(1, 100.0)] * 8, 4) == 200.0
    assert lower_bound([(2, 300.0), (1, 10.0)], 8) == 300.0
    with pytest.raises(ValueError, match="needs 4 GPUs, the host has 2"):
        simulate([Job("wide", 4, None, 1.0)], 2)


def hold_in_thread(pool: GpuPool, name: str, count: int, estimate: float | None, seconds: float,
                   log: list[tuple[str, str, tuple[int, ...]]]) -> threading.Thread:
    def hold() -> None:
        with pool.take(count, estimate, name) as gpus:
            log.append(("in", name, gpus))
            time.sleep(seconds)
            log.append(("out", name, gpus))

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


def test_the_pool_hands_out_in_priority_order_once_gpus_come_free(tmp_path: Path) -> None:
    pool = GpuPool((0, 1), tmp_path)
    log: list[tuple[str, str, tuple[int, ...]]] = []
    first = hold_in_thread(pool, "first", 2, None, 0.5, log)
    time.sleep(0.1)
    # Arriving in the wrong order: the short one first, the wide one last.
    threads = [hold_in_thread(pool, name, count, estimate, 0.3, log)
               for name, count, estimate in (("short", 1, 10.0), ("long", 1, 50.0), ("wide", 2, 100.0))]
    for thread in [first, *threads]:
        thread.join(timeout=10)
    starts = [name for kind, name, _ in log if kind == "in"]
    assert starts[:2] == ["first", "wide"] and set(starts[2:]) == {"short", "long"}
    assert log.index(("out", "first", (0, 1))) < log.index(("in", "wide", (0, 1))) < log.index(("out", "wide", (0, 1)))
    assert [hold.label for hold in pool.holds][:2] == ["first", "wide"]
    assert all(hold.released_at > hold.taken_at for hold in pool.holds)


def test_a_narrow_server_fills_gpus_a_wide_one_waits_beside(tmp_path: Path) -> None:
    pool = GpuPool((0, 1), tmp_path)
    log: list[tuple[str, str, tuple[int, ...]]] = []
    first = hold_in_thread(pool, "first", 1, None, 0.6, log)
    time.sleep(0.1)
    wide = hold_in_thread(pool, "wide", 2, 100.0, 0.1, log)
    time.sleep(0.1)
    narrow = hold_in_thread(pool, "narrow", 1, 1.0, 0.1, log)
    for thread in (first, wide, narrow):
        thread.join(timeout=10)
    assert [(kind, name) for kind, name, _ in log] == [
        ("in", "first"), ("in", "narrow"), ("out", "narrow"), ("out", "first"), ("in", "wide"), ("out", "wide")]
