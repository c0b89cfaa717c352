"""TEST-ONLY ``CpuOmniPlatform``: vllm's CpuPlatform plus what vllm-omni's diffusion worker asks of a device.

vllm-omni's OmniPlatform interface assumes an accelerator. On CPU: ``set_device`` is not implemented, and
torch.cpu has no memory-stat API, so vllm's ``Platform.__getattr__`` hands back None for
``reset_peak_memory_stats`` & co. and the startup dummy run fails with ``'NoneType' object is not callable``
(diffusion/worker/diffusion_model_runner.py). This class answers those calls with CPU-sized no-ops.
AR-stage hooks stay unimplemented: diffusion-only FLUX/Wan never call them. Tied to vllm-omni 0.30.0's
platform interface: keep vllm-omni pinned.
"""

from __future__ import annotations

from typing import Any

import psutil
import torch
from vllm.platforms.cpu import CpuPlatform
from vllm_omni.platforms.interface import OmniPlatform, OmniPlatformEnum


class CpuOmniPlatform(OmniPlatform, CpuPlatform):  # OmniPlatform first: its methods win in the MRO
    _omni_enum = OmniPlatformEnum.OOT
    device_type = "cpu"
    dispatch_key = "CPU"
    dist_backend = "gloo"

    def is_out_of_tree(self) -> bool:
        return True

    @classmethod
    def get_diffusion_attn_backend_cls(
        cls, selected_backend: Any, head_size: int, allow_trtllm_default: bool = True
    ) -> str:
        return "omni_cpu_plugin.attention.CpuSDPABackend"

    @classmethod
    def supports_torch_inductor(cls) -> bool:
        return False

    @classmethod
    def get_torch_device(cls, local_rank: int | None = None) -> torch.device:
        return torch.device("cpu")

    @classmethod
    def set_device(cls, device: Any) -> None:
        return None

    @classmethod
    def get_device_count(cls) -> int:
        return 1

    @classmethod
    def get_device_version(cls) -> str | None:
        return None

    @classmethod
    def synchronize(cls) -> None:
        return None

    @classmethod
    def get_free_memory(cls, device: Any = None) -> int:
        return psutil.virtual_memory().available

    @classmethod
    def get_device_memory(cls, device: Any = None) -> tuple[int, int]:
        vm = psutil.virtual_memory()
        return vm.available, vm.total

    @classmethod
    def memory_reserved(cls, device: Any = None) -> int:
        return 0

    @classmethod
    def get_default_stage_config_path(cls) -> str:
        return "vllm_omni/deploy"

    # torch.cpu has no memory-stat API: report nothing rather than let vllm hand back None.
    @classmethod
    def reset_peak_memory_stats(cls, device: Any = None) -> None:
        return None

    @classmethod
    def max_memory_allocated(cls, device: Any = None) -> int:
        return 0

    @classmethod
    def max_memory_reserved(cls, device: Any = None) -> int:
        return 0

    @classmethod
    def empty_cache(cls) -> None:
        return None

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def is_initialized(cls) -> bool:
        return True
