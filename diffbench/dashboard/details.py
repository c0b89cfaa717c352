"""What a run stored beyond latency: the details table, outputs across engines, throughput levels."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from diffbench import media

# Below this picture distance (mean grey difference of the thumbnails) two outputs are the same picture:
# different engines' kernels round differently, a different picture differs by far more.
SAME_PICTURE = 0.02

DETAIL_COLUMNS = ["case", "framework", "client median", "server median", "per step", "peak memory",
                  "energy / output", "cost", "download", "ready", "first request", "memory back to idle", "outputs",
                  "notes"]


def present(value: object) -> bool:
    """Whether a frame cell holds a value: None and NaN both read as missing."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def number(value: Any, unit: str = "") -> str:
    """`value` with as many decimals as its size needs, then `unit`; — when missing."""
    if not present(value):
        return "—"
    size = abs(float(value))
    digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 else 3
    return f"{float(value):,.{digits}f} {unit}".rstrip()


def _latency(value: Any) -> str:
    """Seconds as the latency table writes them."""
    return f"{value:.3f} s" if present(value) else "—"


def _text(value: object) -> str:
    """Free text inside a table cell, where a bar would end the cell."""
    return str(value).replace("|", "\\|")


def _telemetry(row: pd.Series) -> dict[str, Any]:
    return row["telemetry"] if isinstance(row["telemetry"], dict) else {}


def _cost(row: pd.Series) -> str:
    if present(row["seconds_per_video_second"]):
        return number(row["seconds_per_video_second"], "s/video-s")
    return number(row["ms_per_megapixel_step"], "ms/MP·step")


def _outputs(row: pd.Series) -> str:
    identical, spread = row["identical_outputs"], row["output_spread"]
    if present(identical) and identical:
        return "identical"
    if present(spread):
        return f"differ by {spread * 100:.1f} %"
    return "differ" if present(identical) else "—"


def _notes(row: pd.Series) -> str:
    telemetry = _telemetry(row)
    notes = []
    if telemetry and not telemetry.get("available"):
        notes.append(f"GPU telemetry absent: {_text(telemetry.get('reason') or 'no reason given')}")
    if throttled := telemetry.get("throttled_requests"):
        reasons = ", ".join(telemetry.get("throttle_reasons") or [])
        notes.append(f"throttled during requests {', '.join(str(i + 1) for i in throttled)}"
                     + (f" ({_text(reasons)})" if reasons else ""))
    if present(row["suspect"]):
        notes.append(f"⚠ suspect: {_text(row['suspect'])}")
    if present(row.get("packages_before")):
        notes.append(f"engine environment changed since the last result: packages {row['packages_before']} → "
                     f"{row['engine_packages']}")
    return "; ".join(notes) or "—"


def _ordered(run: pd.DataFrame, frameworks: list[str]) -> list[pd.Series]:
    """The run's rows, case by case in run order, each case's frameworks in `frameworks` order."""
    cases = list(dict.fromkeys(run["case_id"]))
    rows = [row for _, row in run.iterrows()]
    return sorted(rows, key=lambda row: (cases.index(row["case_id"]), frameworks.index(row["framework"])))


def details(run: pd.DataFrame, frameworks: list[str]) -> list[str]:
    """The details table of the run's measured results, with its legend; nothing when none was measured."""
    measured = _ordered(run[run["status"] == "ok"], frameworks)
    if not measured:
        return []
    lines = ["## Details of this run", "", "| " + " | ".join(DETAIL_COLUMNS) + " |", "|---" * len(DETAIL_COLUMNS) + "|"]
    for row in measured:
        cells = [row["case_id"], row["framework"], _latency(row["median_s"]), _latency(row["server_median_s"]),
                 number(row["step_median_ms"], "ms"), number(_telemetry(row).get("peak_memory_mb"), "MiB"),
                 number(row["joules_per_output"], "J"),
                 _cost(row), number(row["download_s"], "s"), number(row["ready_s"], "s"),
                 number(row["first_request_latency_s"], "s"), number(row["memory_release_s"], "s"), _outputs(row),
                 _notes(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return [
        *lines,
        "",
        "Client and server medians of the measured requests; per step: the server's median denoising step. Peak "
        "memory: the most GPU memory in use over the "
        "case's GPUs, from GPU telemetry; energy per output over the measured requests. Cost: client milliseconds "
        "per megapixel per denoising step (of every frame, for a video), or client seconds per second of video "
        "made. Cold start: the model's download, the server's launch until ready, and the first request's latency. "
        "Memory back to idle: seconds from stopping the server until its GPUs' memory was idle again. Outputs: "
        "whether the measured requests (one seed) gave identical bytes, else the largest picture distance of one "
        "from the first. Notes number the measured requests from 1.",
        "",
    ]


def across_engines(run: pd.DataFrame, frameworks: list[str]) -> list[str]:
    """Per case, the picture distance of each framework's first output to the first framework's that has one."""
    lines = []
    for case_id in dict.fromkeys(run["case_id"]):
        thumbnails = {row["framework"]: row["thumbnail"] for row in _ordered(run[run["case_id"] == case_id], frameworks)
                      if present(row["thumbnail"])}
        if len(thumbnails) < 2:
            continue
        base, *others = thumbnails
        parts = []
        for framework in others:
            distance = media.distance(thumbnails[base], thumbnails[framework])
            verdict = "same picture" if distance < SAME_PICTURE else "different picture"
            parts.append(f"{framework} {distance * 100:.1f} % ({verdict})")
        lines.append(f"- **{case_id}** against {base}: " + ", ".join(parts))
    if not lines:
        return []
    return [
        "Outputs across engines: the picture distance of each framework's first output to the baseline's (mean grey "
        f"difference of {media.THUMB_SIDE}×{media.THUMB_SIDE} thumbnails; below {SAME_PICTURE * 100:g} % is the "
        "same picture).",
        "",
        *lines,
        "",
    ]


def throughputs(rows: pd.DataFrame, frameworks: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each framework's throughput levels among `rows`, by concurrency; frameworks without any left out."""
    return {row["framework"]: sorted(row["throughput"], key=lambda level: level["concurrency"])
            for row in _ordered(rows, frameworks) if isinstance(row["throughput"], list) and row["throughput"]}


def throughput_table(levels: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One table row per framework and concurrency level."""
    lines = ["| framework | concurrency | req/s | p50 | p90 | p99 | failed |", "|---|---|---|---|---|---|---|"]
    for framework, points in levels.items():
        for p in points:
            latencies = " | ".join(number(p[key], "s") for key in ("p50_s", "p90_s", "p99_s"))
            lines.append(f"| {framework} | {p['concurrency']} | {number(p['requests_per_s'])} | {latencies} "
                         f"| {p['failed']} of {p['requests']} |")
    return lines
