"""Images and videos: the input image of image tasks, and decoding and checking outputs."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
from PIL import Image, UnidentifiedImageError

from diffbench.errors import BadOutput, InputMissing

GENERATED_SIZE = 512
# Outputs are compared on a small grey thumbnail: enough to tell a different picture from
# rounding noise, small enough to store with every sample.
THUMB_SIDE = 16


@dataclass(frozen=True)
class Decoded:
    """What an output turned out to be."""

    width: int
    height: int
    num_frames: int
    sha256: str
    thumbnail: str = ""  # THUMB_SIDE² grey pixels as hex; the middle frame of a video


def thumbnail(pixels: np.ndarray) -> str:
    """`pixels` (H, W, 3) shrunk to THUMB_SIDE² grey levels, as hex."""
    grey = Image.fromarray(pixels).convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.uint8).tobytes().hex()


def distance(a: str, b: str) -> float:
    """Mean absolute difference of two thumbnails, as a fraction of the grey range (0 = same picture)."""
    left, right = (np.frombuffer(bytes.fromhex(t), dtype=np.uint8).astype(float) for t in (a, b))
    return float(np.abs(left - right).mean() / 255)


def generated_image(size: int = GENERATED_SIZE) -> bytes:
    """A deterministic, textured PNG, so image tasks need no network."""
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([x * 255 // size, y * 255 // size, ((x // 32 + y // 32) % 2) * 255], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def input_image(source: str | None, cache_dir: Path) -> bytes:
    """The input image: a URL (downloaded once into `cache_dir`), a local file, or generated."""
    if source is None:
        return generated_image()
    if not source.startswith(("http://", "https://")):
        try:
            return Path(source).expanduser().read_bytes()
        except OSError as exc:
            raise InputMissing(f"test_image_url: cannot read {source}: {exc.strerror}") from exc
    cached = cache_dir / hashlib.sha256(source.encode()).hexdigest()
    if not cached.exists():
        try:
            response = httpx.get(source, follow_redirects=True, timeout=60)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise InputMissing(f"test_image_url: cannot fetch {source}: {exc}", retryable=True) from exc
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(response.content)
    return cached.read_bytes()


def decode_image(data: bytes) -> Decoded:
    """Decode an image, refusing one that is unreadable or a single flat colour."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise BadOutput(f"image does not decode: {exc}") from exc
    if pixels.min() == pixels.max():
        raise BadOutput(f"image is one constant colour ({int(pixels.min())})")
    height, width = pixels.shape[:2]
    return Decoded(width, height, 1, hashlib.sha256(data).hexdigest(), thumbnail(pixels))


def decode_video(data: bytes) -> Decoded:
    """Decode every frame of a video container, refusing an empty or unreadable one."""
    try:
        with av.open(io.BytesIO(data)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise BadOutput(f"video does not decode: {exc}") from exc
    if not frames:
        raise BadOutput("video has no frames")
    height, width = frames[0].shape[:2]
    return Decoded(width, height, len(frames), hashlib.sha256(data).hexdigest(), thumbnail(frames[len(frames) // 2]))


def check_shape(decoded: Decoded, width: int | None, height: int | None, num_frames: int | None) -> None:
    """Raise BadOutput when the output's shape is not the one asked for (None: model default)."""
    if width and height and (decoded.width, decoded.height) != (width, height):
        raise BadOutput(f"output is {decoded.width}x{decoded.height}, asked for {width}x{height}")
    if num_frames and decoded.num_frames != num_frames:
        raise BadOutput(f"output has {decoded.num_frames} frames, asked for {num_frames}")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(pixels: np.ndarray) -> bytes:
    """An RGB image, uint8 (H, W, 3), as a PNG of unfiltered rows in stored deflate blocks.

    What sglang's server answers by default: the same pixels as a compressed PNG, written several
    times faster (Pillow filters every row even at level 0), in about three times the bytes.
    """
    height, width, channels = pixels.shape
    if channels != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 RGB pixels, got {pixels.dtype} with {channels} channels")
    rows = np.zeros((height, 1 + width * 3), np.uint8)  # each row starts with filter type 0: none
    rows[:, 1:] = pixels.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join((b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 0)), _png_chunk(b"IEND", b"")))


def encode_video(frames: np.ndarray, fps: int) -> bytes:
    """Encode uint8 frames (F, H, W, 3) as H.264 MP4."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()
