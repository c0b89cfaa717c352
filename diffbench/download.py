"""Fetching a model before its server starts, so the download is timed on its own."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from diffbench.errors import DownloadError

LOCAL_REVISION = "local"


@dataclass(frozen=True)
class Download:
    """Where a model is on disk, which revision it is, and how long getting it took."""

    path: str
    revision: str
    seconds: float


def is_local(model: str) -> bool:
    return model.startswith(("/", "~"))


def check_pipeline(path: Path, model: str) -> None:
    """Refuse a folder no diffusers-based engine can load: no `model_index.json`, or one naming no pipeline class.

    Caught here, it fails the case once; found by the server, it would cost a launch per retry.
    """
    index = path / "model_index.json"
    try:
        document = json.loads(index.read_text())
    except FileNotFoundError:
        raise DownloadError(f"model {model}: not a diffusers pipeline folder (no model_index.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DownloadError(f"model {model}: model_index.json does not read as JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("_class_name"), str):
        raise DownloadError(f"model {model}: model_index.json names no pipeline (_class_name)")


def download_model(model: str, revision: str | None, cache_dir: Path | None, token: str | None) -> Download:
    """A local path as is, or a hub snapshot at `revision`; errors say whether retrying helps.

    Whether an engine can serve a case from it is the engine's check (`Engine.check_model`), per case.
    """
    started = time.monotonic()
    if is_local(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise DownloadError(f"model {model}: no such directory")
        return Download(str(path), LOCAL_REVISION, time.monotonic() - started)
    try:
        folder = snapshot_download(repo_id=model, revision=revision, cache_dir=cache_dir, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as exc:
        # The message names the repo and revision; huggingface_hub never puts the token in it.
        raise DownloadError(f"model {model}@{revision or 'main'}: {type(exc).__name__}: {exc}") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise DownloadError(f"model {model}@{revision or 'main'}: {type(exc).__name__}: {exc}", retryable=True) from exc
    # A snapshot folder is named after the commit it holds.
    return Download(folder, Path(folder).name, time.monotonic() - started)
