"""Engine adapters by framework name; adding an engine is one module and one line here."""

from __future__ import annotations

from diffbench.engines.base import Engine, ServerSpec
from diffbench.engines.comfyui import ComfyUIEngine
from diffbench.engines.lightx2v import LightX2VEngine
from diffbench.engines.reference import ReferenceEngine
from diffbench.engines.sglang import SGLangEngine
from diffbench.engines.vllm_omni import VllmOmniEngine

ENGINES: dict[str, type[Engine]] = {
    SGLangEngine.name: SGLangEngine,
    VllmOmniEngine.name: VllmOmniEngine,
    ReferenceEngine.name: ReferenceEngine,
    ComfyUIEngine.name: ComfyUIEngine,
    LightX2VEngine.name: LightX2VEngine,
}

__all__ = ["ENGINES", "Engine", "ServerSpec"]
