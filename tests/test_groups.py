"""Server sharing and GPU hand-out."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from diffbench.errors import ConfigError
from diffbench.gpus import GpuPool, detect
from diffbench.groups import server_groups

from conftest import make_pair


def test_cases_with_the_same_server_share_it_and_wide_servers_go_first() -> None:
    small = make_pair(id="flux_512", width=512, height=512)
    large = make_pair(id="flux_1024", width=1024, height=1024)
    other_flags = make_pair(id="flux_compiled", frameworks={"sglang": {"serve_args": "--enable-torch-compile"}})
    wide = make_pair(id="wan", model="org/wan", num_gpus=4, frameworks={"sglang": {"serve_args": "--tp-size 4"}})
    groups = server_groups([small, large, other_flags, wide])
    assert [[p.case.id for p in g.pairs] for g in groups] == [["wan"], ["flux_512", "flux_1024"], ["flux_compiled"]]
    assert groups[1].label == "sglang [flux_512, flux_1024]"


def test_pool_hands_out_distinct_gpus_and_waits_for_free_ones(tmp_path: Path) -> None:
    pool = GpuPool((0, 1, 2, 3), tmp_path)
    seen: list[tuple[int, ...]] = []
    with pool.take(2) as first, pool.take(2) as second:
        assert sorted(first + second) == [0, 1, 2, 3]
        # Another flow run on this host: its own pool object, the same lock files.
        waiter = threading.Thread(target=lambda: seen.append(GpuPool((0, 1, 2, 3), tmp_path).take(1).__enter__()))
        waiter.start()
        time.sleep(0.8)
        assert seen == []  # every GPU is held
    waiter.join(timeout=5)
    assert len(seen) == 1 and len(seen[0]) == 1
    assert "needs 8 GPUs, this host offers 4" in str(pool.refusal(8))
    with pytest.raises(ConfigError, match="needs 8 GPUs, this host offers 4"):
        pool.take(8).__enter__()


def test_without_gpus_servers_run_one_at_a_time(tmp_path: Path) -> None:
    pool = GpuPool((), tmp_path)
    order: list[str] = []

    def hold(name: str) -> None:
        with pool.take(1):
            order.append(f"{name} in")
            time.sleep(0.05)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_detect_without_nvml_is_cpu() -> None:
    hardware = detect()
    assert hardware.gpu_ids == () and hardware.gpu_model == "cpu"
    assert detect([2, 3]).gpu_ids == (2, 3)
