"""When a failed step is worth another try, and how long to wait before it."""

from __future__ import annotations

from typing import Any

from prefect.states import State

from diffbench.errors import CaseTimeout, DiffbenchError, ServerError
from diffbench.launcher import stop_reason
from diffbench.settings import Settings


def _error(state: State) -> BaseException | None:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state's own exception, inspected not handled
        return exc
    return None


def is_retryable(_task: Any, _task_run: Any, state: State) -> bool:
    """Retry what may pass (a crash at start, a lost connection), not what cannot (OOM, bad config, a 4xx),
    nor anything once the run is being stopped.

    An exception diffbench did not raise on purpose is a bug: it fails once, with its traceback.
    """
    error = _error(state)
    return isinstance(error, DiffbenchError) and error.retryable and stop_reason() is None


def is_retryable_request(task: Any, task_run: Any, state: State) -> bool:
    """Requests are retried only while their server lives; a dead server needs a new launch."""
    error = _error(state)
    return not isinstance(error, ServerError | CaseTimeout) and is_retryable(task, task_run, state)


# Read once, at the edge: the delays are a deployment setting (DIFFBENCH_RETRY_DELAYS_S).
RETRY_DELAYS_S = Settings().retry_delays_s
RETRIES = {"retries": len(RETRY_DELAYS_S), "retry_delay_seconds": RETRY_DELAYS_S, "retry_jitter_factor": 0.2}
