"""TEST-ONLY CPU platform for vllm-omni 0.30.0, which ships none.

Without a platform vllm-omni falls back to ``UnspecifiedOmniPlatform`` and dies in ``set_device``
("Orchestrator initialization failed"). vllm-omni loads this through its entry-point group
``vllm_omni.platform_plugins``; exactly one active out-of-tree plugin wins over the built-in platforms.
This module must stay import-light: vllm-omni imports it while choosing a platform.
"""

from __future__ import annotations

import os


def detect() -> str | None:
    """The platform class's qualified name when VLLM_TARGET_DEVICE=cpu, else None (plugin stays inactive)."""
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu":
        return "omni_cpu_plugin.platform.CpuOmniPlatform"
    return None
