"""Grouping (case, framework) pairs that can share one server, largest first."""

from __future__ import annotations

import json
from dataclasses import dataclass

from diffbench.cases import Pair
from diffbench.engines import ENGINES
from diffbench.results import METHODOLOGY, series_key


@dataclass(frozen=True)
class ServerGroup:
    """Pairs served by one server: same engine, model, revision, GPUs, flags, environment and launcher."""

    pairs: tuple[Pair, ...]

    @property
    def first(self) -> Pair:
        return self.pairs[0]

    @property
    def num_gpus(self) -> int:
        return self.first.num_gpus

    def series_keys(self, hardware: str) -> list[str]:
        return [series_key(p.config_hash, p.engine, hardware, METHODOLOGY) for p in self.pairs]

    def estimate_s(self, case_seconds: dict[str, float], hardware: str) -> float | None:
        """Its cases' last measured seconds on this hardware, summed; None if any was never measured."""
        seconds = [case_seconds.get(key) for key in self.series_keys(hardware)]
        return None if None in seconds else sum(s for s in seconds if s is not None)

    @property
    def label(self) -> str:
        cases = ", ".join(p.case.id for p in self.pairs)
        return f"{self.first.framework} [{cases}]"


def server_key(pair: Pair) -> str:
    options = pair.options
    where = options.model_dump(mode="json", include={"launcher", "python", "pip", *options.build_fields})
    alone = None if ENGINES[pair.engine].shares_server else pair.case.id
    return json.dumps([pair.framework, pair.engine, pair.model, pair.case.revision, pair.num_gpus,
                       options.serve_args, options.extra_env, where, alone], sort_keys=True)


def server_groups(pairs: list[Pair]) -> list[ServerGroup]:
    """One group per distinct server, in file order within a group; groups needing most GPUs first.

    Starting the widest servers first lets narrow ones fill the GPUs left beside them.
    """
    grouped: dict[str, list[Pair]] = {}
    for pair in pairs:
        grouped.setdefault(server_key(pair), []).append(pair)
    groups = [ServerGroup(tuple(members)) for members in grouped.values()]
    return sorted(groups, key=lambda group: -group.num_gpus)
