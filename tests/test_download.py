"""Model downloads: local paths as they are, clear and fast failures, no token in messages."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from diffbench.download import LOCAL_REVISION, check_pipeline, download_model
from diffbench.errors import DownloadError


def test_local_path_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    result = download_model(str(tmp_path), None, None, None)
    assert (result.path, result.revision) == (str(tmp_path), LOCAL_REVISION)


@pytest.mark.parametrize(("index", "problem"), [
    (None, "not a diffusers pipeline folder (no model_index.json)"),
    ('{"_class_name": ', "model_index.json does not read as JSON"),
    ('{"transformer": ["diffusers", "X"]}', "model_index.json names no pipeline (_class_name)"),
])
def test_a_folder_that_is_no_pipeline_fails_once(tmp_path: Path, index: str | None, problem: str) -> None:
    if index is not None:
        (tmp_path / "model_index.json").write_text(index)
    with pytest.raises(DownloadError, match=re.escape(problem)) as caught:
        check_pipeline(Path(download_model(str(tmp_path), None, None, None).path), str(tmp_path))
    assert not caught.value.retryable


def test_missing_local_model_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as caught:
        download_model(str(tmp_path / "nope"), None, None, "hf_secret_token_value")
    assert caught.value.error_class == "download" and not caught.value.retryable
    assert "no such directory" in str(caught.value)


def test_unreachable_hub_fails_in_seconds_without_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        download_model("org/missing-model", "main", tmp_path, "hf_secret_token_value")
    assert time.monotonic() - started < 30
    assert caught.value.error_class == "download" and caught.value.retryable
    assert "org/missing-model@main" in str(caught.value)
    assert "hf_secret_token_value" not in str(caught.value)
