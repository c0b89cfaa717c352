"""Importing sglang's history: all three generations, once, never mixed with our series."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffbench import dashboard
from diffbench.cli import main
from diffbench.errors import ConfigError
from diffbench.results import METHODOLOGY
from diffbench.sglang_import import error_class_of, import_file, parse
from diffbench.storage import store

from conftest import FIXTURES

RESULT_FILES = sorted((FIXTURES / "sglang" / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name[:30])
def test_every_generation_parses(path: Path) -> None:
    document = json.loads(path.read_text())
    run, results = parse(path)
    assert run.trigger == "schedule" and run.source == "sglang-import"
    assert len(results) == len(document["results"])
    for row, result in zip(document["results"], results, strict=True):
        assert (result.case_id, result.framework) == (row["case_id"], row["framework"])
        if row.get("error"):
            assert result.status == "failed" and result.error_message == row["error"]
        else:
            assert result.client.median == pytest.approx(row["latency_s"], abs=0.01)
            if row.get("server_latency_s") is not None:
                assert result.server.median == pytest.approx(row["server_latency_s"], abs=0.01)


def test_methodologies_stay_apart() -> None:
    methods = {parse(path)[1][0].methodology for path in RESULT_FILES}
    assert methods == {"sglang-v0-single-request", "sglang-v1-client-median", "sglang-client-e2e-v1"}
    assert METHODOLOGY not in methods


def test_their_errors_get_classes() -> None:
    assert error_class_of("Server did not write performance data to /x.json") == "perf_dump_missing"
    assert error_class_of("Video generation failed: {...}") == "http_error"
    assert error_class_of("torch.OutOfMemoryError: CUDA out of memory") == "oom"


def test_import_twice_adds_nothing_and_every_file_renders(database, tmp_path: Path) -> None:
    assert all(import_file(database, path) for path in RESULT_FILES)
    before = store.counts(database)
    assert not any(import_file(database, path) for path in RESULT_FILES)
    assert store.counts(database) == before
    frame = store.results_frame(database)
    for path in RESULT_FILES:
        run, results = parse(path)
        page = dashboard.build(frame, run.id)
        page.write(tmp_path / run.id)
        for result in results:
            assert f"| {result.case_id} |" in page.markdown
            assert (tmp_path / run.id / f"{result.case_id}.png").read_bytes()[:4] == b"\x89PNG"
        for result in filter(lambda r: r.status == "failed", results):
            assert f"**{result.error_class}**" in page.markdown


def test_not_a_result_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"cases": []}')
    with pytest.raises(ConfigError, match="x.json: not an sglang result file"):
        parse(path)


@pytest.mark.parametrize(("latency", "problem"), [
    ('"fast"', "x.json: case 'flux': latency_s: must be seconds >= 0 (got 'fast')"),
    ("-1.5", "x.json: case 'flux': latency_s: must be seconds >= 0 (got -1.5)"),
])
def test_a_bad_latency_is_one_line_and_nothing_is_stored(database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         latency: str, problem: str) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"timestamp": "2026-04-01T00:00:00", "results": [{"case_id": "flux", "framework": "sglang", '
                    f'"latency_s": {latency}, "error": null}}]}}')
    url = database.url.render_as_string(hide_password=False)
    assert main(["import-sglang", str(path), "--database-url", url]) == 2
    assert capsys.readouterr().err == f"invalid configuration:\n  {problem}\n"
    assert store.counts(database)["runs"] == 0


@pytest.mark.parametrize("name", ["missing.json", "."])
def test_a_missing_file_or_a_folder_is_one_line(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse(tmp_path / name)
