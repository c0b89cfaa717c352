"""`diffbench demo`, run as a user runs it: the whole flow on the embedded defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from diffbench.storage import store


def test_demo_runs_the_flow_and_renders_the_dashboard(tmp_path: Path) -> None:
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
    engine = store.open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    assert store.counts(engine) == {"runs": 1, "results": 4, "samples": 12, "stage_timings": 36}
    engine.dispose()
    assert not list(tmp_path.rglob("server.pid")), "every server was stopped"
