"""TEST-ONLY CPU attention backend for vllm-omni 0.30.0's diffusion models.

``AttentionImpl.forward`` (vllm_omni/diffusion/attention/backends/abstract.py) dispatches only to
hip/cuda/npu/xpu/musa and raises ``NotImplementedError: No forward implementation for platform`` on CPU.
The stock SDPA body that the CUDA path uses is plain torch and runs on CPU as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm_omni.diffusion.attention.backends.sdpa import SDPABackend, SDPAImpl


class CpuSDPAImpl(SDPAImpl):
    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_metadata: Any = None
    ) -> torch.Tensor:
        # Same call as SDPAImpl.forward_cuda.
        return self._forward_impl(query, key, value, attn_metadata, mask_mode="broadcast_k")


class CpuSDPABackend(SDPABackend):
    @staticmethod
    def get_impl_cls() -> type[CpuSDPAImpl]:
        return CpuSDPAImpl
