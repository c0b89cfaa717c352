"""Random-weight FLUX and Wan pipelines, built offline, small enough for a CPU test.

Tokenizers are built from a character vocabulary here, since no hub can be reached; the
pipelines load with `DiffusionPipeline.from_pretrained(DIR)` like any downloaded model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

Arch = Literal["flux", "wan"]
ARCHS: tuple[Arch, ...] = ("flux", "wan")
_CHARS = [chr(code) for code in range(33, 127)]


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over printable ASCII, built offline."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        vocab |= {char + suffix: len(vocab) + i for i, char in enumerate(_CHARS)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> T5Tokenizer:
    """A T5 (sentencepiece-style unigram) tokenizer over printable ASCII, built offline."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)] + [(char, -1.0) for char in _CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _t5_config(config_class: type[T5Config], vocab_size: int) -> T5Config:
    return config_class(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def tiny_flux() -> FluxPipeline:
    """FLUX.1 architecture: CLIP + T5 text encoders, an MMDiT transformer, an 8x VAE."""
    clip, t5 = clip_tokenizer(), t5_tokenizer()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=AutoencoderKL(
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
        ),
        text_encoder=CLIPTextModel(CLIPTextConfig(
            vocab_size=len(clip), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )),
        tokenizer=clip,
        text_encoder_2=T5EncoderModel(_t5_config(T5Config, len(t5))),
        tokenizer_2=t5,
        transformer=FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        ),
    )


def tiny_wan() -> WanPipeline:
    """Wan 2.x text-to-video architecture: UMT5 text encoder, a 3D DiT, the causal Wan VAE."""
    tokenizer = t5_tokenizer()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(_t5_config(UMT5Config, len(tokenizer))),
        vae=AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True]),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        ),
    )


def build(arch: Arch, out: Path, seed: int = 0) -> Path:
    """Save a tiny pipeline of `arch` to `out`; the same seed gives the same weights."""
    torch.manual_seed(seed)
    pipeline = {"flux": tiny_flux, "wan": tiny_wan}[arch]()
    pipeline.save_pretrained(out)
    return out
