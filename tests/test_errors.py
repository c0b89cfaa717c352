"""The error tree: unique classes, and the retry flags the flow relies on."""

from __future__ import annotations

import inspect

import pytest

from diffbench import errors


def all_errors() -> list[type[errors.DiffbenchError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.DiffbenchError)]


def test_error_classes_are_unique_and_drawn_in_the_docstring() -> None:
    classes = [c.error_class for c in all_errors() if c is not errors.ServerError]
    assert len(classes) == len(set(classes))
    for error in all_errors():
        assert error.__name__ in errors.__doc__


def test_what_retrying_can_help() -> None:
    assert errors.ServerExited.retryable and errors.NotReady.retryable
    assert not errors.OutOfMemory.retryable and not errors.ConfigError.retryable and not errors.BadOutput.retryable
    assert not errors.ServerArgsRejected.retryable and not errors.EnvironmentFailed.retryable


@pytest.mark.parametrize(("status", "retryable"), [(None, True), (500, True), (503, True), (408, True), (429, True),
                                                    (400, False), (404, False), (422, False)])
def test_a_request_the_server_refused_is_not_sent_again(status: int | None, retryable: bool) -> None:
    assert errors.RequestFailed("POST /v1/images/generations", status_code=status).retryable == retryable
    assert errors.RequestTimeout("no answer").retryable


def test_config_error_is_a_value_error_with_its_problems() -> None:
    error = errors.ConfigError(["a.yaml: x: bad", "a.yaml: y: bad"])
    assert isinstance(error, ValueError) and str(error) == "a.yaml: x: bad\na.yaml: y: bad"
