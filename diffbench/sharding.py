"""Splitting a run's pairs into shards for several GPU hosts: one model's cases stay together."""

from __future__ import annotations

from diffbench.cases import Pair


def weight(pairs: list[Pair]) -> float:
    """A size for balancing: GPU-minutes the pairs may hold, by their case budgets."""
    return sum(p.num_gpus * p.deadlines.case_minutes for p in pairs)


def shard_pairs(pairs: list[Pair], shards: int) -> list[list[Pair]]:
    """At most `shards` non-empty shards; each model's pairs in one shard, the largest placed first.

    Keeping a model's cases together lets a host download it once and share its servers.
    """
    by_model: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_model.setdefault(pair.model, []).append(pair)
    buckets: list[list[Pair]] = [[] for _ in range(max(shards, 1))]
    largest_gpus_first = sorted(by_model.values(), key=lambda ps: (-max(p.num_gpus for p in ps), -weight(ps)))
    for model_pairs in largest_gpus_first:
        min(buckets, key=weight).extend(model_pairs)
    return [bucket for bucket in buckets if bucket]
