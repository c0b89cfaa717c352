"""Step 1: fetch the model into the shared cache, timed on its own."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE

from diffbench import download
from diffbench.cases import Pair
from diffbench.settings import Settings
from tasks.retry import RETRIES, is_retryable


def hf_token(settings: Settings) -> str | None:
    """The Hugging Face token from the environment, else from a Prefect Secret block."""
    if settings.hf_token is not None:
        return settings.hf_token.get_secret_value()
    if settings.hf_token_block:
        return Secret.load(settings.hf_token_block).get()
    return None


@task(task_run_name="{pair.case.id}/{pair.framework}: download", cache_policy=NO_CACHE,
      retry_condition_fn=is_retryable, **RETRIES)
def download_model(pair: Pair, settings: Settings) -> download.Download:
    result = download.download_model(pair.model, pair.case.revision, settings.model_cache, hf_token(settings))
    get_run_logger().info("%s at revision %s in %.1f s", pair.model, result.revision, result.seconds)
    return result
