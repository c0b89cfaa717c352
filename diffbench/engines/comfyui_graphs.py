"""ComfyUI's API-format graphs for a case, built as data from its options: one graph per task and model family.

A graph maps node ids to `{"class_type", "inputs"}`; a link is `[node_id, output_index]`. The
case's values (prompt, size, steps, guidance, seed, frames, fps) are set on the nodes that read
them, never pasted into JSON text, so any prompt is safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import AliasChoices, Field

from diffbench.cases import Case, FrameworkOptions

Graph = dict[str, dict[str, Any]]

# Where a graph's model files live under ComfyUI's models folder, and the option naming them, by loader input.
MODEL_FOLDERS = {"ckpt_name": ("checkpoints", "checkpoint"), "unet_name": ("diffusion_models", "diffusion_model"),
                 "clip_name": ("text_encoders", "text_encoder"), "vae_name": ("vae", "vae")}
# Loaders keep their cache across requests (a model is loaded once); every other node gets the nonce.
LOADERS = frozenset({"CheckpointLoaderSimple", "UNETLoader", "CLIPLoader", "VAELoader"})
# An input ComfyUI's validation lets through and its cache key includes: a fresh one makes the node run again.
NONCE_INPUT = "diffbench_nonce"
SAVE_NODE = "save"
# The nodes' own defaults, for what a case leaves unset (ComfyUI has no per-model default).
NODE_DEFAULTS = {"steps": 20, "cfg": 8.0, "seed": 0, "width": 512, "height": 512, "length": 25, "fps": 16}


class ComfyUIOptions(FrameworkOptions):
    """Where ComfyUI's source is, and the model files of the case's graph (names under its models folder).

    The case's model (or this framework's `model`) is a ComfyUI models folder: `checkpoints/`,
    `diffusion_models/`, `text_encoders/`, `vae/`.
    """

    build_fields: ClassVar[frozenset[str]] = frozenset({"comfy_root"})

    comfy_root: Path = Field(description="ComfyUI's source tree, the folder holding main.py.")
    python: Path | None = Field(None, validation_alias=AliasChoices("python", "python_bin"),
                                description="The Python that runs main.py (sglang's key: python_bin).")
    checkpoint: str | None = Field(None, description="Text-to-image: a checkpoint with model, text encoder and VAE.")
    diffusion_model: str | None = Field(None, description="Video: the diffusion model (UNETLoader).")
    text_encoder: str | None = Field(None, description="Video: the text encoder (CLIPLoader).")
    text_encoder_type: str = Field("wan", description="CLIPLoader's type for the text encoder.")
    vae: str | None = Field(None, description="Video: the VAE (VAELoader).")
    sampler: str = Field("euler", description="KSampler's sampler_name.")
    scheduler: str | None = Field(None, description="KSampler scheduler; default normal for images, simple for video.")
    workflow_vars: dict[str, Any] | None = Field(None, description="sglang's variables for its own graph files.")


def _sampler(case: Case, options: ComfyUIOptions, model: list[Any], positive: list[Any], negative: list[Any],
             latent: list[Any], scheduler: str) -> dict[str, Any]:
    return {"class_type": "KSampler", "inputs": {
        "model": model, "positive": positive, "negative": negative, "latent_image": latent,
        "seed": case.seed if case.seed is not None else NODE_DEFAULTS["seed"],
        "steps": case.num_inference_steps or NODE_DEFAULTS["steps"],
        "cfg": case.guidance_scale if case.guidance_scale is not None else NODE_DEFAULTS["cfg"],
        "sampler_name": options.sampler, "scheduler": options.scheduler or scheduler, "denoise": 1.0,
    }}


def _text(case: Case, clip: list[Any]) -> Graph:
    return {
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": case.prompt, "clip": clip}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": case.negative_prompt or "", "clip": clip}},
    }


def _size(case: Case) -> dict[str, int]:
    return {"width": case.width or NODE_DEFAULTS["width"], "height": case.height or NODE_DEFAULTS["height"],
            "batch_size": 1}


def text_to_image(case: Case, options: ComfyUIOptions, prefix: str) -> Graph:
    """A checkpoint's model, text encoder and VAE (SD1.5, SDXL): latent, sampler, decode, PNG."""
    return {
        "model": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": options.checkpoint}},
        **_text(case, ["model", 1]),
        "latent": {"class_type": "EmptyLatentImage", "inputs": _size(case)},
        "sampler": _sampler(case, options, ["model", 0], ["positive", 0], ["negative", 0], ["latent", 0], "normal"),
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["model", 2]}},
        SAVE_NODE: {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def video(case: Case, options: ComfyUIOptions, prefix: str, image_name: str | None) -> Graph:
    """A diffusion model with its own text encoder and VAE (Wan): text- or image-to-video, saved as MP4.

    With `image_name` (a file uploaded to ComfyUI's input folder) the first frame is conditioned on it.
    """
    frames = case.num_frames or NODE_DEFAULTS["length"]
    graph: Graph = {
        "unet": {"class_type": "UNETLoader",
                 "inputs": {"unet_name": options.diffusion_model, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": options.text_encoder,
                                                        "type": options.text_encoder_type}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": options.vae}},
        **_text(case, ["clip", 0]),
    }
    if image_name is None:
        graph["latent"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": _size(case) | {"length": frames}}
        conditioning = (["positive", 0], ["negative", 0], ["latent", 0])
    else:
        graph["image"] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
        graph["latent"] = {"class_type": "WanImageToVideo", "inputs": _size(case) | {
            "length": frames, "positive": ["positive", 0], "negative": ["negative", 0], "vae": ["vae", 0],
            "start_image": ["image", 0]}}
        conditioning = (["latent", 0], ["latent", 1], ["latent", 2])
    graph["sampler"] = _sampler(case, options, ["unet", 0], *conditioning, "simple")
    graph["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}}
    graph["video"] = {"class_type": "CreateVideo", "inputs": {"images": ["decode", 0],
                                                              "fps": float(case.fps or NODE_DEFAULTS["fps"])}}
    graph[SAVE_NODE] = {"class_type": "SaveVideo", "inputs": {"video": ["video", 0], "filename_prefix": prefix,
                                                              "format": "mp4", "codec": "h264"}}
    return graph


def with_nonce(graph: Graph, nonce: str) -> Graph:
    """`graph` with `nonce` on every node but the model loaders: it runs again, the loaded models stay."""
    return {node_id: node if node["class_type"] in LOADERS else
            {**node, "inputs": {**node["inputs"], NONCE_INPUT: nonce}} for node_id, node in graph.items()}


def model_files(graph: Graph) -> list[tuple[str, str, str]]:
    """(models subfolder, option, file name) of each file `graph`'s loaders read."""
    return [(*MODEL_FOLDERS[name], value) for node in graph.values() if node["class_type"] in LOADERS
            for name, value in node["inputs"].items() if name in MODEL_FOLDERS]
