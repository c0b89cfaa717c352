"""The error tree: unique classes, and the retry flags the flow relies on."""

from __future__ import annotations

import inspect

from diffbench import errors


def all_errors() -> list[type[errors.DiffbenchError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.DiffbenchError)]


def test_error_classes_are_unique_and_drawn_in_the_docstring() -> None:
    classes = [c.error_class for c in all_errors() if c is not errors.ServerError]
    assert len(classes) == len(set(classes))
    for error in all_errors():
        assert error.__name__ in errors.__doc__


def test_what_retrying_can_help() -> None:
    assert errors.ServerExited.retryable and errors.NotReady.retryable and errors.RequestFailed.retryable
    assert not errors.OutOfMemory.retryable and not errors.ConfigError.retryable and not errors.BadOutput.retryable


def test_config_error_is_a_value_error_with_its_problems() -> None:
    error = errors.ConfigError(["a.yaml: x: bad", "a.yaml: y: bad"])
    assert isinstance(error, ValueError) and str(error) == "a.yaml: x: bad\na.yaml: y: bad"
