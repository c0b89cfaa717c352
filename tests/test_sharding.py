"""Splitting pairs into shards."""

from __future__ import annotations

from diffbench.sharding import shard_pairs

from conftest import make_pair


def test_one_models_pairs_stay_together_and_big_ones_go_first() -> None:
    flux_a = make_pair(id="flux_1024", model="org/flux")
    flux_b = make_pair(id="flux_512", model="org/flux")
    wan = make_pair(id="wan", model="org/wan", num_gpus=4, frameworks={"sglang": {"serve_args": "--tp-size 4"}})
    qwen = make_pair(id="qwen", model="org/qwen")
    shards = shard_pairs([flux_a, flux_b, wan, qwen], 2)
    assert [[p.case.id for p in shard] for shard in shards] == [["wan"], ["flux_1024", "flux_512", "qwen"]]


def test_no_empty_shards() -> None:
    pairs = [make_pair(id="a", model="org/a")]
    assert shard_pairs(pairs, 4) == [pairs]
    assert shard_pairs([], 3) == []
