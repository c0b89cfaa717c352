"""Fetching a model before its server starts, so the download is timed on its own."""

from __future__ import annotations

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


def download_model(model: str, revision: str | None, cache_dir: Path | None, token: str | None) -> Download:
    """A local path as is, or a hub snapshot at `revision`; errors say whether retrying helps."""
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
