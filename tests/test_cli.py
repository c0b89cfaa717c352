"""The command line's own surface: version, and names that select nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import diffbench
from diffbench.cli import main, parser

from conftest import FIXTURES

SGLANG_RESULT = sorted((FIXTURES / "sglang" / "results").glob("*.json"))[0]


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


def test_every_option_has_help_and_the_exit_codes_are_documented() -> None:
    root = parser()
    assert "130  stopped by Ctrl-C" in root.format_help() and "143  stopped by SIGTERM" in root.format_help()
    [commands] = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)]
    undocumented = [f"{name} {action.dest}" for name, sub in commands.choices.items() for action in sub._actions
                    if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert undocumented == []


def test_a_dashboard_folder_that_cannot_be_written_is_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    assert main(["import-sglang", str(SGLANG_RESULT), "--database-url", url]) == 0
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main(["dashboard", "--out", str(tmp_path / "taken" / "page"), "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write the dashboard to {tmp_path / 'taken' / 'page'}: Not a directory\n"
