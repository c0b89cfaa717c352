"""Build tiny random-weight models that ComfyUI 0.33.0's own model detection accepts (test-only).

Run by the ComfyUI venv's python with the ComfyUI tree as the working directory (it builds with ComfyUI's own
modules, so the keys and shapes are the ones its loaders read):

    python tiny_comfy.py OUT_MODELS_DIR

It writes ComfyUI's ``models/`` layout under OUT_MODELS_DIR (603 MiB, 6-13 s on 2 cores):

* ``checkpoints/tiny-sd15.safetensors``: SD1.5-shaped UNet (one 320-channel level) + full-size CLIP-L + SD VAE.
* ``text_encoders/tiny-clip-l.safetensors``: the same CLIP-L alone, for the Wan graphs.
* ``diffusion_models/tiny-wan21-t2v.safetensors``, ``tiny-wan21-i2v.safetensors``: Wan2.1-shaped DiTs, dim 128,
  one layer, text_dim 768 so that CLIP-L conditioning fits.
* ``vae/tiny-wan21-vae.safetensors``: Wan2.1 VAE, dim 16.

Each model is seeded on its own, so the files are byte-identical from run to run and independent of build order.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

SEEDS = {"unet": 0, "clip": 1, "sd_vae": 2, "wan_t2v": 3, "wan_i2v": 4, "wan_vae": 5}
CLIP_CONFIG = "comfy/sd1_clip_config.json"  # the fixed config ComfyUI's SD1 text encoder is built from
# ComfyUI's SD VAE encoder config is fixed (comfy/sd.py); only the decoder's width is read from the weights.
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
SD_VAE_DECODER_CH = 32  # the smallest GroupNorm(32) allows
# Wan detection does not read text_dim from the weights; it merges this safetensors metadata last.
WAN_METADATA = {"config": json.dumps({"transformer": {"text_dim": 768}})}
Tensors = dict[str, torch.Tensor]


def use_cpu() -> None:
    """Put ComfyUI on the CPU before anything imports comfy.model_management (it looks for CUDA at import)."""
    sys.path.insert(0, os.getcwd())  # a script's sys.path starts at its own folder, not at the ComfyUI tree
    from comfy.cli_args import args

    args.cpu = True


def finite(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every weight a small, finite value: ComfyUI's ops allocate with torch.empty and never initialise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" or name.endswith("modulation"):
                tensor.zero_()
            elif tensor.dim() <= 1 or leaf in ("gamma", "scale"):
                tensor.fill_(1.0)  # norms: identity
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
    return module


def fp16(tensors: Tensors, prefix: str = "") -> Tensors:
    return {prefix + key: value.detach().to(torch.float16).contiguous() for key, value in tensors.items()}


def save(path: Path, tensors: Tensors, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    params = sum(tensor.numel() for tensor in tensors.values())
    print(f"{path}: {len(tensors)} tensors, {params / 1e6:.1f} M params, {path.stat().st_size / 2**20:.0f} MiB")


def sd15_unet() -> Tensors:
    """One resolution level of what supported_models.SD15 requires: 320 channels, context 768, conv projections."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                     channel_mult=[1], transformer_depth=[1], transformer_depth_output=[1, 1],
                     transformer_depth_middle=1, context_dim=768, num_heads=8, num_head_channels=-1,
                     use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False,
                     operations=comfy.ops.disable_weight_init)
    return finite(unet, SEEDS["unet"]).state_dict()


def clip_l() -> Tensors:
    """A full-size CLIP-L (text_model.* and text_projection.weight): a smaller text encoder does not load."""
    import comfy.clip_model
    import comfy.ops

    config = json.loads(Path(CLIP_CONFIG).read_text())
    clip = comfy.clip_model.CLIPTextModel(config, torch.float32, "cpu", comfy.ops.disable_weight_init)
    return finite(clip, SEEDS["clip"]).state_dict()


def sd_vae() -> Tensors:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4, decoder_ddconfig=SD_VAE | {"ch": SD_VAE_DECODER_CH})
    return finite(vae, SEEDS["sd_vae"]).state_dict()


def wan_dit(model_type: str) -> Tensors:
    """Detection reads dim, ffn_dim, layers and in_dim from the weights; heads are dim // 128, so dim is 128.

    i2v takes 36 input channels (16 noise + 4 mask + 16 image latent) and an image embedding, which is what makes
    detection say WAN21_I2V.
    """
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    in_dim = 36 if model_type == "i2v" else 16
    dit = WanModel(model_type=model_type, in_dim=in_dim, dim=128, ffn_dim=256, text_dim=768, out_dim=16,
                   num_heads=1, num_layers=1, operations=comfy.ops.disable_weight_init)
    return finite(dit, SEEDS[f"wan_{model_type}"]).state_dict()


def wan_vae() -> Tensors:
    from comfy.ldm.wan.vae import WanVAE

    vae = WanVAE(dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    return finite(vae, SEEDS["wan_vae"]).state_dict()


def build(out: Path) -> None:
    """Write every tiny model under `out`, ComfyUI's models/ layout."""
    use_cpu()
    clip = clip_l()
    # A checkpoint's CLIP has no text_projection: SD15.process_clip_state_dict would misplace it.
    clip_in_checkpoint = {key: value for key, value in clip.items() if key.startswith("text_model.")}
    checkpoint = (fp16(sd15_unet(), "model.diffusion_model.")
                  | fp16(clip_in_checkpoint, "cond_stage_model.transformer.")
                  | fp16(sd_vae(), "first_stage_model."))
    save(out / "checkpoints" / "tiny-sd15.safetensors", checkpoint)
    save(out / "text_encoders" / "tiny-clip-l.safetensors", fp16(clip))
    for model_type in ("t2v", "i2v"):
        save(out / "diffusion_models" / f"tiny-wan21-{model_type}.safetensors", fp16(wan_dit(model_type)), WAN_METADATA)
    save(out / "vae" / "tiny-wan21-vae.safetensors", fp16(wan_vae()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tiny_comfy.py OUT_MODELS_DIR  (cwd: the ComfyUI tree)")
    build(Path(sys.argv[1]).absolute())
