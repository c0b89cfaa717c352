"""`diffbench demo`, run as a user runs it: the whole flow on the embedded defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from diffbench.storage import store


def test_demo_runs_the_flow_and_shows_sglangs_history_beside_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "diffbench", "demo", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| case | diffusers-fp32 | diffusers-bf16 | diffusers-bf16 / diffusers-fp32 |" in out
    for case_id in ("tiny_flux_t2i_64", "tiny_wan_t2v_64"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {case_id} |"))
        assert row.count(" s [") == 2 and row.rstrip(" |").endswith("×")
        assert (tmp_path / "dashboard" / f"{case_id}.png").exists()
    assert f"dashboard: {tmp_path / 'dashboard' / 'index.md'}" in out
    # sglang's published history beside the demo's run: trends, breaks and detected changes on a page of its own.
    history = tmp_path / "dashboard" / "sglang-history" / "index.md"
    assert f"its dashboard: {history}" in out and "(103 nights, 103 imported now)" in out
    page = history.read_text()
    assert "| 2026-06-2" in page.split("## Changes", 1)[1].split("##", 1)[0], "changes of its last nights"
    assert "flux1_dev_t2i_1024" in page and (history.parent / "flux1_dev_t2i_1024.png").exists()
    assert f"results: sqlite:///{tmp_path / 'diffbench.db'}" in out
    engine = store.open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    counts = store.counts(engine)
    engine.dispose()
    assert counts["runs"] > 100 and counts["results"] > 4  # a few published files repeat a run
    assert not list(tmp_path.rglob("server.pid")), "every server was stopped"
