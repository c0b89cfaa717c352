"""`diffbench demo`: the reference engine on the tiny models, through the real adapter code."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from diffbench import media
from diffbench.config import load_matrix
from diffbench.engines import ENGINES, ServerSpec
from diffbench.launcher import Server, free_port

TINY_MODELS = {"tiny-flux": "flux", "tiny-wan": "wan"}


def prepare(workdir: Path) -> Path:
    """Build the tiny models (once) and place the demo matrix next to them; return its path."""
    from diffbench.reference import tiny_models  # noqa: PLC0415 - torch is only needed here

    for name, arch in TINY_MODELS.items():
        if not (workdir / "models" / name / "model_index.json").exists():
            print(f"building tiny {arch} model in {workdir / 'models' / name}")
            tiny_models.build(arch, workdir / "models" / name)  # type: ignore[arg-type]
    config = workdir / "demo.yaml"
    with resources.as_file(resources.files("diffbench.defaults") / "demo.yaml") as source:
        shutil.copyfile(source, config)
    return config


def run(workdir: Path) -> None:
    """Serve each demo case with the reference engine and print one sample of it."""
    matrix = load_matrix(prepare(workdir))
    for pair in matrix.pairs:
        engine = ENGINES[pair.engine]()
        spec = ServerSpec(pair, "127.0.0.1", free_port(engine.side_port_offsets), pair.model)
        image = media.input_image(matrix.matrix.test_image_url, workdir / "cache") if pair.case.needs_image else None
        with Server.start(engine, spec, workdir / "runs" / pair.case.id / pair.framework) as server:
            ready_s = server.wait_ready()
            sample = engine.with_perf_dump(server.generate(image))
        stages = ", ".join(f"{name} {ms:.1f} ms" for name, ms in sample.stage_ms.items())
        shape = f"{sample.width}x{sample.height}" + (f"x{sample.num_frames}f" if pair.case.is_video else "")
        print(f"{pair.case.id} on {pair.framework}: ready in {ready_s:.1f} s, output {shape}")
        print(f"  client latency {sample.client_latency_s * 1000:.1f} ms, "
              f"server latency {sample.server_latency_s * 1000:.1f} ms ({sample.server_latency_source})")
        print(f"  stages: {stages}; {len(sample.denoise_step_ms)} denoise steps")
