"""Tiny models: built offline, loadable by diffusers, same seed same weights."""

from __future__ import annotations

from pathlib import Path

from diffusers import DiffusionPipeline, FluxPipeline, WanPipeline

from diffbench.reference.tiny_models import build


def test_both_load_with_from_pretrained(tiny_models: dict[str, Path]) -> None:
    assert isinstance(DiffusionPipeline.from_pretrained(tiny_models["flux"]), FluxPipeline)
    assert isinstance(DiffusionPipeline.from_pretrained(tiny_models["wan"]), WanPipeline)


def test_same_seed_same_weights(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    again = build("flux", tmp_path / "flux")
    for weights in (tiny_models["flux"] / "transformer").glob("*.safetensors"):
        assert (again / "transformer" / weights.name).read_bytes() == weights.read_bytes()
