"""The change detector on sglang's labelled history, against sglang's 5 % rule on the same data.

Prints, for the history folder given (raw/*.json, labels.csv, flags_5pct_rule.csv; default: the training
part 2026-03-19 → 2026-06-30, whose result files diffbench ships for its demo and whose labels are in
tests/fixtures/sglang/history):
- labelled persistent shifts of 5 % or more found (same case, same direction, within 3 days);
- flags on noise (changes matching no label), and the 5 % rule's flags on the same data;
- detection delay, in runs after the change;
- the time to scan a year of 16 cases × 3 frameworks × 3 samples per night from a SQLite file.

Run: .venv/bin/python benchmarks/detector.py [HISTORY_FOLDER]
"""

from __future__ import annotations

import csv
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from diffbench.demo import history_files
from diffbench.regressions import Change, scan
from diffbench.results import CaseResult, RunInfo
from diffbench.sglang_import import import_file
from diffbench.storage import store
from diffbench.storage.recorder import Recorder

LABELLED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sglang" / "history"
MATCH_DAYS = 3


def history_changes(files: list[Path], database: Path) -> list[Change]:
    engine = store.open_database(f"sqlite:///{database}")
    for path in files:
        import_file(engine, path)
    points = store.nightly_points(engine)
    engine.dispose()
    return scan(points)


def matches(change: Change, label: dict[str, str]) -> bool:
    days = abs((date.fromisoformat(change.date) - date.fromisoformat(label["date"])).days)
    same_way = (change.ratio > 1) == (float(label["ratio"]) > 1)
    return change.case_id == label["case_id"] and days <= MATCH_DAYS and same_way


def year_scan_s(folder: Path) -> tuple[float, int]:
    """Seconds to read and scan a year of 48 series (3 samples a night) from SQLite; and the changes found."""
    recorder = Recorder(f"sqlite:///{folder / 'year.db'}", folder / "spool")
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for night in range(365):
        run = RunInfo(id=f"n{night}", trigger="schedule", started_at=start + timedelta(days=night), host="h",
                      gpu_model="H100", driver="1", diffbench_version="0")
        recorder.open_run(run)
        results = []
        for case in range(16):
            for framework in ("sglang", "vllm-omni", "diffusers"):
                level = (1 + case) * (1.18 if framework == "sglang" and night >= 300 else 1.0)
                samples = [_sample(level * rng.gauss(1, 0.01)) for _ in range(3)]
                results.append(CaseResult(case_id=f"case{case}", framework=framework, engine=framework, status="ok",
                                          config_hash="c" * 16, methodology="m", hardware="H100", model="m",
                                          num_gpus=1, task="text-to-image", started_at=run.started_at,
                                          finished_at=run.started_at, samples=samples))
        recorder.record_all(run.id, results)
    began = time.perf_counter()
    points = store.nightly_points(recorder.engine())
    found = scan(points)
    seconds = time.perf_counter() - began
    recorder.close()
    return seconds, len(found)


def _sample(latency: float):  # noqa: ANN202 - a client.Sample
    from diffbench.client import Sample  # noqa: PLC0415

    return Sample(client_latency_s=latency, server_latency_s=None, server_latency_source="none", stage_ms={},
                  denoise_step_ms=(), peak_reserved_mb=None, output_sha256="", width=0, height=0, num_frames=0,
                  poll_bound_s=None)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else LABELLED
    files = sorted((folder / "raw").glob("*.json")) if len(sys.argv) > 1 else history_files()
    labels = list(csv.DictReader((folder / "labels.csv").open()))
    persistent = [row for row in labels if abs(float(row["ratio"]) - 1) >= 0.05]
    rule = list(csv.DictReader((folder / "flags_5pct_rule.csv").open()))
    with tempfile.TemporaryDirectory() as tmp:
        changes = history_changes(files, Path(tmp) / "history.db")
        scan_s, year_changes = year_scan_s(Path(tmp))
    level_changes = [c for c in changes if c.kind != "break"]
    found = [row for row in persistent if any(matches(c, row) for c in level_changes)]
    noise = [c for c in level_changes if not any(matches(c, row) for row in labels)]
    print(f"labelled shifts >= 5 % found: {len(found)} of {len(persistent)}")
    for row in persistent:
        if row not in found:
            print(f"  missed: {row['date']} {row['case_id']} x{row['ratio']} ({row['class']})")
    print(f"flags on noise: {len(noise)} (sglang's 5 % rule: {len(rule)} flags, "
          f"{sum(r['category'] == 'noise' for r in rule)} of them on noise)")
    for change in noise:
        print(f"  noise: {change.date} {change.case_id} x{change.ratio:.3f} confidence {change.confidence:.2f}")
    print(f"detection delay: {level_changes[0].runs_to_detect if level_changes else '-'} runs after the change")
    print(f"a year of 16 cases x 3 frameworks (17,520 results, 52,560 samples) read and scanned: {scan_s:.2f} s; "
          f"{year_changes} change(s) found (16 injected: sglang +18 % from night 300)")


if __name__ == "__main__":
    main()
