"""Input images and output checks."""

from __future__ import annotations

import functools
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffbench import media
from diffbench.errors import BadOutput, InputMissing


def test_generated_image_is_deterministic_and_textured() -> None:
    data = media.generated_image(64)
    assert data == media.generated_image(64)
    assert (media.decode_image(data).width, media.decode_image(data).height) == (64, 64)


def test_local_image_is_read(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(media.generated_image(32))
    assert media.input_image(str(tmp_path / "cat.png"), tmp_path / "cache") == media.generated_image(32)
    with pytest.raises(InputMissing, match="test_image_url: cannot read") as missing:
        media.input_image(str(tmp_path / "dog.png"), tmp_path / "cache")
    assert not missing.value.retryable  # a missing file stays missing


def test_url_is_fetched_once_and_cached(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "cat.png").write_bytes(media.generated_image(16))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/cat.png"
    try:
        first = media.input_image(url, tmp_path / "cache")
        with pytest.raises(InputMissing, match="cannot fetch") as missing:
            media.input_image(url.replace("cat", "dog"), tmp_path / "cache")
        assert missing.value.retryable  # a server may answer next time
    finally:
        server.shutdown()
        server.server_close()
    assert first == media.generated_image(16)
    assert media.input_image(url, tmp_path / "cache") == first  # the server is gone: from the cache


def test_video_round_trip_and_shape_checks() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 48, 3), dtype=np.uint8)
    decoded = media.decode_video(media.encode_video(frames, 8))
    assert (decoded.width, decoded.height, decoded.num_frames) == (48, 32, 9)
    media.check_shape(decoded, 48, 32, 9)
    media.check_shape(decoded, None, None, None)
    with pytest.raises(BadOutput, match="output is 48x32, asked for 64x32"):
        media.check_shape(decoded, 64, 32, 9)
    with pytest.raises(BadOutput, match="output has 9 frames, asked for 17"):
        media.check_shape(decoded, 48, 32, 17)
    with pytest.raises(BadOutput, match="video does not decode"):
        media.decode_video(b"not a video")


def test_png_keeps_every_pixel_and_reads_like_any_png() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    encoded = media.encode_png(pixels)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), pixels)
    decoded = media.decode_image(encoded)
    assert (decoded.width, decoded.height, decoded.num_frames) == (64, 48, 1)


def test_png_takes_only_8_bit_rgb() -> None:
    with pytest.raises(ValueError, match="uint8 RGB pixels, got uint8 with 4 channels"):
        media.encode_png(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="got float32"):
        media.encode_png(np.zeros((4, 4, 3), np.float32))
