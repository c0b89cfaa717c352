"""Which failed steps are tried again (tasks/retry.py)."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from diffbench.errors import CaseTimeout, NotReady, OutOfMemory, RequestFailed, ServerArgsRejected, ServerExited
from tasks.retry import is_retryable, is_retryable_request


@pytest.mark.parametrize(("error", "retried"), [
    (NotReady("not ready"), True),
    (RequestFailed("POST: HTTP 503", status_code=503), True),
    (RequestFailed("POST: HTTP 400", status_code=400), False),
    (ServerArgsRejected("refused its arguments"), False),
    (OutOfMemory("oom"), False),
    (KeyError("a bug"), False),  # not raised on purpose: fails once, with its traceback
])
def test_a_step_is_retried_only_when_trying_again_can_help(error: BaseException, retried: bool) -> None:
    assert is_retryable(None, None, Failed(data=error)) == retried


def test_a_request_to_a_dead_server_waits_for_a_new_launch() -> None:
    assert not is_retryable_request(None, None, Failed(data=ServerExited("exited with code -9")))
    assert not is_retryable_request(None, None, Failed(data=CaseTimeout("budget used up")))
    assert is_retryable_request(None, None, Failed(data=RequestFailed("connection reset")))
