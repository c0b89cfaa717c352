"""sglang's perf-dump schema: parsing, atomic writes, and late files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from diffbench import perf_dump
from diffbench.errors import BadOutput

OLD_DUMP = {"timestamp": 1.0, "request_id": "r", "commit_hash": "abc", "tag": "server_perf_dump",
            "total_duration_ms": 4200.5, "steps": [{"name": "DenoisingStage", "duration_ms": 4000.0}]}


def test_older_dumps_without_steps_or_memory_parse() -> None:
    dump = perf_dump.parse(OLD_DUMP)
    assert (dump.total_ms, dump.stage_ms, dump.denoise_step_ms, dump.peak_reserved_mb) == (
        4200.5, {"DenoisingStage": 4000.0}, (), None)


@pytest.mark.parametrize("broken", [{}, {"total_duration_ms": 1, "steps": [{"name": "x"}]},
                                    {"total_duration_ms": "fast", "steps": []}])
def test_schema_violations_are_bad_output(broken: dict) -> None:
    with pytest.raises(BadOutput, match="perf dump does not follow"):
        perf_dump.parse(broken)


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "dumps" / "d.json"
    perf_dump.write_atomic(target, OLD_DUMP)
    assert [p.name for p in target.parent.iterdir()] == ["d.json"]
    assert perf_dump.read(target, 0).total_ms == 4200.5


def test_read_waits_for_a_late_or_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "d.json"
    target.write_text('{"total_duration_ms": 1')  # a non-atomic writer caught mid-write
    timer = threading.Timer(0.2, perf_dump.write_atomic, (target, OLD_DUMP))
    timer.start()
    assert perf_dump.read(target, 5).total_ms == 4200.5
    timer.join()
    assert perf_dump.read(tmp_path / "never.json", 0.1) is None
