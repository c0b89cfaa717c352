"""Case bookkeeping: deadlines and what a failed case still keeps."""

from __future__ import annotations

import pytest

from diffbench.download import Download
from diffbench.errors import CaseTimeout, NotReady
from diffbench.measure import CaseRecord, Deadline

from conftest import make_pair
from factories import make_sample


def test_deadline_names_the_step_that_ran_out() -> None:
    assert Deadline.for_case(make_pair()).remaining("launch") > 239 * 60
    with pytest.raises(CaseTimeout, match="240 min used up before request 2") as caught:
        Deadline(0.0, 240).remaining("request 2")
    assert caught.value.error_class == "case_timeout"


def test_failed_case_keeps_what_was_measured() -> None:
    record = CaseRecord(make_pair(), "NVIDIA H100", download=Download("/m", "abc123", 12.5))
    record.samples = [make_sample(1.0), make_sample(1.2)]
    record.error = NotReady("sglang server not ready after 600 s", log_tail="loading shard 3/8")
    result = record.result()
    assert (result.status, result.error_class, result.model_revision, result.download_s) == (
        "failed", "timeout", "abc123", 12.5)
    assert result.error_message == "NotReady: sglang server not ready after 600 s"
    assert result.log_tail == "loading shard 3/8" and len(result.samples) == 2
    assert result.client.median == pytest.approx(1.1)


def test_unexpected_errors_are_internal() -> None:
    record = CaseRecord(make_pair(), "cpu")
    record.error = KeyError("x")
    assert (record.result().error_class, record.result().status) == ("internal", "failed")
    assert CaseRecord(make_pair(), "cpu").result().status == "ok"
