"""Run with an engine's own Python: checks request bodies against its request models, writes a perf dump.

Usage: `<python> contract_probe.py requests sglang|vllm-omni < bodies.json` prints, per body, the
problems its request model finds ([] when none); `<python> contract_probe.py perf-dump PATH` writes a
dump with sglang's own PerformanceLogger. Never imported by the tests: it runs in the engine's venv.
"""

import json
import os
import sys


def request_models(framework: str) -> dict:
    if framework == "sglang":
        from sglang.multimodal_gen.runtime.entrypoints.openai import protocol

        return {"image": protocol.ImageGenerationsRequest, "video": protocol.VideoGenerationsRequest}
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm_omni.entrypoints.openai.protocol.images import ImageGenerationRequest
    from vllm_omni.entrypoints.openai.protocol.videos import VideoGenerationRequest

    return {"image": ImageGenerationRequest, "video": VideoGenerationRequest}


def check_requests(framework: str) -> None:
    import pydantic

    models = request_models(framework)
    answers = []
    for kind, body in json.load(sys.stdin):
        model = models[kind]
        problems = [f"{name}: not a field of {model.__name__}" for name in sorted(set(body) - set(model.model_fields))]
        try:
            model.model_validate(body)
        except pydantic.ValidationError as exc:
            problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        answers.append(problems)
    print(json.dumps(answers))


def write_perf_dump(path: str) -> None:
    from sglang.multimodal_gen.runtime.utils.perf_logger import MemorySnapshot, PerformanceLogger, RequestMetrics

    metrics = RequestMetrics("req-contract")
    metrics.record_stage("TextEncodingStage", 0.012)
    metrics.record_stage("DenoisingStage", 0.5)
    for seconds in (0.26, 0.24):
        metrics.record_step(seconds)
    metrics.record_memory_snapshot("after_DenoisingStage", MemorySnapshot(100.0, 200.0, 150.0, 300.0))
    metrics.total_duration_ms = 530.0
    PerformanceLogger.dump_benchmark_report(path, metrics, meta={"model": "tiny"}, tag="server_perf_dump")


if __name__ == "__main__":
    if sys.argv[1] == "requests":
        check_requests(sys.argv[2])
    else:
        write_perf_dump(sys.argv[2])
