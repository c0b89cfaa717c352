"""The command line's own surface: version, and names that select nothing."""

from __future__ import annotations

import pytest

import diffbench
from diffbench.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out == f"diffbench {diffbench.__version__}\n"


@pytest.mark.parametrize("command", ["plan", "run"])
def test_an_empty_selection_is_refused_the_same_way_by_plan_and_run(command: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`--cases ''` selected nothing in plan and everything in run (issue: runs that end cleanly)."""
    with pytest.raises(SystemExit) as caught:
        main([command, "--config", "nightly.yaml", "--cases", " , "])
    assert caught.value.code == 2
    assert "argument --cases: give at least one name; leave the option out for all" in capsys.readouterr().err
