"""FLUX.1-dev and Wan2.1-T2V-1.3B architectures at full size with random weights, built on a GPU.

For measuring the reference engine at real shapes without a model hub: the layer sizes are the
published models' own, the weights random (bfloat16), the tokenizers the offline ones of `tiny_models`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

from diffbench.reference.tiny_models import clip_tokenizer, t5_tokenizer

# T5-XXL, FLUX's second text encoder and (as UMT5, with a larger vocabulary) Wan's only one.
T5_XXL = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "feed_forward_proj": "gated-gelu", "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}


def flux1_dev() -> FluxPipeline:
    """FLUX.1-dev: 12B MMDiT, T5-XXL, CLIP-L, the 16-channel VAE."""
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                  max_shift=1.15),
        vae=AutoencoderKL(
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
        ),
        text_encoder=CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, projection_dim=768, bos_token_id=0, eos_token_id=1, pad_token_id=1)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=T5EncoderModel(T5Config(vocab_size=32128, **T5_XXL)),
        tokenizer_2=t5_tokenizer(),
        transformer=FluxTransformer2DModel(guidance_embeds=True),
    )


def wan21_t2v_1_3b() -> WanPipeline:
    """Wan2.1-T2V-1.3B: 30-layer 3D DiT (1536 wide), UMT5-XXL, the causal Wan VAE."""
    return WanPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=UMT5EncoderModel(UMT5Config(vocab_size=256384, **T5_XXL)),
        vae=AutoencoderKLWan(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                             temperal_downsample=[False, True, True]),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        ),
    )


BUILDERS: dict[str, Any] = {"flux1-dev": flux1_dev, "wan2.1-t2v-1.3b": wan21_t2v_1_3b}


def build(arch: str, out: Path) -> Path:
    """Initialise `arch` on the GPU in bfloat16 and save it to `out` as a diffusers pipeline."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        try:
            pipeline = BUILDERS[arch]()
        finally:
            torch.set_default_dtype(torch.float32)
    pipeline.save_pretrained(out)
    del pipeline
    torch.cuda.empty_cache()
    return out
