"""Level changes in each series' nightly history: regressions, improvements and breaks.

The method is a windowed rank test with confirmation, robust to the noise sglang's 5 % rule fell for:
- a point is compared with the median and the median absolute deviation (MAD) of the runs before
  it in its series (up to `WINDOW`), so one spike in that window neither hides nor makes a change;
- a change needs `CONFIRM` consecutive runs beyond max(`MIN_STEP`, `SPREADS` × MAD) on the same
  side: a single-run spike never counts, a level that stays does after `CONFIRM` runs;
- a new level that the series has already held for a fair share of its earlier runs is a known
  second mode (a bimodal case flipping between server launches), not a change;
- every sample of those runs enters a Mann-Whitney rank test whose one-sided p-value gives the
  confidence;
- after a change, the new level is the reference: the regressed nights never become the
  baseline of the old one, and they are not compared with it again. A new level that moves on
  before it has `MIN_BEFORE` runs counts as a second change only when the runs after it lie
  beyond every earlier run of the window.
A change of series key (case config, engine, hardware or methodology) is a `break`: nothing is
compared across it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

WINDOW = 10
CONFIRM = 2
# The first runs of a series (or of a new level) set its level; nothing is compared with fewer.
MIN_BEFORE = 5
MIN_STEP = 0.05
# The MAD is scaled to a standard deviation (1.4826), so this is the usual 3-sigma outlier bound (Hampel's).
SPREADS = 3.0
MIN_CONFIDENCE = 0.95
# A level held by this share of the series' last `MODE_MEMORY` runs is one of its modes, not news.
MODE_MEMORY = 30
KNOWN_MODE_SHARE = 0.2
KNOWN_MODE_TOLERANCE = 0.03

Kind = Literal["regression", "improvement", "break"]


@dataclass(frozen=True)
class Point:
    """One nightly result of a series: its run, when, which engine build, and its latencies."""

    run_id: str
    started_at: datetime
    series_key: str
    samples: tuple[float, ...]
    engine_version: str | None = None

    @property
    def level(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Change:
    """A level change of one series, dated by the first run after it."""

    case_id: str
    framework: str
    metric: str
    date: str
    run_id: str
    kind: Kind
    ratio: float
    before: float
    after: float
    confidence: float
    engine_version_before: str | None
    engine_version_after: str | None
    runs_to_detect: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mad(values: Sequence[float]) -> float:
    middle = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - middle) for v in values)


def rank_confidence(before: Sequence[float], after: Sequence[float], slower: bool) -> float:
    """1 − the one-sided Mann-Whitney p-value that `after` is shifted the way it seems (normal approximation)."""
    n1, n2 = len(before), len(after)
    u = sum((a > b) + 0.5 * (a == b) for a in after for b in before)
    if not slower:
        u = n1 * n2 - u
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    z = (u - n1 * n2 / 2 - 0.5) / sd
    return 1 - 0.5 * math.erfc(z / math.sqrt(2))


def _beyond(point: Point, level: float, threshold: float) -> int:
    """+1 above the band around `level`, −1 below it, 0 inside."""
    if point.level > level + threshold:
        return 1
    if point.level < level - threshold:
        return -1
    return 0


def _in_between(points: Sequence[Point], index: int, level: float, threshold: float) -> bool:
    """Whether run `index` is nearer the old level than the level of the runs after it, which confirm a change."""
    following = points[index + 1:index + 1 + CONFIRM]
    if len(following) < CONFIRM or len({_beyond(p, level, threshold) for p in following}) != 1:
        return False
    new_level = statistics.median(p.level for p in following)
    return abs(points[index].level - level) < abs(points[index].level - new_level) and \
        _beyond(following[0], level, threshold) != 0


def _known_mode(history: Sequence[Point], level: float) -> bool:
    near = [p for p in history if abs(p.level / level - 1) <= KNOWN_MODE_TOLERANCE]
    return len(history) >= MIN_BEFORE and len(near) >= KNOWN_MODE_SHARE * len(history)


def _second_step(points: Sequence[Point], start: int, index: int) -> tuple[Point, Point, float, float, float] | None:
    """A level that moves on again before it has `MIN_BEFORE` runs: a change only when the runs after it
    lie beyond every earlier run of the window, the previous level's included, and rank so."""
    recent, earlier = points[start:index], points[max(0, index - WINDOW):index]
    after = points[index:index + CONFIRM]
    level = statistics.median(p.level for p in recent)
    slower = all(a.level > max(p.level for p in earlier) * (1 + MIN_STEP) for a in after)
    faster = all(a.level < min(p.level for p in earlier) * (1 - MIN_STEP) for a in after)
    if not (slower or faster):
        return None
    confidence = rank_confidence([s for p in earlier for s in p.samples], [s for p in after for s in p.samples],
                                 slower=slower)
    new_level = statistics.median(p.level for p in after)
    return (recent[-1], after[0], level, new_level, confidence) if confidence >= MIN_CONFIDENCE else None


def _segment_changes(points: Sequence[Point]) -> Iterable[tuple[Point, Point, float, float, float]]:
    """(last run before, first run after, level before, level after, confidence) per change of one segment."""
    start, index = 0, MIN_BEFORE
    while index + CONFIRM <= len(points):
        before = points[max(start, index - WINDOW):index]
        if len(before) < MIN_BEFORE:
            if start > 0 and len(before) >= CONFIRM and (step := _second_step(points, start, index)):
                yield step
                start, index = index, index + CONFIRM
            else:
                index += 1
            continue
        levels = [p.level for p in before]
        level = statistics.median(levels)
        threshold = max(MIN_STEP * level, SPREADS * _mad(levels))
        after = points[index:index + CONFIRM]
        sides = {_beyond(p, level, threshold) for p in after}
        new_level = statistics.median(p.level for p in after)
        if len(sides) == 1 and 0 not in sides and _in_between(points, index, level, threshold):
            index += 1  # a first run half-way to the new level: the change starts with the next one
            continue
        # Ranked against the runs of the level only: a spike in the window says nothing about it.
        level_runs = [p for p in before if _beyond(p, level, threshold) == 0]
        confidence = rank_confidence([s for p in level_runs for s in p.samples],
                                     [s for p in after for s in p.samples], slower=sides == {1})
        if (len(sides) == 1 and 0 not in sides and confidence >= MIN_CONFIDENCE
                and not _known_mode(points[max(0, index - MODE_MEMORY):index], new_level)):
            yield before[-1], after[0], level, new_level, confidence
            start, index = index, index + CONFIRM
        else:
            index += 1


def detect(case_id: str, framework: str, points: Sequence[Point], metric: str = "client_latency_s") -> list[Change]:
    """Every change of one (case, framework)'s nightly points, in time order; breaks where its key changes."""
    changes: list[Change] = []
    segments: list[list[Point]] = []
    for point in points:
        if segments and segments[-1][-1].series_key == point.series_key:
            segments[-1].append(point)
        else:
            segments.append([point])
    for number, segment in enumerate(segments):
        if number > 0:
            previous = segments[number - 1]
            before = statistics.median(p.level for p in previous[-WINDOW:])
            after = statistics.median(p.level for p in segment[:CONFIRM])
            changes.append(Change(case_id, framework, metric, f"{segment[0].started_at:%Y-%m-%d}", segment[0].run_id,
                                  "break", after / before, before, after, 1.0, previous[-1].engine_version,
                                  segment[0].engine_version, 0))
        for last, first, before, after, confidence in _segment_changes(segment):
            changes.append(Change(case_id, framework, metric, f"{first.started_at:%Y-%m-%d}", first.run_id,
                                  "regression" if after > before else "improvement", after / before, before, after,
                                  confidence, last.engine_version, first.engine_version, CONFIRM))
    return changes


def scan(points: dict[tuple[str, str], list[Point]]) -> list[Change]:
    """Every change of every (case, framework) series, by case, framework and date."""
    return [change for (case_id, framework), series in sorted(points.items())
            for change in detect(case_id, framework, series)]
