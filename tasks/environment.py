"""Step 0: the engine's own environment, built from its pip spec the first time it is asked for."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench.cases import Pair
from diffbench.engines import environments
from diffbench.engines.environments import EngineEnvironment
from diffbench.settings import Settings


@task(task_run_name="{pair.framework}: environment", cache_policy=NO_CACHE)
def prepare_environment(pair: Pair, settings: Settings) -> EngineEnvironment:
    environment = environments.prepare(pair.options, settings.engine_envs_dir)
    if environment.built_s:
        get_run_logger().info("built %s in %.0f s", environment.python, environment.built_s)
    return environment
